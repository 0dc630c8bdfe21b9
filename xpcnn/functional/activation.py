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
    check_float(xp, "z", z)
    _check_axis(z, axis, "z")
    e = xp.exp(z - xp.max(z, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


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


GELU_FORMS = ("tanh", "none")


def _approximate(approximate):
    if approximate not in GELU_FORMS:
        raise ArgumentError(f"approximate: expected 'tanh' or 'none' (the exact, erf form), got {approximate!r}")
    return approximate


def gelu(x, approximate="tanh"):
    """PyTorch's GELU, any shape: ``approximate="tanh"`` 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)));
    ``"none"`` the exact x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))) (:func:`normal_cdf_kernel`)."""
    xp = namespace(x=x)
    check_float(xp, "x", x)
    return gelu_kernel(xp, x, _approximate(approximate))


def gelu_kernel(xp, x, approximate="tanh"):
    if approximate == "none":
        return x * normal_cdf_kernel(xp, x)[0]
    inner = _GELU_BETA * (x + _GELU_KAPPA * (x * x * x))
    return 0.5 * x * (1.0 + xp.tanh(inner))


def gelu_backward(grad_y, x, approximate="tanh"):
    """grad_x of :func:`gelu` given grad_y and its input x (PyTorch's formulas)."""
    xp = namespace(x=x, grad_y=grad_y)
    _check_same(xp, grad_y, x, "x")
    return gelu_backward_kernel(xp, grad_y, x, _approximate(approximate))


def gelu_backward_kernel(xp, grad_y, x, approximate="tanh"):
    if approximate == "none":
        cdf, density = normal_cdf_kernel(xp, x)  # d/dx x Phi(x) = Phi(x) + x phi(x)
        return grad_y * (cdf + x * density)
    x_sq = x * x
    t = xp.tanh(_GELU_BETA * (x + _GELU_KAPPA * (x_sq * x)))
    left_derivative = 0.5 * (1.0 + t)
    right_derivative = (0.5 * x) * (1.0 - t * t) * (_GELU_BETA * (1.0 + 3.0 * _GELU_KAPPA * x_sq))
    return grad_y * (left_derivative + right_derivative)


# Phi(x) by erf / erfc, with the rational approximations of Cephes (S. L. Moshier, ndtr.c; highest
# degree first, the denominators monic): erf(z) = z T(z^2) / U(z^2) for z < 1, erfc(z) = e^{-z^2}
# P(z) / Q(z) for 1 <= z < 8 and e^{-z^2} R(z) / S(z) beyond. Each tail comes from erfc, never as
# 1 - erf, so Phi keeps its relative accuracy far into the negative tail.
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3, 7.00332514112805075473e3,
          5.55923013010394962768e4)
_ERF_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3, 2.26290000613890934246e4,
          4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0, 4.86371970985681366614e1,
           1.96520832956077098242e2, 5.26445194995477358631e2, 9.34528527171957607540e2, 1.02755188689515710272e3,
           5.57535335369399327526e2)
_ERFC_Q = (1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2, 9.75708501743205489753e2,
           1.82390916687909736289e3, 2.24633760818710981792e3, 1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0, 6.16021097993053585195e0,
           7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1, 1.70814450747565897222e1,
           9.60896809063285878198e0, 3.36907645100081516050e0)
_SQRT1_2, _INV_SQRT_2PI = math.sqrt(0.5), 1.0 / math.sqrt(2.0 * math.pi)


def _horner(z, coefficients, monic=False):
    """The polynomial with ``coefficients`` (highest degree first; ``monic``: a leading 1 before them) at z."""
    acc = z + coefficients[0] if monic else z * coefficients[0] + coefficients[1]
    for c in coefficients[1 if monic else 2:]:
        acc = acc * z + c
    return acc


def _bound(xp, like, value):
    """A kept 0-d ``value`` of ``like``'s dtype and device."""
    return constant(xp, like, ("bound", value), lambda xp, dtype, device: xp.asarray(value, dtype=dtype, device=device))


def normal_cdf_kernel(xp, x):
    """(Phi(x), phi(x)) of the standard normal, each x's shape. Phi = erfc(-x / sqrt 2) / 2, erf and
    erfc by Cephes' rational approximations (comment above); e^{-x^2/2} as e^{-m^2/2} e^{-f (m + f/2)}
    with m = |x| rounded down to 1/64 (m^2 exact), so its error does not grow with x^2 (Cephes' expx2).
    Relative error within a few units of x's float dtype in both tails (tests/test_export.py)."""
    a = xp.minimum(xp.abs(x), _bound(xp, x, 40.0))  # phi(40) is below the smallest float64: no inf - inf below
    m = xp.floor(a * 64.0) / 64.0
    f = a - m
    density = xp.exp(-0.5 * (m * m)) * xp.exp(-f * (m + 0.5 * f)) * _INV_SQRT_2PI
    s = xp.minimum(a * _SQRT1_2, _bound(xp, x, 1.0))  # the erf branch's argument, kept below 1
    erf_small = s * _horner(s * s, _ERF_T) / _horner(s * s, _ERF_U, monic=True)
    # The erfc branches' argument, kept in [1, 27] (erfc(27) is below the smallest float64): no overflow.
    z = xp.minimum(xp.maximum(a * _SQRT1_2, _bound(xp, x, 1.0)), _bound(xp, x, 27.0))
    ratio = xp.where(z < 8.0, _horner(z, _ERFC_P) / _horner(z, _ERFC_Q, monic=True),
                     _horner(z, _ERFC_R) / _horner(z, _ERFC_S, monic=True))
    lower = 0.5 * xp.where(a * _SQRT1_2 < 1.0, 1.0 - erf_small, density * (math.sqrt(2.0 * math.pi) * ratio))
    return xp.where(x < 0, lower, 1.0 - lower), density
