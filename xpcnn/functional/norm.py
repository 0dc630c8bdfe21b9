"""Batch normalisation over (N, C, H, W) or (N, C), forward and backward side by side, with
PyTorch's semantics: training normalises with the batch mean and the *biased* batch variance
and moves the running statistics towards the batch mean and the *unbiased* variance;
inference normalises with the running statistics. Pure: the running buffers are never
written, new ones are returned."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._validate import check_float, check_grad, check_same_dtype, check_shape, namespace
from ..errors import ArgumentError, ShapeError


class BatchNormSaved(NamedTuple):
    """What the backward needs from the forward: the per-channel mean and 1/sqrt(var + eps)
    used to normalise, shaped to broadcast against x, and the normalised input x_hat."""

    mean: Any
    inv_std: Any
    x_hat: Any


def _axes(x):
    """The reduction axes (every axis but the channel) and the broadcast shape of a (C,) vector."""
    if len(x.shape) == 4:
        return (0, 2, 3), (1, x.shape[1], 1, 1)
    return (0,), (1, x.shape[1])


def _check(xp, x, arrays: dict):
    if not hasattr(x, "shape") or len(x.shape) not in (2, 4):
        got = f"shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__
        raise ShapeError(f"x: expected a 4-d (N, C, H, W) or 2-d (N, C) array, got {got}")
    check_float(xp, "x", x)
    for name, a in arrays.items():
        if a is not None:
            check_shape(a, (x.shape[1],), name, " (one per channel)")
            check_same_dtype("x", x, name, a)


def _fraction(value, name, *, low, high, closed_high):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or value > high or (value == high and not closed_high):
        bracket = "]" if closed_high else ")"
        raise ArgumentError(f"{name}: expected a number in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


def batch_norm(x, weight, bias, running_mean, running_var, *, training, momentum=0.1, eps=1e-5):
    """(y, saved, new_running_mean, new_running_var) for x (N, C, H, W) or (N, C).

    weight, bias (C,) may be None (no affine transform); running_mean, running_var (C,) may
    both be None (no running statistics: then only training mode is possible). In training
    mode the new running statistics are (1 - momentum) * old + momentum * batch statistic,
    with the unbiased variance; in inference mode they are the inputs, unchanged. ``saved``
    goes to :func:`batch_norm_backward`.
    """
    xp = namespace(x=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var,
                   optional=("weight", "bias", "running_mean", "running_var"))
    _check(xp, x, dict(weight=weight, bias=bias, running_mean=running_mean, running_var=running_var))
    if not isinstance(training, bool):
        raise ArgumentError(f"training: expected True or False, got {training!r}")
    momentum = _fraction(momentum, "momentum", low=0.0, high=1.0, closed_high=True)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0 and math.isfinite(eps)):
        raise ArgumentError(f"eps: expected a positive number, got {eps!r}")
    if (running_mean is None) != (running_var is None):
        raise ArgumentError("running_mean, running_var: expected both arrays or both None, got one of each")
    if not training and running_mean is None:
        raise ArgumentError("running_mean: inference mode normalises with the running statistics; got None")
    if training and math.prod(x.shape) // x.shape[1] <= 1:
        raise ShapeError(
            f"x: expected more than 1 value per channel when training (as PyTorch), got shape {tuple(x.shape)}"
        )
    return batch_norm_kernel(xp, x, weight, bias, running_mean, running_var, training=training, momentum=momentum,
                             eps=float(eps))


def batch_norm_kernel(xp, x, weight, bias, running_mean, running_var, *, training, momentum, eps):
    """The forward math on checked inputs (see :func:`batch_norm`)."""
    axes, shape = _axes(x)
    if training:
        mean = xp.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        var = xp.mean(centred * centred, axis=axes, keepdims=True)
    else:
        mean, var = xp.reshape(running_mean, shape), xp.reshape(running_var, shape)
        centred = x - mean
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = centred * inv_std
    y = x_hat
    if weight is not None:
        y = y * xp.reshape(weight, shape)
    if bias is not None:
        y = y + xp.reshape(bias, shape)
    new_mean, new_var = running_mean, running_var
    if training and running_mean is not None:
        count = math.prod(x.shape) // x.shape[1]
        new_mean = (1.0 - momentum) * running_mean + momentum * xp.reshape(mean, (x.shape[1],))
        unbiased = xp.reshape(var, (x.shape[1],)) * (count / (count - 1))
        new_var = (1.0 - momentum) * running_var + momentum * unbiased
    return y, BatchNormSaved(mean, inv_std, x_hat), new_mean, new_var


def batch_norm_backward(grad_y, x, weight, saved, *, training, bias=True):
    """(grad_x, grad_weight, grad_bias) of :func:`batch_norm` given grad_y (x's shape) and the
    forward's ``saved``. In training mode the batch statistics depend on x, in inference mode
    they are constants. grad_weight is None when weight is None, grad_bias when ``bias`` is False."""
    xp = namespace(x=x, grad_y=grad_y, weight=weight, optional=("weight",))
    _check(xp, x, dict(weight=weight))
    check_grad(grad_y, "grad_y", x, tuple(x.shape), "x")
    if not isinstance(saved, BatchNormSaved):
        raise ArgumentError(f"saved: expected the BatchNormSaved that batch_norm returned, got {type(saved).__name__}")
    if not isinstance(training, bool):
        raise ArgumentError(f"training: expected True or False, got {training!r}")
    return batch_norm_backward_kernel(xp, grad_y, x, weight, saved, training=training, bias=bias)


def batch_norm_backward_kernel(xp, grad_y, x, weight, saved: BatchNormSaved, *, training, bias):
    """The backward math on checked inputs. In training mode, with m values per channel:
    grad_x = w * inv_std / m * (m * g - sum(g) - x_hat * sum(g * x_hat))."""
    axes, shape = _axes(x)
    channels = x.shape[1]
    sum_g = xp.sum(grad_y, axis=axes, keepdims=True)
    sum_g_xhat = xp.sum(grad_y * saved.x_hat, axis=axes, keepdims=True)
    scale = saved.inv_std if weight is None else saved.inv_std * xp.reshape(weight, shape)
    if training:
        count = math.prod(x.shape) // channels
        grad_x = (scale * (1.0 / count)) * (count * grad_y - sum_g - saved.x_hat * sum_g_xhat)
    else:
        grad_x = grad_y * scale
    grad_weight = None if weight is None else xp.reshape(sum_g_xhat, (channels,))
    grad_bias = xp.reshape(sum_g, (channels,)) if bias else None
    return grad_x, grad_weight, grad_bias
