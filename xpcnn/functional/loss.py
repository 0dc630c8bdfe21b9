"""Softmax cross-entropy fused with its gradient: log-softmax + NLL, batch mean (PyTorch's
``F.cross_entropy``, with its label smoothing and ignore_index). Fusing is both stable
(log-sum-exp) and cheap: the gradient of the mean loss with respect to the logits is
``(softmax - target) / N``."""

from __future__ import annotations

from .._validate import check_float, check_ndim, check_nonempty, is_integral, namespace, positive_int
from ..backend import constant, device_of
from ..errors import ArgumentError, DataError, LabelError
from .activation import log_softmax, zero_like


def check_label_layout(xp, labels, n: int, name: str = "labels"):
    """Labels (the argument ``name``) must be an integer (N,) array (no host read)."""
    if not hasattr(labels, "shape") or tuple(labels.shape) != (n,):
        got = f"shape {tuple(labels.shape)}" if hasattr(labels, "shape") else type(labels).__name__
        raise LabelError(f"{name}: expected an integer array of shape ({n},) to match the batch, got {got}")
    if not is_integral(xp, labels.dtype):
        raise LabelError(f"{name}: expected an integer dtype (class indices), got {labels.dtype}")


def check_labels(xp, labels, n: int, num_classes: int, ignore_index=None, name: str = "labels"):
    """Labels must be an integer (N,) array with values in [0, num_classes) (or ``ignore_index``)."""
    check_label_layout(xp, labels, n, name)
    labels = _wide_enough(xp, labels, num_classes)
    # One reduction (one host sync on a GPU) in the common, valid case; min/max only for the message.
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad = bad & (labels != ignore_index)
    if n and bool(xp.any(bad)):
        low, high = int(xp.min(labels)), int(xp.max(labels))
        also = "" if ignore_index is None else f" or ignore_index {ignore_index}"
        raise LabelError(f"{name}: expected values in [0, {num_classes - 1}]{also}, got values from {low} to {high}")


def one_hot(labels, num_classes: int, dtype):
    """(N,) integer labels -> (N, num_classes) of 0/1 in ``dtype``; a label outside [0, num_classes)
    gives a row of zeros (no host read to check them; ``torch.nn.functional.one_hot`` raises)."""
    xp = namespace(labels=labels)
    num_classes = positive_int(num_classes, "num_classes")
    check_ndim(labels, 1, "labels", "(N,) of class indices")
    if not xp.isdtype(labels.dtype, "integral"):
        raise LabelError(f"labels: expected an integer dtype (class indices), got {labels.dtype}")
    labels = _wide_enough(xp, labels, num_classes)
    classes = xp.arange(num_classes, dtype=labels.dtype, device=device_of(labels))
    return xp.astype(labels[:, None] == classes, dtype)


def _wide_enough(xp, labels, k: int):
    """``labels`` in a dtype that holds k - 1 (uint8 labels for 300 classes go as int32; an arange
    of 300 in uint8 wraps round, and one label would match two classes)."""
    return labels if k <= 128 or xp.iinfo(labels.dtype).max >= k - 1 else xp.astype(labels, xp.int32)  # int8: 127


def _options(label_smoothing, ignore_index):
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ArgumentError(f"label_smoothing: expected a number in [0, 1], got {label_smoothing!r}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ArgumentError(f"ignore_index: expected None or an int class index, got {ignore_index!r}")
    return float(label_smoothing), ignore_index


def cross_entropy_with_grad(logits, labels, *, label_smoothing=0.0, ignore_index=None):
    """(loss, grad_logits): ``torch.nn.functional.cross_entropy`` (mean reduction) and its gradient.

    logits (N, K) float, labels (N,) integer in [0, K). loss is a 0-d array of logits' dtype.
    Each sample's target is (1 - label_smoothing) * one_hot + label_smoothing / K, so the loss
    is (1 - eps) * NLL + eps * mean over classes of -log p, as PyTorch's. Samples whose label
    is ``ignore_index`` add nothing, and the mean is over the others.
    """
    xp = namespace(logits=logits, labels=labels)
    check_ndim(logits, 2, "logits", "(N, num_classes)")
    check_nonempty(logits, "logits", "(N, num_classes)", axes=(1,))
    check_float(xp, "logits", logits)
    label_smoothing, ignore_index = _options(label_smoothing, ignore_index)
    n, k = logits.shape
    if n == 0:
        raise DataError("logits: the batch is empty (N = 0); the mean loss of no samples is undefined")
    check_labels(xp, labels, n, k, ignore_index)
    kept = None if ignore_index is None else xp.astype(labels != ignore_index, logits.dtype)[:, None]
    count = n if kept is None else int(xp.count_nonzero(labels != ignore_index))
    if count == 0:
        raise LabelError(f"labels: every label equals ignore_index {ignore_index}; the mean over no samples is "
                         "undefined")
    log_p = log_softmax(logits, axis=1)
    target = _target(xp, labels, k, logits.dtype, label_smoothing) * (1.0 if kept is None else kept)
    # A class of logit -inf (masked) with no target weight adds nothing, as in torch (not 0 * -inf = NaN).
    # The training step's kernel skips this select: a network's logits are finite.
    terms = xp.where(target > 0, log_p, zero_like(xp, log_p)) * target
    grad = xp.exp(log_p) - target
    return -xp.sum(terms) / count, (grad if kept is None else grad * kept) / count


def cross_entropy_kernel(xp, logits, labels, label_smoothing=0.0):
    """(loss, grad_logits) of :func:`cross_entropy_with_grad` without ignore_index, on arguments
    already checked. Reads nothing back to the host, so a compiled step (:mod:`xpcnn.jit`)
    can trace it."""
    return _cross_entropy(xp, logits, labels, label_smoothing)[:2]


def cross_entropy_counted_kernel(xp, logits, labels, label_smoothing=0.0):
    """(loss, grad_logits, in_range) as :func:`cross_entropy_kernel`, with ``in_range`` (a 0-d
    array of the logits' dtype) the number of labels in [0, K): the one-hot target has a 1 in
    exactly those rows, so checking the labels costs one sum (no comparisons of its own)."""
    loss, grad, hot = _cross_entropy(xp, logits, labels, label_smoothing)
    return loss, grad, xp.sum(hot)


def _cross_entropy(xp, logits, labels, label_smoothing):
    """(loss, grad_logits, one-hot of the labels)."""
    n, k = logits.shape
    # log_softmax written out so the softmax reuses its exponentials (e / sum e, not exp(log p)).
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    exp = xp.exp(shifted)
    total = xp.sum(exp, axis=1, keepdims=True)
    log_p = shifted - xp.log(total)
    hot = _one_hot(xp, labels, k, logits.dtype)
    target = _smoothed(hot, k, label_smoothing)
    loss = xp.sum(log_p * target)
    grad = exp / total - target
    return loss * (-1.0 / n), grad * (1.0 / n), hot


def _one_hot(xp, labels, k: int, dtype):
    """(N, K) one-hot of integer labels; a row of zeros for a label outside [0, K)."""
    labels = _wide_enough(xp, labels, k)
    classes = constant(xp, labels, f"arange {k}", lambda xp, dtype, device: xp.arange(k, dtype=dtype, device=device))
    return xp.astype(labels[:, None] == classes, dtype)


def _smoothed(hot, k: int, label_smoothing: float):
    """(N, K) targets from a one-hot: smoothed towards label_smoothing / K."""
    return hot * (1.0 - label_smoothing) + label_smoothing / k if label_smoothing else hot


def _target(xp, labels, k: int, dtype, label_smoothing: float):
    """(N, K) targets: one-hot, smoothed towards label_smoothing / K."""
    return _smoothed(_one_hot(xp, labels, k, dtype), k, label_smoothing)


def cross_entropy(logits, labels, *, label_smoothing=0.0, ignore_index=None):
    """Mean softmax cross-entropy of logits (N, K) against integer labels (N,); a 0-d array.
    Options as ``torch.nn.functional.cross_entropy``'s (see :func:`cross_entropy_with_grad`)."""
    return cross_entropy_with_grad(logits, labels, label_smoothing=label_smoothing, ignore_index=ignore_index)[0]


def cross_entropy_backward(logits, labels, *, label_smoothing=0.0, ignore_index=None):
    """grad_logits (N, K) of :func:`cross_entropy`: (softmax(logits) - target) / N for kept rows."""
    return cross_entropy_with_grad(logits, labels, label_smoothing=label_smoothing, ignore_index=ignore_index)[1]
