"""A convolution followed by an average pool, as one op: avg_pool2d(conv2d(x, W) + b).

Average pooling acts on spatial positions and the convolution's matmul on channels, so the two
commute: pooling the im2col columns, then multiplying by the weight, gives the same output as
pooling the convolution's output. The matmul then runs on the pooled positions only (2x2
pooling: 4x fewer), and the convolution's full-size output is never made. The weight gradient
is the same identity read backwards: grad_y times the pooled columns.

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

The input gradient is the adjoint of the same two matmuls (:func:`_unpooled_columns`): the
weight's transpose times grad_y gives the pooled columns' gradient, and the transposed
averaging matrices take it back to the input, for pools of stride 2 or more whose columns are
not too tall (:func:`unpools`); else through the conv's output, the pool's backward then the
conv's.

The bias commutes only when every pool window averages its full size of real cells (no padding, no
``ceil_mode`` window running over): :func:`fuses` says when. The numbers are those of the two
ops (conv2d, avg_pool2d) up to float rounding order.
"""

from __future__ import annotations

import functools
from typing import Any

from ..backend import constant
from .conv import (
    ConvGeometry,
    _channel_matrix,
    _from_channel_matrix,
    _weight_from_matrix,
    _weight_matrix,
    conv2d_input_grad_kernel,
)
from .pool import PoolGeometry, _averaging_lists, avg_pool2d_backward_kernel


def fuses(pool: PoolGeometry) -> bool:
    """Whether a conv2d then ``pool`` run as one op: when it is exact, that is when every pool
    window averages kh*kw cells of the conv's output (no padding, no ``ceil_mode`` window
    running over: the bias then passes through unchanged), whatever the convolution.

    Always, since the pooled columns are made without the im2col columns (module docstring):
    ``benchmarks/bench_conv_pool.py`` (NumPy, 2 threads, ``benchmarks/results/conv_pool_threads2.txt``),
    forward + backward at 20 shapes from 0.6 to 72 im2col rows per output channel, 2x2 and
    overlapping pools: 1.36-6.4x faster, except two stride-1 3x3 pools with the input gradient
    (0.95x, 0.98x). The earlier form, which pooled the im2col columns themselves, was slower
    once they had more than ~8 rows per output channel, and a bound on their height applied."""
    return pool.divisor is None and not any(p for side in pool.padding for p in side)


def conv2d_avg_pool2d_kernel(xp, x, weight, bias, conv: ConvGeometry, pool: PoolGeometry) -> tuple[Any, Any]:
    """avg_pool2d(conv2d(x, weight, bias)) on checked inputs, ``fuses(...)``:
    x (N, C, H, W) -> (y (N, O, PH, PW), the pooled columns (G, kh*kw*C/G, N*PH*PW) for the backward)."""
    g = conv.groups
    n = x.shape[0]
    pooled = _pooled_columns(xp, x, tuple(weight.shape[2:]), conv, pool)
    y = xp.matmul(_weight_matrix(xp, weight, g), pooled)
    if bias is not None:
        y = y + xp.reshape(bias, (g, weight.shape[0] // g, 1))
    return _from_channel_matrix(xp, y, n, pool.out_hw), pooled


def _pooled_columns(xp, x, kernel, conv: ConvGeometry, pool: PoolGeometry):
    """The im2col columns of x (N, C, H, W) for ``kernel``, average-pooled: (G, kh*kw*C/G, N*PH*PW),
    tap-major rows as :func:`xpcnn.functional.conv._columns`, in two matmuls (module docstring)."""
    n, c, h, w = x.shape
    g = conv.groups
    (kh, kw), (ph, pw) = kernel, pool.out_hw
    b_h_t, b_w = _tap_averaging(xp, x, conv, pool, kernel)
    # The width first as ONE (N*C*H, W) @ (W, kw*PW) product, not N*C small ones.
    z = xp.reshape(xp.matmul(xp.reshape(x, (n * c * h, w)), b_w), (n * c, h, kw * pw))
    blocks = xp.reshape(xp.matmul(b_h_t, z), (n, g, c // g, kh, ph, kw, pw))  # (.., i, p, j, q)
    return xp.reshape(xp.permute_dims(blocks, (1, 3, 5, 2, 0, 4, 6)), (g, kh * kw * (c // g), n * ph * pw))


def _unpooled_columns(xp, grad_pooled, x_shape, kernel, conv: ConvGeometry, pool: PoolGeometry):
    """Adjoint of :func:`_pooled_columns`: the gradient of its output (G, kh*kw*C/G, N*PH*PW) ->
    the input's (N, C, H, W), by the transposed averaging matrices: two matmuls again."""
    n, c, h, w = x_shape
    g = conv.groups
    (kh, kw), (ph, pw) = kernel, pool.out_hw
    b_h_t, b_w = _tap_averaging(xp, grad_pooled, conv, pool, kernel, (h, w))
    blocks = xp.permute_dims(xp.reshape(grad_pooled, (g, kh, kw, c // g, n, ph, pw)), (4, 0, 3, 1, 5, 2, 6))
    z = xp.matmul(xp.matrix_transpose(b_h_t), xp.reshape(blocks, (n * c, kh * ph, kw * pw)))  # (N*C, H, kw*PW)
    grad = xp.matmul(xp.reshape(z, (n * c * h, kw * pw)), xp.matrix_transpose(b_w))
    return xp.reshape(grad, (n, c, h, w))


def _tap_averaging(xp, like, conv: ConvGeometry, pool: PoolGeometry, kernel, size=None):
    """The arrays of :func:`_tap_averaging_lists` for an input of ``size`` (``like``'s (H, W) by
    default), in ``like``'s dtype and device, kept per geometry (:func:`xpcnn.backend.constant`)."""
    size = tuple(like.shape[2:]) if size is None else size
    return constant(xp, like, ("tap averaging", conv, pool, size, kernel),
                    lambda xp, dtype, device: tuple(xp.asarray(m, dtype=dtype, device=device)
                                                    for m in _tap_averaging_lists(conv, pool, size, kernel)))


@functools.lru_cache(maxsize=64)
def _tap_averaging_lists(conv: ConvGeometry, pool: PoolGeometry, size: tuple[int, int], kernel) -> tuple:
    """([B_h^(0) .. B_h^(kh-1)]^T (kh*PH, H), [B_w^(0) .. B_w^(kw-1)] (W, kw*PW)) as Python lists
    for an input of ``size``: B^(i)[h] is row r of the pool's averaging matrix (over the conv's
    output) where the conv reads input cell h at output r through tap i, else zeros."""
    a_h_t, a_w = _averaging_lists(pool, conv.out_hw)  # (PH, OH), (OW, PW)
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
    g = conv.groups
    g_mat = _channel_matrix(xp, grad_y, g)
    grad_weight = _weight_from_matrix(xp, xp.matmul(g_mat, xp.matrix_transpose(pooled)), weight.shape)
    grad_bias = xp.sum(grad_y, axis=(0, 2, 3)) if bias else None
    grad_x = None
    if input_grad and unpools(weight.shape, conv, pool):
        grad_pooled = xp.matmul(xp.matrix_transpose(_weight_matrix(xp, weight, g)), g_mat)
        grad_x = _unpooled_columns(xp, grad_pooled, x.shape, tuple(weight.shape[2:]), conv, pool)
    elif input_grad:
        # Through the conv's output: the pool's backward, then the conv's.
        grad_out = avg_pool2d_backward_kernel(xp, grad_y, conv.out_hw, pool)
        grad_x = conv2d_input_grad_kernel(xp, grad_out, x.shape, weight, conv)
    return grad_x, grad_weight, grad_bias


# The input gradient by the transposed averaging matrices when the pool has a stride of 2 or more
# and the pooled columns have at most this many rows per output channel: it multiplies the
# weight's transpose into a gradient of kh*kw*C/G rows, where the other way (the pool's
# backward, then the conv's) makes O-channel arrays; a stride-1 pool makes the averaging
# matrices nearly as wide as the input. ``benchmarks/bench_conv_pool.py`` (NumPy, 2 threads,
# ``benchmarks/results/conv_pool_threads2.txt``, last table), 3x3 conv: with stride-2 pools
# 1.26-5.5x faster up to 21.6 rows per channel; 0.50x and 1.61x at 36, 1.00x at 72; with
# stride-1 3x3 pools 0.77-2.3x.
_UNPOOL_MAX_ROWS_PER_CHANNEL = 24


def unpools(w_shape, conv: ConvGeometry, pool: PoolGeometry) -> bool:
    """Whether :func:`conv2d_avg_pool2d_backward_kernel` takes the input gradient through the
    transposed averaging matrices (:func:`_unpooled_columns`) for a weight of ``w_shape``."""
    o, cg, kh, kw = w_shape
    return min(pool.stride) >= 2 and kh * kw * cg <= _UNPOOL_MAX_ROWS_PER_CHANNEL * (o // conv.groups)
