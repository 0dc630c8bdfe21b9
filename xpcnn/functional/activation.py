"""Element-wise and row-wise activations, forward and backward side by side."""

from __future__ import annotations

from ..backend import device_of, namespace_of
from ._checks import check_float


def relu(x):
    """max(x, 0), any shape."""
    xp = namespace_of(x)
    check_float(xp, "x", x)
    return xp.where(x > 0, x, xp.zeros((), dtype=x.dtype, device=device_of(x)))


def relu_backward(grad_y, x):
    """grad_x = grad_y where x > 0, else 0 (PyTorch's choice at exactly 0)."""
    xp = namespace_of(x, grad_y)
    return xp.where(x > 0, grad_y, xp.zeros((), dtype=grad_y.dtype, device=device_of(grad_y)))


def log_softmax(z, axis=-1):
    """log(softmax(z)) by log-sum-exp with the max subtracted: finite for any finite logits."""
    xp = namespace_of(z)
    check_float(xp, "z", z)
    shifted = z - xp.max(z, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(grad_y, y, axis=-1):
    """grad_z given grad_y and y = log_softmax(z): grad_y - softmax(z) * sum(grad_y)."""
    xp = namespace_of(y, grad_y)
    return grad_y - xp.exp(y) * xp.sum(grad_y, axis=axis, keepdims=True)


def softmax(z, axis=-1):
    """exp(z) / sum(exp(z)) with the max subtracted first (no overflow)."""
    xp = namespace_of(z)
    return xp.exp(log_softmax(z, axis=axis))


def softmax_backward(grad_y, y, axis=-1):
    """grad_z given grad_y and y = softmax(z): y * (grad_y - sum(grad_y * y))."""
    xp = namespace_of(y, grad_y)
    return y * (grad_y - xp.sum(grad_y * y, axis=axis, keepdims=True))
