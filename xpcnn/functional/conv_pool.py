"""A convolution followed by an average pool, as one op: avg_pool2d(conv2d(x, W) + b).

Average pooling acts on spatial positions and the convolution's matmul on channels, so the two
commute: pooling the im2col columns, then multiplying by the weight, gives the same output as
pooling the convolution's output. The matmul then runs on the pooled positions only (a
quarter of them for 2x2 pooling), and the convolution's full-size output is never made. The
weight gradient is the same identity read backwards: grad_y times the pooled columns.

The pooled columns are made straight from the input, without the im2col columns (kh*kw times
the input) in between. Pooling is separable, y = A_h^T x A_w, and tap (i, j)'s column is the
input shifted by the tap's offset, so its pooled block is B_h^(i)^T x B_w^(j), with B^(i) the
averaging matrix with its rows moved by the offset (and spread by the conv's stride; rows of
padding dropped, since padding is zeros). Stacking the kh (kw) shifted matrices side by side
gives every tap in two matmuls: x (H, W) @ [B_w^(0) .. B_w^(kw-1)] (W, kw*PW), then
[B_h^(0) .. B_h^(kh-1)]^T (kh*PH, H) @ that, per (sample, channel). Each pooled value is the
sum of the same products as when pooling the columns (the other terms are exact zeros), in
an order BLAS picks: equal to rounding, and bitwise for 2-wide windows (two terms, halves
exact), as the notebook network's.

The input gradient goes through the conv's output: the pool's backward, then the conv's.

The bias commutes only when every pool window averages its full size of real cells (no padding, no
``ceil_mode`` window running over): :func:`fuses` says when. The numbers are those of the two
ops (conv2d, avg_pool2d) up to float rounding order.
"""

from __future__ import annotations

import functools
from typing import Any

from ..backend import constant
from .conv import ConvGeometry, conv2d_input_grad_kernel, weight_from_matrix, weight_matrix
from .pool import PoolGeometry, averaging_lists, avg_pool2d_backward_kernel


def fuses(pool: PoolGeometry) -> bool:
    """Whether a conv2d then ``pool`` run as one op: whenever it is exact, that is when every pool
    window averages kh*kw cells of the conv's output (no padding, no ``ceil_mode`` window
    running over: the bias then passes through unchanged), whatever the convolution. See
    docs/performance.md."""
    return pool.divisor is None and not any(p for side in pool.padding for p in side)


def conv2d_avg_pool2d_kernel(xp, x, weight, bias, conv: ConvGeometry, pool: PoolGeometry) -> tuple[Any, Any]:
    """avg_pool2d(conv2d(x, weight, bias)) on checked inputs, ``fuses(...)``:
    x (N, C, H, W) -> (y (N, O, PH, PW), the pooled columns (N, G, kh*kw*C/G, PH*PW) for the backward).

    One product per sample (the columns are small: kh*kw*C/G rows), so y comes out in (N, O, ...)
    order: a Flatten after it is a view, and grad_y reaches the backward in the same order, where
    a (G, ..., N*PH*PW) product would copy both across the batch (docs/performance.md)."""
    g, (o, *_) = conv.groups, weight.shape
    pooled = pooled_columns(xp, x, tuple(weight.shape[2:]), conv, pool)
    y = xp.matmul(weight_matrix(xp, weight, g), pooled)  # (N, G, O/G, PH*PW)
    if bias is not None:
        y = y + xp.reshape(bias, (g, o // g, 1))
    return xp.reshape(y, (-1, o, *pool.out_hw)), pooled


def pooled_columns(xp, x, kernel, conv: ConvGeometry, pool: PoolGeometry):
    """The im2col columns of x (N, C, H, W) for ``kernel``, average-pooled, per sample:
    (N, G, kh*kw*C/G, PH*PW), tap-major rows as :func:`xpcnn.functional.conv.columns`, in two
    matmuls (module docstring)."""
    n, c, h, w = x.shape
    g = conv.groups
    (kh, kw), (ph, pw) = kernel, pool.out_hw
    b_h_t, b_w = _tap_averaging(xp, x, conv, pool, kernel)
    # The width first as ONE (N*C*H, W) @ (W, kw*PW) product, not N*C small ones.
    z = xp.reshape(xp.matmul(xp.reshape(x, (n * c * h, w)), b_w), (n * c, h, kw * pw))
    blocks = xp.reshape(xp.matmul(b_h_t, z), (n, g, c // g, kh, ph, kw, pw))  # (.., i, p, j, q)
    return xp.reshape(xp.permute_dims(blocks, (0, 1, 3, 5, 2, 4, 6)), (n, g, kh * kw * (c // g), ph * pw))


def _tap_averaging(xp, like, conv: ConvGeometry, pool: PoolGeometry, kernel):
    """The arrays of :func:`_tap_averaging_lists` for ``like`` (N, C, H, W), in its dtype and
    device, kept per geometry (:func:`xpcnn.backend.constant`)."""
    size = tuple(like.shape[2:])
    return constant(xp, like, ("tap averaging", conv, pool, size, kernel),
                    lambda xp, dtype, device: tuple(xp.asarray(m, dtype=dtype, device=device)
                                                    for m in _tap_averaging_lists(conv, pool, size, kernel)))


@functools.lru_cache(maxsize=64)
def _tap_averaging_lists(conv: ConvGeometry, pool: PoolGeometry, size: tuple[int, int], kernel) -> tuple:
    """([B_h^(0) .. B_h^(kh-1)]^T (kh*PH, H), [B_w^(0) .. B_w^(kw-1)] (W, kw*PW)) as Python lists
    for an input of ``size``: B^(i)[h] is row r of the pool's averaging matrix (over the conv's
    output) where the conv reads input cell h at output r through tap i, else zeros."""
    a_h_t, a_w = averaging_lists(pool, conv.out_hw)  # (PH, OH), (OW, PW)
    a_h = [list(column) for column in zip(*a_h_t)]  # (OH, PH)
    b_h, b_w = (_shifted(a, size[d], conv.padding[d][0], conv.stride[d], conv.dilation[d], kernel[d])
                for d, a in enumerate((a_h, a_w)))
    return [list(row) for row in zip(*b_h)], b_w


def _shifted(a: list, size: int, before: int, stride: int, dilation: int, taps: int) -> list:
    """(size, taps * P): for input index h and tap i, the row a[r] (P values) of the conv output
    r = (h + before - i*dilation) / stride that reads h through tap i, or zeros when none does."""
    out = len(a[0])
    rows = []
    for h in range(size):
        row = []
        for i in range(taps):
            r, rest = divmod(h + before - i * dilation, stride)
            row.extend(a[r] if rest == 0 and 0 <= r < len(a) else [0.0] * out)
        rows.append(row)
    return rows


def conv2d_avg_pool2d_backward_kernel(xp, grad_y, x, weight, conv: ConvGeometry, pool: PoolGeometry, *, bias: bool,
                                      pooled, input_grad: bool):
    """(grad_x or None, grad_weight, grad_bias or None) of :func:`conv2d_avg_pool2d_kernel` given
    grad_y (N, O, PH, PW) and its pooled columns."""
    g, (n, o, ph, pw) = conv.groups, grad_y.shape
    per_sample = xp.matmul(xp.reshape(grad_y, (n, g, o // g, ph * pw)), xp.matrix_transpose(pooled))
    grad_weight = weight_from_matrix(xp, xp.sum(per_sample, axis=0), weight.shape)
    grad_bias = xp.sum(grad_y, axis=(0, 2, 3)) if bias else None
    grad_x = None
    if input_grad:
        grad_out = avg_pool2d_backward_kernel(xp, grad_y, conv.out_hw, pool)
        grad_x = conv2d_input_grad_kernel(xp, grad_out, x.shape, weight, conv)
    return grad_x, grad_weight, grad_bias

