"""Element-wise and row-wise activations, forward and backward side by side."""

from __future__ import annotations

from ..backend import device_of
from ..errors import ShapeError
from ._checks import check_float, check_grad, namespace


def _check_axis(z, axis, name):
    """``axis`` must index a non-empty axis of ``z`` (a softmax over nothing is undefined)."""
    ndim = len(z.shape)
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ShapeError(f"axis: expected an int in [-{ndim}, {ndim}) for {name} of shape {tuple(z.shape)}, got {axis!r}")
    if z.shape[axis] == 0:
        raise ShapeError(f"{name}: expected a non-empty axis {axis}, got shape {tuple(z.shape)}")


def relu(x):
    """max(x, 0), any shape."""
    xp = namespace(x=x)
    check_float(xp, "x", x)
    return relu_kernel(xp, x)


def relu_kernel(xp, x):
    # maximum, not where: one SIMD ufunc on NumPy, ~10x faster.
    return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device_of(x)))


def relu_backward(grad_y, x):
    """grad_x = grad_y where x > 0, else 0 (PyTorch's choice at exactly 0)."""
    xp = namespace(x=x, grad_y=grad_y)
    check_float(xp, "x", x)
    check_grad(grad_y, "grad_y", x, tuple(x.shape), "x")
    return relu_backward_kernel(xp, grad_y, x)


def relu_backward_kernel(xp, grad_y, x):
    return grad_y * xp.astype(x > 0, grad_y.dtype)


def log_softmax(z, axis=-1):
    """log(softmax(z)) by log-sum-exp with the max subtracted: finite for any finite logits."""
    xp = namespace(z=z)
    check_float(xp, "z", z)
    _check_axis(z, axis, "z")
    shifted = z - xp.max(z, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(grad_y, y, axis=-1):
    """grad_z given grad_y and y = log_softmax(z): grad_y - softmax(z) * sum(grad_y)."""
    xp = namespace(y=y, grad_y=grad_y)
    check_float(xp, "y", y)
    _check_axis(y, axis, "y")
    check_grad(grad_y, "grad_y", y, tuple(y.shape), "y")
    return grad_y - xp.exp(y) * xp.sum(grad_y, axis=axis, keepdims=True)


def softmax(z, axis=-1):
    """exp(z) / sum(exp(z)) with the max subtracted first (no overflow)."""
    xp = namespace(z=z)
    return xp.exp(log_softmax(z, axis=axis))


def softmax_backward(grad_y, y, axis=-1):
    """grad_z given grad_y and y = softmax(z): y * (grad_y - sum(grad_y * y))."""
    xp = namespace(y=y, grad_y=grad_y)
    check_float(xp, "y", y)
    _check_axis(y, axis, "y")
    check_grad(grad_y, "grad_y", y, tuple(y.shape), "y")
    return y * (grad_y - xp.sum(grad_y * y, axis=axis, keepdims=True))
