"""Dense layer math, ``y = x @ W + b`` with W of shape (in, out) as the notebook."""

from __future__ import annotations

from ..backend import namespace_of
from ._checks import check_float, check_ndim, check_same_dtype


def linear(x, weight, bias=None):
    """x (N, in) @ weight (in, out) + bias (out,) -> (N, out)."""
    xp = namespace_of(x, weight, bias)
    check_ndim(x, 2, "x", "(N, in_features)")
    check_ndim(weight, 2, "weight", "(in_features, out_features)")
    check_float(xp, "x", x)
    check_same_dtype("x", x, "weight", weight)
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"x: has {x.shape[1]} features but weight of shape {tuple(weight.shape)} expects {weight.shape[0]}")
    y = xp.matmul(x, weight)
    return y if bias is None else y + bias


def linear_backward(grad_y, x, weight, *, bias=True, input_grad=True):
    """(grad_x (N, in) or None, grad_weight (in, out), grad_bias (out,) or None) given grad_y (N, out)."""
    xp = namespace_of(x, weight, grad_y)
    grad_weight = xp.matmul(x.T, grad_y)
    grad_bias = xp.sum(grad_y, axis=0) if bias else None
    grad_x = xp.matmul(grad_y, weight.T) if input_grad else None
    return grad_x, grad_weight, grad_bias
