"""Element-wise and row-wise activations, forward and backward side by side (PyTorch's
formulas, so float64 results agree to rounding). Backwards of tanh and sigmoid take the
forward's output y, the others its input x."""

from __future__ import annotations

import math

from .._validate import check_float, check_grad, namespace
from ..backend import constant
from ..errors import ArgumentError, ShapeError


def _check_axis(z, axis, name):
    """``axis`` must index a non-empty axis of ``z`` (a softmax over nothing is undefined)."""
    ndim = len(z.shape)
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ShapeError(f"axis: expected an int in [-{ndim}, {ndim}) for {name} of shape {tuple(z.shape)}, "
                         f"got {axis!r}")
    if z.shape[axis] == 0:
        raise ShapeError(f"{name}: expected a non-empty axis {axis}, got shape {tuple(z.shape)}")


def relu(x):
    """max(x, 0), any shape."""
    xp = namespace(x=x)
    check_float(xp, "x", x)
    return relu_kernel(xp, x)


def zero_like(xp, like):
    """A 0-d zero of ``like``'s dtype and device, made once (:func:`xpcnn.backend.constant`)."""
    return constant(xp, like, "zero", lambda xp, dtype, device: xp.zeros((), dtype=dtype, device=device))


def relu_kernel(xp, x):
    # maximum with a kept zero, not where: one element-wise call, no mask.
    return xp.maximum(x, zero_like(xp, x))


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


def _check_same(xp, grad_y, a, name):
    check_float(xp, name, a)
    check_grad(grad_y, "grad_y", a, tuple(a.shape), name)


def tanh(x):
    """tanh(x), any shape."""
    xp = namespace(x=x)
    check_float(xp, "x", x)
    return tanh_kernel(xp, x)


def tanh_kernel(xp, x):
    return xp.tanh(x)


def tanh_backward(grad_y, y):
    """grad_x given grad_y and the forward's output y = tanh(x): grad_y * (1 - y**2)."""
    xp = namespace(y=y, grad_y=grad_y)
    _check_same(xp, grad_y, y, "y")
    return tanh_backward_kernel(xp, grad_y, y)


def tanh_backward_kernel(xp, grad_y, y):
    return grad_y * (1.0 - y * y)


def sigmoid(x):
    """1 / (1 + exp(-x)), any shape; exp only of -|x|, so no overflow (nor its warning) at any x."""
    xp = namespace(x=x)
    check_float(xp, "x", x)
    return sigmoid_kernel(xp, x)


def sigmoid_kernel(xp, x):
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(grad_y, y):
    """grad_x given grad_y and the forward's output y = sigmoid(x): grad_y * y * (1 - y)."""
    xp = namespace(y=y, grad_y=grad_y)
    _check_same(xp, grad_y, y, "y")
    return sigmoid_backward_kernel(xp, grad_y, y)


def sigmoid_backward_kernel(xp, grad_y, y):
    return grad_y * (y * (1.0 - y))


def _slope(negative_slope):
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) \
            or negative_slope != negative_slope:
        raise ArgumentError(f"negative_slope: expected a real number, got {negative_slope!r}")
    return float(negative_slope)


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else negative_slope * x (PyTorch's LeakyReLU), any shape."""
    xp = namespace(x=x)
    check_float(xp, "x", x)
    return leaky_relu_kernel(xp, x, _slope(negative_slope))


def leaky_relu_kernel(xp, x, negative_slope):
    return xp.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(grad_y, x, negative_slope=0.01):
    """grad_x = grad_y where x > 0, else negative_slope * grad_y (PyTorch's choice at exactly 0)."""
    xp = namespace(x=x, grad_y=grad_y)
    _check_same(xp, grad_y, x, "x")
    return leaky_relu_backward_kernel(xp, grad_y, x, _slope(negative_slope))


def leaky_relu_backward_kernel(xp, grad_y, x, negative_slope):
    return xp.where(x > 0, grad_y, grad_y * negative_slope)


# GELU's tanh approximation, PyTorch's constants: sqrt(2 / pi) and the cubic coefficient.
_GELU_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5
_GELU_KAPPA = 0.044715


def gelu(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))): PyTorch's GELU(approximate="tanh"), any shape."""
    xp = namespace(x=x)
    check_float(xp, "x", x)
    return gelu_kernel(xp, x)


def gelu_kernel(xp, x):
    inner = _GELU_BETA * (x + _GELU_KAPPA * (x * x * x))
    return 0.5 * x * (1.0 + xp.tanh(inner))


def gelu_backward(grad_y, x):
    """grad_x of :func:`gelu` given grad_y and its input x (PyTorch's formula)."""
    xp = namespace(x=x, grad_y=grad_y)
    _check_same(xp, grad_y, x, "x")
    return gelu_backward_kernel(xp, grad_y, x)


def gelu_backward_kernel(xp, grad_y, x):
    x_sq = x * x
    t = xp.tanh(_GELU_BETA * (x + _GELU_KAPPA * (x_sq * x)))
    left_derivative = 0.5 * (1.0 + t)
    right_derivative = (0.5 * x) * (1.0 - t * t) * (_GELU_BETA * (1.0 + 3.0 * _GELU_KAPPA * x_sq))
    return grad_y * (left_derivative + right_derivative)
