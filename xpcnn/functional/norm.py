"""Batch normalisation over (N, C, H, W) or (N, C), forward and backward side by side, with
PyTorch's semantics: training normalises with the batch mean and the *biased* batch variance
and moves the running statistics towards the batch mean and the *unbiased* variance;
inference normalises with the running statistics. Pure: the running buffers are never
written, new ones are returned."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._validate import check_float, check_grad, check_nonempty, check_same_dtype, check_shape, namespace
from ..backend import constant
from ..errors import ArgumentError, ShapeError


class BatchNormSaved(NamedTuple):
    """What the backward needs from the forward: ``centred`` = x - mean (x's shape; the mean
    used to normalise) and ``coefficients`` (2, 3, C), with inv_std = 1/sqrt(var + eps) and m
    values per channel: row 0 is (1, inv_std, inv_std), row 1 is weight * (inv_std / m,
    inv_std**3 / m, inv_std), the last of them the forward's per-channel scale."""

    centred: Any
    coefficients: Any


def _axes(x):
    """The reduction axes (every axis but the channel) and the broadcast shape of a (C,) vector."""
    if len(x.shape) == 4:
        return (0, 2, 3), (1, x.shape[1], 1, 1)
    return (0,), (1, x.shape[1])


def _check(xp, x, arrays: dict):
    if not hasattr(x, "shape") or len(x.shape) not in (2, 4):
        got = f"shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__
        raise ShapeError(f"x: expected a 4-d (N, C, H, W) or 2-d (N, C) array, got {got}")
    check_nonempty(x, "x", "(N, C, ...)", axes=(1,))
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


# The per-channel arithmetic (eps, the scale, what the backward needs, the running statistics'
# update) runs on one stack of the channel vectors, whatever the number of channels: one
# concatenation, one matmul for every linear combination, one power, one product by (1, weight).
# The stack's rows:
_MEAN, _VAR, _ONE, _WEIGHT, _RUNNING_MEAN, _RUNNING_VAR = range(6)


def _mixing(count: int, momentum: float, eps: float, update: bool) -> tuple[list, list]:
    """(M, E) as Python lists. M (6 or 8, 4 or 6) maps the stack (mean, var, 1, weight[,
    running_mean, running_var]) to six multiples k * (var + eps), which raised to the powers
    E (2, 3, 1) give (1, inv_std, inv_std; inv_std / m, inv_std**3 / m, inv_std), then with
    ``update`` to the new running mean and the new running variance (unbiased: var * m / (m - 1))."""
    width = 6 if update else 4

    def row(entries: dict) -> list:
        return [entries.get(column, 0.0) for column in range(width)]

    # (k v)**e for v = var + eps: k = m**2 with e = -1/2 gives inv_std / m, k = m**(2/3) with
    # e = -3/2 gives inv_std**3 / m; v**0 is exactly 1.
    factors = [1.0, 1.0, 1.0, float(count) ** 2, float(count) ** (2.0 / 3.0), 1.0]
    mix = [row({_VAR: k, _ONE: k * eps}) for k in factors]
    if update:
        mix += [row({_MEAN: momentum, _RUNNING_MEAN: 1.0 - momentum}),
                row({_VAR: momentum * count / (count - 1), _RUNNING_VAR: 1.0 - momentum})]
    return mix, [[[0.0], [-0.5], [-0.5]], [[-0.5], [-1.5], [-0.5]]]


def batch_norm_kernel(xp, x, weight, bias, running_mean, running_var, *, training, momentum, eps):
    """The forward math on checked inputs (see :func:`batch_norm`): x (N, C, H, W) or (N, C) ->
    y (x's shape), :class:`BatchNormSaved`, new running mean and variance (C,) (the inputs
    themselves when not updated)."""
    axes, shape = _axes(x)
    channels = x.shape[1]
    count = math.prod(x.shape) // channels if training else 1  # only batch statistics use it; N may be symbolic
    if training:
        # xp.var: one operation, where the mean of the centred square takes two.
        mean, var = xp.mean(x, axis=axes, keepdims=True), xp.var(x, axis=axes, keepdims=True)
    else:
        mean, var = running_mean, running_var
    update = training and running_mean is not None
    ones = constant(xp, x, ("batch_norm ones", channels),
                    lambda xp, dtype, device: xp.ones((1, channels), dtype=dtype, device=device))
    rows = [mean, var, ones, ones if weight is None else weight] + ([running_mean, running_var] if update else [])
    stack = xp.concat([xp.reshape(r, (1, channels)) for r in rows], axis=0)
    mix, powers = constant(xp, x, ("batch_norm mixing", count, momentum, eps, update),
                           lambda xp, dtype, device: tuple(xp.asarray(m, dtype=dtype, device=device)
                                                           for m in _mixing(count, momentum, eps, update)))
    # Each channel's column mixes only with itself: a NaN in a channel's running statistics or
    # weight reaches that channel's other rows (0 * NaN), never another channel.
    mixed = xp.matmul(mix, stack)
    coefficients = xp.pow(xp.reshape(mixed[:6, :], (2, 3, channels)), powers) * xp.reshape(
        stack[_ONE : _WEIGHT + 1, :], (2, 1, channels))
    centred = x - xp.reshape(mean, shape)
    y = centred * xp.reshape(coefficients[1, 2, :], shape)
    if bias is not None:
        y = y + xp.reshape(bias, shape)
    new_mean, new_var = (mixed[6, :], mixed[7, :]) if update else (running_mean, running_var)
    return y, BatchNormSaved(centred, coefficients), new_mean, new_var


def batch_norm_backward(grad_y, x, weight, saved, *, training, bias=True):
    """(grad_x, grad_weight, grad_bias) of :func:`batch_norm` given grad_y (x's shape) and the
    forward's ``saved``. In training mode the batch statistics depend on x, in inference mode
    they are constants. grad_weight is None when weight is None, grad_bias when ``bias`` is False."""
    xp = namespace(x=x, grad_y=grad_y, weight=weight, optional=("weight",))
    _check(xp, x, dict(weight=weight))
    check_grad(grad_y, "grad_y", x, tuple(x.shape), "x")
    if not isinstance(saved, BatchNormSaved):
        raise ArgumentError(f"saved: expected the BatchNormSaved that batch_norm returned, got {type(saved).__name__}")
    if tuple(saved.centred.shape) != tuple(x.shape) or saved.centred.dtype != x.dtype:
        raise ArgumentError(f"saved: from a forward of {tuple(saved.centred.shape)} {saved.centred.dtype}, but x is "
                            f"{tuple(x.shape)} {x.dtype}: pass what batch_norm returned for this x")
    if not isinstance(training, bool):
        raise ArgumentError(f"training: expected True or False, got {training!r}")
    return batch_norm_backward_kernel(xp, grad_y, x, weight, saved, training=training, bias=bias)


def batch_norm_backward_kernel(xp, grad_y, x, weight, saved: BatchNormSaved, *, training, bias):
    """The backward math on checked inputs: grad_y (x's shape) -> (grad_x (x's shape), grad_weight
    (C,) or None, grad_bias (C,) or None). With g = grad_y, c = x - mean, m values per channel
    and the forward's scale = weight * inv_std, in training mode
    grad_x = scale * g - (scale / m) * sum(g) - c * (weight * inv_std**3 / m) * sum(g * c),
    grad_weight = inv_std * sum(g * c), grad_bias = sum(g); the two sums in one reduction."""
    axes, shape = _axes(x)
    centred, coefficients = saved
    sums = xp.sum(xp.stack([grad_y, grad_y * centred]), axis=tuple(a + 1 for a in axes))  # (2, C)
    # (2, 2, C): (sum(g), inv_std * sum(g c)), then their multiples in grad_x.
    products = sums * coefficients[:, :2, :]
    grad_x = grad_y * xp.reshape(coefficients[1, 2, :], shape)
    if training:
        grad_x = grad_x - centred * xp.reshape(products[1, 1, :], shape) - xp.reshape(products[1, 0, :], shape)
    grad_weight = None if weight is None else products[0, 1, :]
    grad_bias = products[0, 0, :] if bias else None
    return grad_x, grad_weight, grad_bias
