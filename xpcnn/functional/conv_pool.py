"""A convolution followed by an average pool, as one op: avg_pool2d(conv2d(x, W) + b).

Average pooling acts on spatial positions and the convolution's matmul on channels, so the two
commute: pooling the im2col columns, then multiplying by the weight, gives the same output as
pooling the convolution's output. The pooling then runs on the columns' kh*kw*C/G rows instead
of the output's O channels, and the matmul on the pooled positions only (2x2 pooling: 4x
fewer): on the notebook network (C=1, O=16, 3x3 kernel, 2x2 pool) the convolution's full-size
output is never made. The weight gradient is the same identity read backwards: grad_y times
the pooled columns.

The bias commutes only when every pool window averages its full size of real cells (no padding, no
``ceil_mode`` window running over): :func:`fuses` says when, and whether it is faster. Written
on the same helpers as conv2d and avg_pool2d (the columns, the averaging matrices), so the
numbers are those of the two ops up to float rounding order.
"""

from __future__ import annotations

from typing import Any

from .conv import (
    ConvGeometry,
    _channel_matrix,
    _columns,
    _from_channel_matrix,
    _weight_from_matrix,
    _weight_matrix,
    conv2d_input_grad_kernel,
)
from .pool import PoolGeometry, _averaging, avg_pool2d_backward_kernel

# Fused is faster while the columns have at most this many rows per output channel
# (kh*kw*C/G <= 8 * O/G). Measured by benchmarks/bench_conv_pool.py (NumPy, 2 threads; output in
# benchmarks/results/conv_pool_threads2.txt), forward + backward of the pair: fused 1.06-4.6x
# faster at up to 2.2 rows per channel (the notebook network has 0.6), 0.90-1.20x at 5.4, and
# 0.93-1.24x from 9 to 72, where pooling the tall columns costs about what the smaller matmul saves.
_MAX_ROWS_PER_CHANNEL = 8


def fuses(w_shape, conv: ConvGeometry, pool: PoolGeometry) -> bool:
    """Whether conv2d with weight of ``w_shape`` (O, C/G, kh, kw) then ``pool`` should run as one op:
    exact when every pool window averages kh*kw cells of the conv's output (no padding, no
    ``ceil_mode`` window running over: the bias then passes through unchanged), and worth it
    while the columns are not much taller than the output (see ``_MAX_ROWS_PER_CHANNEL``)."""
    exact = pool.divisor is None and not any(p for side in pool.padding for p in side)
    o, cg, kh, kw = w_shape
    return exact and kh * kw * cg <= _MAX_ROWS_PER_CHANNEL * (o // conv.groups)


def conv2d_avg_pool2d_kernel(xp, x, weight, bias, conv: ConvGeometry, pool: PoolGeometry) -> tuple[Any, Any]:
    """avg_pool2d(conv2d(x, weight, bias)) on checked inputs, ``fuses(...)``:
    x (N, C, H, W) -> (y (N, O, PH, PW), the pooled columns (G, kh*kw*C/G, N*PH*PW) for the backward)."""
    g = conv.groups
    n = x.shape[0]
    oh, ow = conv.out_hw
    ph, pw = pool.out_hw
    cols = _columns(xp, x, weight.shape[2:], conv)
    rows = cols.shape[0] * cols.shape[1]
    a_h_t, a_w = _averaging(xp, pool, cols, (oh, ow))
    # The columns are a fresh contiguous array: pooling the width is ONE (rows*N*OH, OW) @ (OW, PW)
    # product, not rows*N small ones; the height then a batched (PH, OH) @ (OH, PW) product.
    pooled_w = xp.reshape(xp.matmul(xp.reshape(cols, (rows * n * oh, ow)), a_w), (rows * n, oh, pw))
    pooled = xp.reshape(xp.matmul(a_h_t, pooled_w), (g, rows // g, n * ph * pw))
    y = xp.matmul(_weight_matrix(xp, weight, g), pooled)
    if bias is not None:
        y = y + xp.reshape(bias, (g, weight.shape[0] // g, 1))
    return _from_channel_matrix(xp, y, n, (ph, pw)), pooled


def conv2d_avg_pool2d_backward_kernel(xp, grad_y, x, weight, conv: ConvGeometry, pool: PoolGeometry, *, bias: bool,
                                      pooled, input_grad: bool):
    """(grad_x or None, grad_weight, grad_bias or None) of :func:`conv2d_avg_pool2d_kernel` given
    grad_y (N, O, PH, PW) and its pooled columns."""
    g = conv.groups
    g_mat = _channel_matrix(xp, grad_y, g)
    grad_weight = _weight_from_matrix(xp, xp.matmul(g_mat, xp.matrix_transpose(pooled)), weight.shape)
    grad_bias = xp.sum(grad_y, axis=(0, 2, 3)) if bias else None
    grad_x = None
    if input_grad:
        # The input gradient goes through the conv's output: the pool's backward, then the conv's.
        grad_out = avg_pool2d_backward_kernel(xp, grad_y, conv.out_hw, pool)
        grad_x = conv2d_input_grad_kernel(xp, grad_out, x.shape, weight, conv)
    return grad_x, grad_weight, grad_bias
