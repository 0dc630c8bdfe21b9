"""The CPU form against the GPU form of each choice behind ``xpcnn.fewest_operations`` (besides
max pooling, which ``bench_pool_method.py`` measures), on NumPy, side by side: the measurements
behind keeping the CPU forms on a CPU.

    python benchmarks/bench_forms.py [--threads 2]     # ~1 minute

1. The training step's NaN guard (``xpcnn.training.nan_guard``): a sum per gradient added up (CPU)
   against one sum over the concatenated gradients (GPU), on the gradients of one real step.
2. The optimizer update (``xpcnn.optim.Optimizer.step``): per parameter (CPU) against one flat
   update over the concatenations (GPU; here without the guard's concatenation to reuse, as
   on a CPU), plain SGD, on the same gradients.
3. A stride-1 convolution's input gradient (``xpcnn.functional.conv.conv2d_input_grad_kernel``):
   the fold of kh*kw slice additions (CPU) against grad_y's columns times the flipped weight
   (GPU), for the 3x3 layers of the benchmark networks at batch 64, float32.

Microseconds (1, 2) or milliseconds (3) per call, the best of 5 rounds of many calls, the two
forms alternating by round; ratio > 1: the CPU form is faster.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # as bench_train.py

from benchmarks import harness

NETS = [("notebook", 1), ("notebook", 64), ("default", 64), ("deep", 64), ("resnet8", 64)]
# (N, C, O, H, padding): the default network's second conv, the deep network's two, resnet8's stages.
CONVS = [(64, 16, 32, 13, 0), (64, 1, 32, 28, 1), (64, 32, 64, 14, 1), (64, 16, 16, 28, 1), (64, 32, 32, 14, 1),
         (64, 64, 64, 7, 1)]


def best_of(fns, calls, rounds=5):
    """Best time per call (seconds) of each function, alternating them round by round."""
    best = [float("inf")] * len(fns)
    for f in fns:
        f()
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            best[i] = min(best[i], (time.perf_counter() - t0) / calls)
    return best


def trained(net, batch, images, labels):
    """A model of ``net`` after one train_step on ``batch`` images: its gradients are filled."""
    from xpcnn import optim

    model = harness.build_xpcnn(net, backend="numpy")
    model.train_step(harness.to_float(images)[:batch], labels[:batch], optim.SGD(lr=harness.LR))
    return model


def guard_form(training, xp, loss, grads, fewest):
    """One form of the NaN guard over ``grads``."""
    import xpcnn

    def guard():
        with xpcnn.fewest_operations(fewest):
            return training.nan_guard(xp, loss, grads)
    return guard


def update_forms(model):
    """(GPU form, CPU form) of one SGD step of ``model``'s filled gradients."""
    import xpcnn
    from xpcnn import optim

    per_parameter, flat = optim.SGD(lr=1e-6), optim.SGD(lr=1e-6)

    def cpu_form():
        with xpcnn.fewest_operations(False):
            per_parameter.step(model)

    def gpu_form():
        model.flat_grads = None  # no guard ran: the gradients are concatenated here
        with xpcnn.fewest_operations(True):
            flat.step(model)
    return gpu_form, cpu_form


def input_grad_forms(rng, n, c, o, h, pad):
    """(GPU form, CPU form) of the input gradient of a 3x3 stride-1 conv, float32 on NumPy."""
    import numpy as np

    from xpcnn.functional import conv as C

    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    geometry = C.conv2d_geometry((n, c, h, h), w.shape, 1, pad)
    grad_y = rng.standard_normal((n, o, *geometry.out_hw)).astype(np.float32)

    def fold():
        g_mat = C.channel_matrix(np, grad_y, 1)
        grad_cols = np.matmul(np.matrix_transpose(C.weight_matrix(np, w, 1)), g_mat)
        return C.fold(np, grad_cols, (3, 3), geometry, (n, c, h, h))

    def columns():
        return C.input_grad_by_columns(np, grad_y, w, geometry, (h, h))
    return columns, fold


def main(argv=None) -> int:
    args, env, load = harness.start_kernel_bench(__doc__, argv)
    import numpy as np

    from xpcnn import training

    images, labels = harness.load_images(n=64)

    print("\n1. NaN guard, us per call, float32 on NumPy; ratio > 1: the CPU form (sums) faster")
    print(f"{'network, batch':<20} {'gradients':>9} {'concat (GPU form)':>18} {'sums (CPU form)':>16} {'ratio':>7}")
    loss = np.asarray(1.0, dtype=np.float32)
    for net, batch in NETS:
        model = trained(net, batch, images, labels)
        grads = [g for layer in model.layers for g in layer.grads.values()]

        gpu, cpu = best_of([guard_form(training, np, loss, grads, True), guard_form(training, np, loss, grads, False)],
                           2000 if net == "notebook" else 300)
        print(f"{f'{net}-net b{batch}':<20} {len(grads):>9} {gpu * 1e6:>18.1f} {cpu * 1e6:>16.1f} {gpu / cpu:>6.2f}x")

    print("\n2. optimizer update (SGD), us per step, float32 on NumPy; ratio > 1: the CPU form (per parameter) faster")
    print(f"{'network, batch':<20} {'parameters':>10} {'flat (GPU form)':>16} {'per parameter (CPU form)':>25} "
          f"{'ratio':>7}")
    for net, batch in NETS:
        model = trained(net, batch, images, labels)
        slots = model.named_parameters()
        gpu_form, cpu_form = update_forms(model)
        gpu, cpu = best_of([gpu_form, cpu_form], 1000 if net == "notebook" else 200)
        print(f"{f'{net}-net b{batch}':<20} {len(slots):>10} {gpu * 1e6:>16.1f} {cpu * 1e6:>25.1f} {gpu / cpu:>6.2f}x")

    print("\n3. stride-1 3x3 convolution input gradient, ms per call, float32 on NumPy; ratio > 1: the CPU form "
          "(fold) faster")
    print(f"{'N, C -> O, H, pad':<22} {'columns (GPU form)':>19} {'fold (CPU form)':>16} {'ratio':>7}")
    rng = np.random.default_rng(0)
    for n, c, o, h, pad in CONVS:
        columns, fold = input_grad_forms(rng, n, c, o, h, pad)
        gpu, cpu = best_of([columns, fold], 10)
        diff = float(np.max(np.abs(columns() - fold())) / np.max(np.abs(fold())))
        print(f"{f'{n}, {c} -> {o}, {h}, {pad}':<22} {gpu * 1e3:>19.2f} {cpu * 1e3:>16.2f} {gpu / cpu:>6.2f}x"
              f"   (relative difference {diff:.1e})")
    harness.print_load(load, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
