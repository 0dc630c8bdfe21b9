"""Where a training step's time goes, layer by layer: xpcnn on NumPy, beside PyTorch's whole step.

    python benchmarks/bench_profile.py [--threads 2] [--steps 30]     # ~1 minute

For the deep, default and resnet8 networks at batch 64 (benchmarks/harness.py: mnist5k,
float32, SGD lr 0.05): after a warm-up, ``--steps`` calls of ``model.train_step`` with a clock
around each layer the model runs (``forward`` / ``backward`` of ``model.chains[""]``: a residual
block counts as one layer; a pair the model runs fused, :mod:`xpcnn.layers.fused`, is one row),
then the same number of PyTorch steps. Each figure is the median over the steps, in
milliseconds; "rest" is the step minus its layers (loss, optimizer
update, checks), per step. The clocks themselves cost a few microseconds per layer.
"""

from __future__ import annotations

import collections
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # as bench_train.py

from benchmarks import harness

NETS = ("deep", "default", "resnet8")  # --nets may add "notebook"


def timed(layer, method: str, name: str, times: dict):
    """Wrap ``layer.<method>`` (on the instance) so each call adds its duration to ``times[name]``."""
    original = getattr(layer, method)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[name] += time.perf_counter() - t0
    setattr(layer, method, wrapper)


def profile(net: str, batch: int, steps: int, images, labels) -> tuple[list, float, float, float | None]:
    """(rows of (layer label, forward ms, backward ms), rest ms, xpcnn step ms, PyTorch step ms or None)."""
    model = harness.build_xpcnn(net)
    work = harness.xpcnn_workload(model, images, labels, batch)
    labels_of = []
    per_step = collections.defaultdict(list)
    times = collections.defaultdict(float)
    # What the model runs: its layers with the fused forms swapped in at build (one row each).
    for i, layer in enumerate(model.chains[""]):
        label = f"{i:>2} {type(layer).__name__}"
        labels_of.append(label)
        for method, kind in (("forward", "fwd"), ("backward", "bwd")):
            timed(layer, method, (label, kind), times)
    for _ in range(3):
        work.step()
    step_ms, rest_ms = [], []
    for _ in range(steps):
        times.clear()
        t0 = time.perf_counter()
        work.step()
        step_ms.append((time.perf_counter() - t0) * 1e3)
        rest_ms.append(step_ms[-1] - sum(times.values()) * 1e3)
        for key, value in times.items():
            per_step[key].append(value * 1e3)
    rows = [(label, statistics.median(per_step[(label, "fwd")] or [0.0]),
             statistics.median(per_step[(label, "bwd")] or [0.0])) for label in labels_of]
    torch_ms = None
    try:
        theirs = harness.torch_workload(harness.torch_from_xpcnn(harness.build_xpcnn(net)), images, labels, batch)
    except (harness.Unavailable, ImportError) as e:
        print(f"note: {net}: no PyTorch step ({e})")
    else:
        for _ in range(3):
            theirs.step()
        samples = []
        for _ in range(steps):
            t0 = time.perf_counter()
            theirs.step()
            samples.append((time.perf_counter() - t0) * 1e3)
        torch_ms = statistics.median(samples)
    return rows, statistics.median(rest_ms), statistics.median(step_ms), torch_ms


def main(argv=None) -> int:
    def add_arguments(parser):
        parser.add_argument("--steps", type=int, default=30)
        parser.add_argument("--batch", type=int, default=64)
        parser.add_argument("--nets", nargs="+", default=list(NETS), choices=harness.NETS)

    args, env, load = harness.start_kernel_bench(
        __doc__, argv, with_torch=True, add_arguments=add_arguments,
        header_tail=lambda args: f"; median of {args.steps} steps, batch {args.batch}")
    images, labels = harness.load_images()
    for net in args.nets:
        try:
            rows, rest, step, torch_ms = profile(net, args.batch, args.steps, images, labels)
        except harness.Unavailable as e:
            print(f"\n{net}-net: not profiled ({e})")
            continue
        print(f"\n{net}-net, batch {args.batch}: ms per step (median)")
        print(f"{'layer':<22} {'forward':>8} {'backward':>9}")
        for label, fwd, bwd in rows:
            print(f"{label:<22} {fwd:>8.2f} {bwd:>9.2f}")
        print(f"{'rest of the step':<22} {rest:>18.2f}")
        print(f"{'xpcnn step':<22} {step:>18.2f}")
        if torch_ms is not None:
            print(f"{'PyTorch step':<22} {torch_ms:>18.2f}   (xpcnn / PyTorch images/s: {torch_ms / step:.2f}x)")
    harness.print_load(load, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
