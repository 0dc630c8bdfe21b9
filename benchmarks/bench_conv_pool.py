"""Conv2D then AvgPool2D: the two ops against the fused op (the im2col columns pooled, then the
weight; xpcnn/functional/conv_pool.py), per shape: the measurements behind ``conv_pool.fuses``
(fuse whenever it is exact).

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

from benchmarks import harness

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
    harness.print_load(load, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
