"""Dense layer math, ``y = x @ W + b`` with W of shape (in, out) as the notebook."""

from __future__ import annotations

import array_api_compat

from .._validate import check_float, check_grad, check_ndim, check_nonempty, check_same_dtype, check_shape, namespace
from ..errors import ShapeError


def linear(x, weight, bias=None):
    """x (N, in) @ weight (in, out) + bias (out,) -> (N, out)."""
    xp = namespace(x=x, weight=weight, bias=bias, optional=("bias",))
    check_ndim(x, 2, "x", "(N, in_features)")
    check_ndim(weight, 2, "weight", "(in_features, out_features)")
    check_nonempty(weight, "weight", "(in_features, out_features)", axes=(0, 1))
    if bias is not None:
        check_shape(bias, (weight.shape[1],), "bias", " (out_features,)")
        check_same_dtype("x", x, "bias", bias)
    _check_pair(xp, x, weight)
    return linear_kernel(xp, x, weight, bias)


def _check_pair(xp, x, weight) -> None:
    check_float(xp, "x", x)
    check_same_dtype("x", x, "weight", weight)
    if x.shape[1] != weight.shape[0]:
        raise ShapeError(f"x: has {x.shape[1]} features but weight of shape {tuple(weight.shape)} expects "
                         f"{weight.shape[0]}")


def linear_kernel(xp, x, weight, bias):
    """``x @ weight + bias`` on checked inputs."""
    y = xp.matmul(x, weight)
    return y if bias is None else y + bias


def linear_backward(grad_y, x, weight, *, bias=True, input_grad=True):
    """(grad_x (N, in) or None, grad_weight (in, out), grad_bias (out,) or None) given grad_y (N, out)."""
    xp = namespace(x=x, weight=weight, grad_y=grad_y)
    check_ndim(x, 2, "x", "(N, in_features)")
    check_ndim(weight, 2, "weight", "(in_features, out_features)")
    _check_pair(xp, x, weight)
    check_grad(grad_y, "grad_y", x, (x.shape[0], weight.shape[1]), "x")
    return linear_backward_kernel(xp, grad_y, x, weight, bias=bias, input_grad=input_grad)


def linear_backward_kernel(xp, grad_y, x, weight, *, bias, input_grad):
    if x.shape[0] == 1 and array_api_compat.is_numpy_array(x):
        # One sample: NumPy's matmul of a K = 1 product does not reach BLAS, its dot does; the
        # products are exact, so the numbers are the same (docs/performance.md).
        grad_weight = xp.dot(xp.matrix_transpose(x), grad_y)
    else:
        grad_weight = xp.matmul(x.T, grad_y)
    grad_bias = xp.sum(grad_y, axis=0) if bias else None
    grad_x = xp.matmul(grad_y, weight.T) if input_grad else None
    return grad_x, grad_weight, grad_bias
