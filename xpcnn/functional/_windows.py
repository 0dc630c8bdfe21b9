"""Sliding windows by strided slicing: the Array API has no as_strided or pad, so a
``k x k`` window view is the ``k*k`` shifted strided slices of the input."""

from __future__ import annotations

from typing import Any, Iterator

from ..backend import device_of, namespace_of


def pad2d(x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    """(N, C, H, W) -> (N, C, H + 2ph, W + 2pw), filled with ``value`` (concat: works on immutable arrays)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = namespace_of(x)
    n, c, h, w = x.shape
    kw = dict(dtype=x.dtype, device=device_of(x))
    if pw:
        side = xp.full((n, c, h, pw), value, **kw)
        x = xp.concat([side, x, side], axis=3)
    if ph:
        top = xp.full((n, c, ph, w + 2 * pw), value, **kw)
        x = xp.concat([top, x, top], axis=2)
    return x


def offsets(kernel: tuple[int, int], dilation: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Top-left offsets of each kernel tap, row-major (the order of a flattened (kh, kw) kernel)."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i * dilation[0], j * dilation[1]


def tap(x: Any, di: int, dj: int, out_hw: tuple[int, int], stride: tuple[int, int]) -> tuple[slice, slice, slice, slice]:
    """The index of one kernel tap's strided slice; stops are exact (array-api-strict rejects overshoot)."""
    oh, ow = out_hw
    sh, sw = stride
    return (slice(None), slice(None), slice(di, di + sh * (oh - 1) + 1, sh), slice(dj, dj + sw * (ow - 1) + 1, sw))


def stack_windows(x: Any, kernel, stride, dilation, out_hw, axis: int) -> Any:
    """(N, C, Hp, Wp) -> the kh*kw strided slices stacked on ``axis`` (each (N, C, OH, OW))."""
    xp = namespace_of(x)
    return xp.stack([x[tap(x, di, dj, out_hw, stride)] for di, dj in offsets(kernel, dilation)], axis=axis)


def unstack_windows_add(windows: list, padded_shape, kernel, stride, dilation, out_hw, like: Any) -> Any:
    """Adjoint of :func:`stack_windows`: sum each tap's (N, C, OH, OW) gradient into a zero (N, C, Hp, Wp).

    Slice accumulation, not scatter-add: deterministic and fast on every backend."""
    xp = namespace_of(like)
    grad = xp.zeros(padded_shape, dtype=like.dtype, device=device_of(like))
    for (di, dj), g in zip(offsets(kernel, dilation), windows):
        index = tap(grad, di, dj, out_hw, stride)
        grad[index] += g
    return grad


def crop2d(x: Any, padding: tuple[int, int], size: tuple[int, int]) -> Any:
    """Inverse of :func:`pad2d` on a gradient: (N, C, Hp, Wp) -> (N, C, H, W)."""
    ph, pw = padding
    if ph == 0 and pw == 0 and tuple(x.shape[2:]) == tuple(size):
        return x
    return x[:, :, ph : ph + size[0], pw : pw + size[1]]
