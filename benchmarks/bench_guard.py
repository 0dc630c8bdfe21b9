"""The NaN guard of a training step in its two forms side by side (xpcnn.training._guard): one
sum over the flattened, concatenated gradients (the GPU form: 3 operations) against a sum per
gradient added up (the CPU form: no copies). The measurement behind the CPU choice.

    python benchmarks/bench_guard.py [--threads 2]     # ~20 seconds

Per network and batch: microseconds per guard on NumPy (float32, the gradients of one real
training step), the best of 5 rounds of many calls, the two forms alternating by round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # as bench_train.py

from benchmarks import harness  # noqa: E402

CASES = [("notebook", 1), ("notebook", 64), ("default", 64), ("deep", 64), ("resnet8", 64)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    harness.set_threads(args.threads, torch_too=False)
    env = harness.environment(args.threads, "numpy", None)
    print(f"{env['date']}  {env['cpu']} ({env['cpu_count']} CPUs), threads {args.threads}, numpy {env['numpy']}, "
          f"commit {env['commit']}")
    import numpy as np

    import xpcnn
    from xpcnn import optim, training

    load = harness.LoadMonitor()
    images, labels = harness.load_images(n=64)
    print("\nus per guard, float32 on NumPy, best of 5 rounds; ratio > 1: the CPU form (sums) faster")
    print(f"{'network, batch':<20} {'gradients':>9} {'concat (GPU form)':>18} {'sums (CPU form)':>16} {'ratio':>7}")
    for net, batch in CASES:
        model = harness.build_xpcnn(net, backend="numpy")
        x, y = harness.to_float(images)[:batch], labels[:batch]
        model.train_step(x, y, optim.SGD(lr=harness.LR))
        grads = [g for layer in model.layers for g in layer.grads.values()]
        loss = np.asarray(1.0, dtype=np.float32)
        calls = 2000 if batch == 1 or net == "notebook" else 300
        best = {True: float("inf"), False: float("inf")}
        for _ in range(5):
            for fewest in (True, False):
                with xpcnn.fewest_operations(fewest):
                    training._guard(np, loss, grads)
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        training._guard(np, loss, grads)
                    best[fewest] = min(best[fewest], (time.perf_counter() - t0) / calls * 1e6)
        print(f"{f'{net}-net b{batch}':<20} {len(grads):>9} {best[True]:>18.1f} {best[False]:>16.1f} "
              f"{best[True] / best[False]:>6.2f}x")
    if (line := load.summary(env["cpu_count"])) is not None:
        print(f"\n{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
