"""Operations and host reads per training step, and where each one comes from.

    python benchmarks/bench_ops.py            # ~1 minute; the committed output is results/ops_per_step.txt
    python benchmarks/bench_ops.py --patch benchmarks/without/argmax_tiled_backward.patch   # a form taken out

Counted with torch.profiler (benchmarks/harness.py, count_ops) on the torch backend (CPU): an
operation is a top-level ATen call that does more than make a view (on a GPU, at least one
kernel launch); a host read brings a tensor's value into Python or NumPy (on a GPU, a
synchronisation). The xpcnn step is ``model.train_step(x, y, SGD(0.05))`` on a batch already on
the backend, as the throughput benchmark times it, and one step of ``model.fit`` (ten batches of
64 in one call, the per-call work shared out); the PyTorch step is its standard loop
(zero_grad, forward, cross_entropy, backward, SGD step, ``loss.item()``).

Kernels with two forms take one on a CPU and the other, with fewer operations, on a GPU
(``xpcnn.fewest_operations``; today max pooling: per-tap masks or one argmax per window). The
torch backend here runs on the CPU, so xpcnn is counted twice: as it runs here ("CPU forms")
and inside ``xpcnn.fewest_operations()`` ("GPU forms": the operations a CUDA device launches).

1. Per network: operations and host reads per step, xpcnn (both forms) and PyTorch side by side.
2. The default network (``xpcnn.zoo.default_cnn``, batch 64; target: <= 60 operations and <= 1
   host read per step): every operation of an xpcnn ``train_step`` (GPU forms, then CPU forms)
   with its innermost xpcnn call and the layer (or training function) that made it, then the
   same for PyTorch's loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness

SCENARIOS = [("train", "notebook", 1), ("train", "notebook", 64), ("train", "deep", 64), ("train", "default", 64),
             ("train", "resnet8", 64), ("infer", "notebook", 1000)]
TARGET_OPS, TARGET_READS = 60, 1


def fit_step(net: str, batch: int, steps: int = 10):
    """A callable running ``model.fit`` for one epoch of ``steps`` batches on the torch backend."""
    import xpcnn
    from xpcnn import optim

    images, labels = harness.load_images(n=batch * steps)
    model = harness.build_xpcnn(net, backend="torch")
    x = xpcnn.to_device(harness.to_float(images), "torch")
    y = xpcnn.to_device(labels, "torch")
    opt = optim.SGD(lr=harness.LR)
    return lambda: model.fit(x, y, epochs=1, batch_size=batch, optimizer=opt, verbose=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per count (default 5)")
    parser.add_argument("--patch", help="count a copy of this checkout with PATCH applied")
    args = parser.parse_args(argv)
    if args.patch:
        root, tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__))), tempfile.mkdtemp()
        for part in ("xpcnn", "benchmarks"):
            shutil.copytree(os.path.join(root, part), os.path.join(tree, part),
                            ignore=shutil.ignore_patterns("results"))
        subprocess.run(["git", "apply", os.path.abspath(args.patch)], cwd=tree, check=True)
        print(f"this checkout with {os.path.basename(args.patch)} applied", flush=True)
        script = os.path.join(tree, "benchmarks", "bench_ops.py")
        code = subprocess.run([sys.executable, script, "--steps", str(args.steps)]).returncode
        shutil.rmtree(tree, ignore_errors=True)
        return code
    harness.set_threads(1)
    env = harness.environment(1, "torch", "cpu")
    print(f"{env['date']}  torch {env['torch']}, numpy {env['numpy']}, xpcnn {env['xpcnn']}, commit {env['commit']}; "
          f"counted with torch.profiler over {args.steps} steps after 2 warm-up steps\n")
    images, labels = harness.load_images()
    import xpcnn

    print("1. operations / host reads per step")
    print(f"{'':<28} {'xpcnn ops':>21}")
    print(f"{'scenario':<28} {'CPU forms':>10} {'GPU forms':>10} {'reads':>5}   {'PyTorch ops':>11} {'reads':>5}")
    default = None
    for kind, net, batch in SCENARIOS:
        name = f"{kind} {net}-net b{batch}"
        try:
            step = harness.torch_twin(kind, net, batch, images, labels).step
            cpu = harness.count_ops(step, steps=args.steps)
            with xpcnn.fewest_operations():  # built inside too: a container picks its fused forms at build
                mine = harness.count_ops(harness.torch_twin(kind, net, batch, images, labels).step, steps=args.steps)
            model = harness.build_xpcnn(net, backend="numpy")
            theirs = harness.count_ops(harness.torch_workload(harness.torch_from_xpcnn(model), images, labels, batch,
                                                              train=kind == "train").step, steps=args.steps)
        except harness.Unavailable as e:
            print(f"{name:<28} not counted: {e}")
            continue
        reads = max(cpu.host_reads_per_step, mine.host_reads_per_step)
        print(f"{name:<28} {cpu.ops_per_step:>10.3g} {mine.ops_per_step:>10.3g} {reads:>5.3g}   "
              f"{theirs.ops_per_step:>11.3g} {theirs.host_reads_per_step:>5.3g}")
        if (kind, net, batch) == ("train", "default", 64):
            default = (mine, cpu, theirs)
    fit = harness.count_ops(fit_step("default", 64), steps=1, warmup=1)
    with xpcnn.fewest_operations():
        fit_gpu = harness.count_ops(fit_step("default", 64), steps=1, warmup=1)
    per_step, per_step_gpu = (harness.OpCount(10, f.ops, f.host_reads, f.by_site, f.reads_by_site)
                              for f in (fit, fit_gpu))
    print(f"{'fit default-net b64':<28} {per_step.ops_per_step:>10.3g} {per_step_gpu.ops_per_step:>10.3g} "
          f"{per_step.host_reads_per_step:>5.3g}   (one epoch of 10 batches per call, per batch)")
    if default is not None:
        mine, cpu, theirs = default
        def verdict(value, target, what):
            return f"{what} met" if value <= target else f"{what} NOT met (by {value - target:.3g})"

        print(f"\ndefault network, batch 64, train_step (GPU forms): {mine.ops_per_step:.3g} operations and "
              f"{mine.host_reads_per_step:.3g} host reads per step; target <= {TARGET_OPS} and <= {TARGET_READS}: "
              f"{verdict(mine.ops_per_step, TARGET_OPS, 'operations')}, "
              f"{verdict(mine.host_reads_per_step, TARGET_READS, 'host reads')}")
        print("\n2. xpcnn train_step, default network, batch 64, GPU forms: every operation per step")
        print(harness.format_breakdown(mine))
        print("\n   the same with the CPU forms (as it runs on this machine)")
        print(harness.format_breakdown(cpu))
        print("\n   model.fit, GPU forms (per batch, one epoch of 10 batches per call)")
        print(harness.format_breakdown(per_step_gpu))
        print("\n   PyTorch's loop, same network and batch")
        print(harness.format_breakdown(theirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
