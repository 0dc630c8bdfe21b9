"""Max pooling's two forms side by side on the CPU libraries: ``"taps"`` (a running maximum over
the kh*kw strided taps; per-tap masks backward) against ``"argmax"`` (the taps stacked, one max
and one argmax; a one-hot select backward). The measurements behind
``xpcnn.functional.max_pool_method``: taps on a CPU, argmax (fewer operations, fewer kernel
launches) on a GPU.

    python benchmarks/bench_pool_method.py [--threads 2] [--repeats 15]     # ~30 seconds

Per shape (N, C, H x W, the pool's window and stride), float32: milliseconds for one ReLU +
max pool forward and backward as the layers run them fused (xpcnn.functional.pool,
relu_max_pool2d_kernel and its backward), the median of --repeats calls with the contenders
alternating, on NumPy and on PyTorch CPU through the Array API; and the operations each form
issues (torch.profiler, views excluded), which is what a GPU launches.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # as bench_train.py

from benchmarks import harness

# The default network's two pools, the deep network's second, and resnet-style 3x3 stride 2.
SHAPES = [((64, 16, 28, 28), 2, None), ((64, 32, 14, 14), 2, None), ((64, 64, 14, 14), 2, None),
          ((64, 16, 28, 28), 3, 2), ((1, 16, 28, 28), 2, None)]


def step(library, shape, kernel, stride, method, seed=0):
    """A closure running one fused ReLU + max pool forward and backward in ``method``'s form."""
    import array_api_compat

    from xpcnn.functional import pool as P

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    geometry = P.pool_geometry(shape, kernel, stride)
    grad_y = rng.standard_normal((*shape[:2], *geometry.out_hw)).astype(np.float32)
    if library == "torch":
        import torch

        x, grad_y = torch.from_numpy(x), torch.from_numpy(grad_y)
    xp = array_api_compat.array_namespace(x)

    def run():
        _, pooled, saved = P.relu_max_pool2d_kernel(xp, x, geometry, method)
        return P.relu_max_pool2d_backward_kernel(xp, grad_y, x, geometry, pooled, saved)
    return run


def main(argv=None) -> int:
    args, env, load = harness.start_kernel_bench(__doc__, argv, repeats=15, with_torch=True)
    print("\nms per ReLU + max pool forward and backward, float32, median of rounds; ratio > 1: taps faster")
    print(f"{'N, C, H x W, window/stride':<30} {'numpy taps/argmax':>26} {'torch taps/argmax':>26} "
          f"{'ops taps/argmax':>16}")
    for shape, kernel, stride in SHAPES:
        cells = []
        for library in ("numpy", "torch"):
            forms = [step(library, shape, kernel, stride, method) for method in ("taps", "argmax")]
            taps, arg = harness.alternating_median_ms(forms, args.repeats)
            cells.append(f"{taps:7.3f}/{arg:7.3f} {arg / taps:6.2f}x")
        ops = [harness.count_ops(step("torch", shape, kernel, stride, m), steps=2, warmup=1).ops_per_step
               for m in ("taps", "argmax")]
        name = f"{shape[0]}, {shape[1]}, {shape[2]}x{shape[3]}, {kernel}/{stride or kernel}"
        print(f"{name:<30} {cells[0]:>26} {cells[1]:>26} {f'{ops[0]:.0f}/{ops[1]:.0f}':>16}")
    harness.print_load(load, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
