"""Conv2D then AvgPool2D: the two ops against the fused op (the im2col columns pooled, then the
weight; xpcnn/functional/conv_pool.py). The measurements behind ``conv_pool.fuses``: fuse
whenever it is exact (an earlier form, which pooled the im2col columns themselves, was
slower once they had more than ~8 rows per output channel). Then, for the notebook network's
layer, the two ways to make the pooled columns: pooling the im2col columns (two matmuls over
kh*kw times the input) against the shifted averaging matrices applied to the input itself
(two matmuls over the input; what ``conv_pool._pooled_columns`` does). Last, the fused op's
input gradient both ways (the measurements behind ``conv_pool.unpools``).

    python benchmarks/bench_conv_pool.py [--threads 2] [--repeats 15]     # ~1 minute

Per shape (N, C -> O, H x W, 3x3 valid conv, 2x2 average pool, and a few overlapping pools),
float32 on NumPy: milliseconds for one forward and backward of the pair (weight gradient
always; the input gradient as the first layer of a network skips it, and with it), the
median of --repeats calls, the two contenders alternating. Also the float64 relative
difference between the two (they are the same math in a different order, so it is rounding
only).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # as bench_train.py

from benchmarks import harness  # noqa: E402

# (N, C, O, H, (pool kernel, stride)): the shapes above with a 2x2 pool; these overlap their windows.
OVERLAPPING = [(64, 1, 16, 28, (3, 1)), (64, 3, 5, 28, (3, 1)), (64, 16, 64, 14, (3, 2)), (64, 32, 8, 14, (3, 1)),
               (64, 32, 8, 14, (3, 2))]
SHAPES = [(64, 1, 16, 28), (1000, 1, 16, 28), (1, 1, 16, 28), (64, 1, 4, 28), (64, 3, 32, 28), (64, 3, 5, 28),
          (64, 6, 5, 28), (64, 12, 5, 28), (64, 8, 64, 14), (64, 16, 64, 14), (64, 32, 32, 14), (64, 16, 8, 14),
          (64, 32, 8, 14), (64, 64, 8, 14), (8, 3, 5, 28)]


def pair_step(n, c, o, h, input_grad, fused, dtype=np.float32, seed=0, pool_window=(2, 2)):
    """A closure running one forward + backward of conv 3x3 then avg pool (``pool_window``:
    kernel, stride; 2x2 by default), and its outputs."""
    import xpcnn
    from xpcnn.functional import conv as C
    from xpcnn.functional import conv_pool as F
    from xpcnn.functional import pool as P

    xpcnn.keep_freed_memory()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    conv = C.conv2d_geometry(x.shape, w.shape)
    pool = P.pool_geometry((n, o, *conv.out_hw), *pool_window)
    grad_y = rng.standard_normal((n, o, *pool.out_hw)).astype(dtype)

    def two_ops():
        y, cols = C.conv2d_kernel(np, x, w, b, conv)
        out = P.avg_pool2d_kernel(np, y, pool)
        grad_conv = P.avg_pool2d_backward_kernel(np, grad_y, conv.out_hw, pool)
        return (out, *C.conv2d_backward_kernel(np, grad_conv, x, w, conv, bias=True, cols=cols, input_grad=input_grad))

    def one_op():
        out, pooled = F.conv2d_avg_pool2d_kernel(np, x, w, b, conv, pool)
        return (out, *F.conv2d_avg_pool2d_backward_kernel(np, grad_y, x, w, conv, pool, bias=True, pooled=pooled,
                                                          input_grad=input_grad))
    return one_op if fused else two_ops


def pooled_column_forms(n, seed=0):
    """(from the im2col columns, shifted averaging) closures making the pooled columns of the
    notebook network's conv (1 -> 16, 3x3) and pool (2x2) for a batch of ``n``."""
    from xpcnn.functional import conv as C
    from xpcnn.functional import conv_pool as F
    from xpcnn.functional import pool as P

    x = np.random.default_rng(seed).random((n, 1, 28, 28)).astype(np.float32)
    conv = C.conv2d_geometry(x.shape, (16, 1, 3, 3))
    pool = P.pool_geometry((n, 16, *conv.out_hw), 2)
    (oh, ow), (ph, pw) = conv.out_hw, pool.out_hw

    def from_columns():
        cols = C._columns(np, x, (3, 3), conv)
        rows = cols.shape[0] * cols.shape[1]
        a_h_t, a_w = P._averaging(np, pool, cols, (oh, ow))
        pooled_w = np.reshape(np.reshape(cols, (rows * n * oh, ow)) @ a_w, (rows * n, oh, pw))
        return np.reshape(a_h_t @ pooled_w, (1, rows, n * ph * pw))

    def shifted():
        return F._pooled_columns(np, x, (3, 3), conv, pool)
    return from_columns, shifted


def input_grad_forms(n, c, o, h, window, seed=0):
    """(through the conv's output, transposed averaging matrices) closures computing the fused
    conv 3x3 + avg pool's input gradient."""
    from xpcnn.functional import conv as C
    from xpcnn.functional import conv_pool as F
    from xpcnn.functional import pool as P

    rng = np.random.default_rng(seed)
    x_shape = (n, c, h, h)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    conv = C.conv2d_geometry(x_shape, w.shape)
    pool = P.pool_geometry((n, o, *conv.out_hw), *window)
    grad_y = rng.standard_normal((n, o, *pool.out_hw)).astype(np.float32)

    def via_output():
        grad_out = P.avg_pool2d_backward_kernel(np, grad_y, conv.out_hw, pool)
        return C.conv2d_input_grad_kernel(np, grad_out, x_shape, w, conv)

    def transposed():
        grad_pooled = np.matmul(np.matrix_transpose(C._weight_matrix(np, w, 1)), C._channel_matrix(np, grad_y, 1))
        return F._unpooled_columns(np, grad_pooled, x_shape, (3, 3), conv, pool)
    return via_output, transposed


def main(argv=None) -> int:
    args, env, load = harness.start_kernel_bench(__doc__, argv, repeats=15)
    from xpcnn.functional import conv_pool
    from xpcnn.functional.conv import conv2d_geometry
    from xpcnn.functional.pool import pool_geometry

    print("\nms per forward + backward, float32, median of rounds; ratio > 1: fused faster; rows/ch = kh*kw*C / O")
    header = f"{'N, C -> O, H (pool 2 unless said)':<36} {'rows/ch':>7} {'no input grad':>22} {'with input grad':>24}"
    print(f"{header} {'rule':>6} {'f64 diff':>9}")
    for n, c, o, h, window in [(*shape, (2, 2)) for shape in SHAPES] + OVERLAPPING:
        cells = []
        for input_grad in (False, True):
            pair = [pair_step(n, c, o, h, input_grad, fused, pool_window=window) for fused in (False, True)]
            two, one = harness.alternating_median_ms(pair, args.repeats)
            cells.append(f"{two:7.3f}/{one:7.3f} {two / one:5.2f}x")
        w_shape = (o, c, 3, 3)
        conv = conv2d_geometry((n, c, h, h), w_shape)
        rule = conv_pool.fuses(pool_geometry((n, o, *conv.out_hw), *window))
        ref = pair_step(min(n, 8), c, o, h, True, False, np.float64, pool_window=window)()
        got = pair_step(min(n, 8), c, o, h, True, True, np.float64, pool_window=window)()
        diff = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(ref, got))
        pool_text = "" if window == (2, 2) else f", pool {window[0]} stride {window[1]}"
        print(f"{f'{n}, {c} -> {o}, {h}{pool_text}':<36} {9 * c / o:>7.1f} {cells[0]:>22} {cells[1]:>24} "
              f"{'fuse' if rule else 'two':>6} {diff:>9.1e}")
    print("\nthe pooled columns of conv 3x3 (C=1) then avg pool 2 on 28x28, float32, us per call, median of rounds")
    print(f"{'N':>5} {'from the columns':>17} {'shifted averaging':>18} {'ratio':>7}  same numbers")
    for n in (1, 64, 1000):
        columns_form, shifted_form = pooled_column_forms(n)
        before, after = harness.alternating_median_ms([columns_form, shifted_form], args.repeats * 4)
        same = bool(np.array_equal(columns_form(), shifted_form()))
        print(f"{n:>5} {before * 1e3:>17.1f} {after * 1e3:>18.1f} {before / after:>6.2f}x  {same}")
    print("\nthe fused op's input gradient, ms per call, float32, median of rounds: through the conv's output (the"
          "\npool's backward, then the conv's) against the transposed tap-averaging matrices; ratio > 1: the latter"
          " faster")
    print(f"{'N, C -> O, H (pool 2 unless said)':<36} {'rows/ch':>7} {'via the output':>15} {'transposed':>11} "
          f"{'ratio':>7} {'rule':>11} {'f32 diff':>9}")
    for n, c, o, h, window in [(*shape, (2, 2)) for shape in SHAPES if shape[0] <= 64] + OVERLAPPING:
        via_output, transposed = input_grad_forms(n, c, o, h, window)
        before, after = harness.alternating_median_ms([via_output, transposed], args.repeats)
        a, b = via_output(), transposed()
        diff = float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
        conv = conv2d_geometry((n, c, h, h), (o, c, 3, 3))
        unpools = conv_pool.unpools((o, c, 3, 3), conv, pool_geometry((n, o, *conv.out_hw), *window))
        rule = "transposed" if unpools else "output"
        pool_text = "" if window == (2, 2) else f", pool {window[0]} stride {window[1]}"
        print(f"{f'{n}, {c} -> {o}, {h}{pool_text}':<36} {9 * c / o:>7.1f} {before:>15.3f} {after:>11.3f} "
              f"{before / after:>6.2f}x {rule:>11} {diff:>9.1e}")
    harness.print_load(load, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
