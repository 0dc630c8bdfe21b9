"""Sliding windows by strided slicing: the Array API has no as_strided or pad, so a
``k x k`` window view is the ``k*k`` shifted strided slices of the input."""

from __future__ import annotations

import functools
from typing import Any, Iterator

from ..backend import device_of, namespace_of


def pad2d(x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    """(N, C, H, W) -> (N, C, H + 2ph, W + 2pw), filled with ``value``.

    A fresh array with the input assigned into its middle: half the cost of two concats."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = namespace_of(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=device_of(x))
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def offsets(kernel: tuple[int, int], dilation: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Top-left offsets of each kernel tap, row-major (the order of a flattened (kh, kw) kernel)."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i * dilation[0], j * dilation[1]


@functools.lru_cache(maxsize=256)
def tap_indices(kernel, stride, dilation, out_hw) -> tuple:
    """The index of each kernel tap's strided slice, in row-major kernel order. Stops are exact
    (array-api-strict rejects overshoot). Cached: a network asks for the same few geometries
    every step."""
    oh, ow = out_hw
    sh, sw = stride
    return tuple(
        (slice(None), slice(None), slice(di, di + sh * (oh - 1) + 1, sh), slice(dj, dj + sw * (ow - 1) + 1, sw))
        for di, dj in offsets(kernel, dilation)
    )


def taps_of(x: Any, kernel, stride, dilation, out_hw) -> list:
    """Each kernel tap's strided slice of x (N, C, Hp, Wp): kh*kw views of shape (N, C, OH, OW)."""
    return [x[index] for index in tap_indices(tuple(kernel), tuple(stride), tuple(dilation), tuple(out_hw))]


def add_taps(taps: list, like: Any, padding, kernel, stride, dilation, out_hw) -> Any:
    """Adjoint of padding then :func:`taps_of`: sum each tap's (N, C, OH, OW) gradient into the
    input positions it was read from, then drop the padding -> (N, C, H, W) like ``like``.

    Slice accumulation, not scatter-add: deterministic and fast on every backend; windows
    that cannot overlap need plain assignment."""
    xp = namespace_of(like)
    n, c, h, w = like.shape
    grad = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=like.dtype, device=device_of(like))
    overlapping = kernel[0] * dilation[0] > stride[0] or kernel[1] * dilation[1] > stride[1]
    for index, g in zip(tap_indices(tuple(kernel), tuple(stride), tuple(dilation), tuple(out_hw)), taps):
        if overlapping:
            grad[index] += g
        else:
            grad[index] = g
    return crop2d(grad, padding, (h, w))


def crop2d(x: Any, padding: tuple[int, int], size: tuple[int, int]) -> Any:
    """Inverse of :func:`pad2d` on a gradient: (N, C, Hp, Wp) -> (N, C, H, W)."""
    ph, pw = padding
    if ph == 0 and pw == 0 and tuple(x.shape[2:]) == tuple(size):
        return x
    return x[:, :, ph : ph + size[0], pw : pw + size[1]]
