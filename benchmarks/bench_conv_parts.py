"""Where a 3x3 convolution's time goes on NumPy, part by part, beside PyTorch's conv2d for the
same shape: the measurements behind "the deep network and resnet8 need other kernels".

    python benchmarks/bench_conv_parts.py [--threads 2] [--repeats 7]     # ~1 minute

For the 3x3 stride-1 layers of the deep network (1 -> 32 at 28x28, 32 -> 64 at 14x14) and of
resnet8 (16 -> 16 at 28x28, 32 -> 32 at 14x14, 64 -> 64 at 7x7), batch 64, padding 1,
float32: milliseconds per call of each part of xpcnn's conv2d (``xpcnn.functional.conv``):

- columns: im2col, the kh*kw taps copied into a (kh*kw*C, N*H*W) matrix;
- forward GEMM: the weight matrix times the columns;
- grad_y matrix: grad_y copied to (O, N*H*W);
- weight-gradient GEMM: that times the columns' transpose;
- input-gradient GEMM: the weight's transpose times it;
- fold: the input-gradient columns summed back into the padded input (kh*kw slice additions);

then xpcnn's whole forward and backward (the first layer skips its input gradient, as in a
network) against ``torch.nn.functional.conv2d`` forward and backward on the same arrays
(oneDNN's direct convolution), and the GEMMs timed alone against PyTorch's whole conv. xpcnn's
parts alternate round by round (a round: one untimed call, then ~0.15 s of calls), then
PyTorch's conv runs alone in rounds of its own (alternated with NumPy its thread pool starts
cold every round); each figure is the median of --repeats rounds.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # as bench_train.py

from benchmarks import harness

# (N, C, O, H, first layer?)
LAYERS = [(64, 1, 32, 28, True), (64, 32, 64, 14, False), (64, 16, 16, 28, False), (64, 32, 32, 14, False),
          (64, 64, 64, 7, False)]


def parts(n, c, o, h, first, seed=0):
    """The named closures timed for one layer shape."""
    import torch

    import xpcnn
    from xpcnn.functional import conv as C

    xpcnn.keep_freed_memory()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = np.zeros(o, np.float32)
    grad_y = rng.standard_normal((n, o, h, h)).astype(np.float32)
    geometry = C.conv2d_geometry(x.shape, w.shape, 1, 1)
    cols = C.columns(np, x, (3, 3), geometry)
    w_mat = C.weight_matrix(np, w, 1)
    g_mat = np.ascontiguousarray(C.channel_matrix(np, grad_y, 1))
    grad_cols = np.matmul(np.matrix_transpose(w_mat), g_mat)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    tx.requires_grad_(not first)
    tg = torch.from_numpy(grad_y)

    def torch_conv():
        tx.grad = tw.grad = tb.grad = None
        torch.nn.functional.conv2d(tx, tw, tb, padding=1).backward(tg)

    def xpcnn_conv():
        y, kept = C.conv2d_kernel(np, x, w, b, geometry)
        return C.conv2d_backward_kernel(np, grad_y, x, w, geometry, bias=True, cols=kept, input_grad=not first)

    named = {
        "columns": lambda: C.columns(np, x, (3, 3), geometry),
        "forward GEMM": lambda: np.matmul(w_mat, cols),
        "grad_y matrix": lambda: np.ascontiguousarray(C.channel_matrix(np, grad_y, 1)),
        "weight-grad GEMM": lambda: np.matmul(g_mat, np.matrix_transpose(cols)),
    }
    if not first:
        named["input-grad GEMM"] = lambda: np.matmul(np.matrix_transpose(w_mat), g_mat)
        named["fold"] = lambda: C.fold(np, grad_cols, (3, 3), geometry, x.shape)
    named["xpcnn conv2d forward + backward"] = xpcnn_conv
    named["torch conv2d forward + backward"] = torch_conv
    return named


def main(argv=None) -> int:
    args, env, load = harness.start_kernel_bench(__doc__, argv, repeats=7, with_torch=True)
    print("\nms per call, float32, 3x3 stride 1 pad 1, median of alternating rounds")
    for n, c, o, h, first in LAYERS:
        named = parts(n, c, o, h, first)
        # PyTorch's conv is timed on its own: alternated with NumPy's calls its thread pool starts
        # cold every round, and it reads several times slower than alone.
        torch_conv = named.pop("torch conv2d forward + backward")
        times = dict(zip(named, harness.alternating_median_ms(list(named.values()), args.repeats, round_s=0.15)))
        times["torch conv2d forward + backward"], = harness.alternating_median_ms([torch_conv], args.repeats,
                                                                                   round_s=0.15)
        gemms = sum(t for name, t in times.items() if name.endswith("GEMM"))
        moves = sum(t for name, t in times.items() if name in ("columns", "grad_y matrix", "fold"))
        ours, theirs = times["xpcnn conv2d forward + backward"], times["torch conv2d forward + backward"]
        print(f"\nN {n}, {c} -> {o} channels, {h}x{h}{' (a first layer: no input gradient)' if first else ''}")
        for name, t in times.items():
            print(f"  {name:<34} {t:8.2f}")
        print(f"  {'the GEMMs together':<34} {gemms:8.2f}   ({gemms / theirs:.2f}x PyTorch's whole conv)")
        print(f"  {'columns, grad_y matrix and fold':<34} {moves:8.2f}")
        print(f"  {'xpcnn / PyTorch time':<34} {ours / theirs:8.2f}x")
    harness.print_load(load, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
