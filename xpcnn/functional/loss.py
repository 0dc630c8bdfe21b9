"""Softmax cross-entropy fused with its gradient: log-softmax + NLL, batch mean (PyTorch's
``F.cross_entropy``). Fusing is both stable (log-sum-exp) and cheap: the gradient of the
mean loss with respect to the logits is ``(softmax - one_hot) / N``."""

from __future__ import annotations

from ..backend import device_of
from ..errors import DataError, LabelError
from ._checks import check_float, check_ndim, check_nonempty, namespace, positive_int
from .activation import log_softmax


def check_labels(xp, labels, n: int, num_classes: int):
    """Labels must be an integer (N,) array with values in [0, num_classes)."""
    if not hasattr(labels, "shape") or tuple(labels.shape) != (n,):
        got = f"shape {tuple(labels.shape)}" if hasattr(labels, "shape") else type(labels).__name__
        raise LabelError(f"labels: expected an integer array of shape ({n},) to match the batch, got {got}")
    if not xp.isdtype(labels.dtype, "integral"):
        raise LabelError(f"labels: expected an integer dtype (class indices), got {labels.dtype}")
    # One reduction (one host sync on a GPU) in the common, valid case; min/max only for the message.
    if n and bool(xp.any((labels < 0) | (labels >= num_classes))):
        low, high = int(xp.min(labels)), int(xp.max(labels))
        raise LabelError(f"labels: expected values in [0, {num_classes - 1}], got values from {low} to {high}")


def one_hot(labels, num_classes: int, dtype):
    """(N,) integer labels -> (N, num_classes) of 0/1 in ``dtype``."""
    xp = namespace(labels=labels)
    num_classes = positive_int(num_classes, "num_classes")
    check_ndim(labels, 1, "labels", "(N,) of class indices")
    if not xp.isdtype(labels.dtype, "integral"):
        raise LabelError(f"labels: expected an integer dtype (class indices), got {labels.dtype}")
    classes = xp.arange(num_classes, dtype=labels.dtype, device=device_of(labels))
    return xp.astype(labels[:, None] == classes, dtype)


def cross_entropy_with_grad(logits, labels):
    """(loss, grad_logits): mean over the batch of -log softmax(logits)[label], and its gradient.

    logits (N, K) float, labels (N,) integer in [0, K). loss is a 0-d array of logits' dtype.
    """
    xp = namespace(logits=logits, labels=labels)
    check_ndim(logits, 2, "logits", "(N, num_classes)")
    check_nonempty(logits, "logits", "(N, num_classes)", axes=(1,))
    check_float(xp, "logits", logits)
    n, k = logits.shape
    if n == 0:
        raise DataError("logits: the batch is empty (N = 0); the mean loss of no samples is undefined")
    check_labels(xp, labels, n, k)
    log_p = log_softmax(logits, axis=1)
    classes = xp.arange(k, dtype=labels.dtype, device=device_of(labels))
    target = xp.astype(labels[:, None] == classes, logits.dtype)
    loss = -xp.sum(log_p * target) / n
    grad = (xp.exp(log_p) - target) / n
    return loss, grad


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of logits (N, K) against integer labels (N,); a 0-d array."""
    return cross_entropy_with_grad(logits, labels)[0]


def cross_entropy_backward(logits, labels):
    """grad_logits (N, K) of :func:`cross_entropy`: (softmax(logits) - one_hot(labels)) / N."""
    return cross_entropy_with_grad(logits, labels)[1]
