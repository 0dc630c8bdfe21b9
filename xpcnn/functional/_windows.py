"""Sliding windows by strided slicing: the Array API has no as_strided or pad, so a
``k x k`` window view is the ``k*k`` shifted strided slices of the input.

Arrays are assigned into only through array-api-extra's ``at``, which writes in place into
the fresh buffers made here where the library allows it (NumPy, CuPy, torch) and makes a
functional update where it does not (JAX)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import array_api_compat
import array_api_extra as xpx

from ..backend import device_of, fewest_operations_for


def pad2d(xp: Any, x: Any, padding, value: float = 0.0) -> Any:
    """(..., H, W) -> (..., top + H + bottom, left + W + right) filled with ``value``;
    ``padding`` is ((top, bottom), (left, right)).

    A fresh array with the input set into its middle (the standard has no pad); with a symbolic
    batch (ndonnx), whose arrays cannot be made by shape, strips of ``value`` concatenated."""
    (top, bottom), (left, right) = padding
    if not (top or bottom or left or right):
        return x
    *lead, h, w = x.shape
    if None in lead:
        strip = xp.full_like(x[..., :1, :], value)
        x = xp.concat([strip] * top + [x] + [strip] * bottom, axis=-2)
        strip = xp.full_like(x[..., :, :1], value)
        return xp.concat([strip] * left + [x] + [strip] * right, axis=-1)
    out = xp.full((*lead, top + h + bottom, left + w + right), value, dtype=x.dtype, device=device_of(x))
    return xpx.at(out, (..., slice(top, top + h), slice(left, left + w))).set(x, xp=xp)


def offsets(kernel: tuple[int, int], dilation: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Top-left offsets of each kernel tap, row-major (the order of a flattened (kh, kw) kernel)."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i * dilation[0], j * dilation[1]


@functools.lru_cache(maxsize=256)
def tap_indices(kernel, stride, dilation, out_hw) -> tuple:
    """The index of each kernel tap's strided slice over the last two axes, in row-major kernel
    order. Stops are exact (array-api-strict rejects overshoot). Cached: a network asks for
    the same few geometries every step."""
    oh, ow = out_hw
    sh, sw = stride
    return tuple((..., slice(di, di + sh * (oh - 1) + 1, sh), slice(dj, dj + sw * (ow - 1) + 1, sw))
                 for di, dj in offsets(kernel, dilation))


def taps_of(x: Any, kernel, stride, dilation, out_hw) -> list:
    """Each kernel tap's strided slice of x (..., Hp, Wp): kh*kw views of shape (..., OH, OW)."""
    return [x[index] for index in tap_indices(tuple(kernel), tuple(stride), tuple(dilation), tuple(out_hw))]


def add_into(xp: Any, x: Any, index, y: Any) -> Any:
    """``x[index] += y`` on a buffer made here; returns the updated array. In the fewest-operations
    form, where views write through (CuPy, torch), the slice's own in-place add: one operation;
    ``xpx.at(x, index).add(y)`` also copies the updated slice back, a second. Elsewhere that
    functional update."""
    if fewest_operations_for(x) and (array_api_compat.is_cupy_array(x) or array_api_compat.is_torch_array(x)):
        view = x[index]
        view += y
        return x
    return xpx.at(x, index).add(y, xp=xp)


def add_taps(xp: Any, taps: list, size: tuple[int, int], padding, kernel, stride, dilation, out_hw) -> Any:
    """Adjoint of padding then :func:`taps_of`: sum each tap's (..., OH, OW) gradient into the
    input positions it was read from, then drop the padding -> (..., H, W) with (H, W) = ``size``.

    Slice accumulation, not scatter-add: deterministic and fast on every backend; windows
    that cannot overlap need a plain set."""
    (top, bottom), (left, right) = padding
    h, w = size
    first = taps[0]
    grad = xp.zeros((*first.shape[:-2], top + h + bottom, left + w + right), dtype=first.dtype, device=device_of(first))
    overlapping = kernel[0] * dilation[0] > stride[0] or kernel[1] * dilation[1] > stride[1]
    for index, g in zip(tap_indices(tuple(kernel), tuple(stride), tuple(dilation), tuple(out_hw)), taps):
        grad = add_into(xp, grad, index, g) if overlapping else xpx.at(grad, index).set(g, xp=xp)
    return crop2d(grad, padding, size)


def place2d(xp: Any, block: Any, padding, size: tuple[int, int]) -> Any:
    """A gradient ``block`` (..., BH, BW) over the top-left corner of the padded input -> the
    (..., H, W) input gradient: the padding cropped off, zeros where the block does not reach."""
    (top, _), (left, _) = padding
    h, w = size
    # Exact stops: array-api-strict rejects a slice running past the end.
    grad = block[..., top : min(top + h, block.shape[-2]), left : min(left + w, block.shape[-1])]
    bh, bw = grad.shape[-2:]
    if (bh, bw) == (h, w):
        return grad
    out = xp.zeros((*grad.shape[:-2], h, w), dtype=grad.dtype, device=device_of(grad))
    return xpx.at(out, (..., slice(0, bh), slice(0, bw))).set(grad, xp=xp)


def crop2d(x: Any, padding, size: tuple[int, int]) -> Any:
    """Inverse of :func:`pad2d` on a gradient: (..., Hp, Wp) -> (..., H, W)."""
    (top, _), (left, _) = padding
    if top == 0 and left == 0 and tuple(x.shape[-2:]) == tuple(size):
        return x
    return x[..., top : top + size[0], left : left + size[1]]
