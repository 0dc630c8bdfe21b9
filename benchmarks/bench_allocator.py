"""Keeping freed memory (``XPCNN_MALLOC=keep``) against glibc's default allocator settings.

    python benchmarks/bench_allocator.py [--repeats 5] [--seconds 3] [--batch 64] [--threads 1] [--nets ...]

Trains each of ``--nets`` (default both): the notebook network (Conv2D(16, 3, no bias) ->
AvgPool2D(2) -> Flatten -> Dense(10)) and the default network (``xpcnn.zoo.default_cnn``: two
conv / ReLU / max-pool stages, whose activations are larger), SGD, float32, NumPy backend, on
28x28 images at the given batch size, each run in a fresh
Python process: ``XPCNN_MALLOC=keep`` applies :func:`xpcnn.keep_freed_memory` at import,
``XPCNN_MALLOC=default`` leaves malloc as glibc configures it. After three warm-up steps a child
times steps for ``--seconds`` and counts the minor page faults they cost (``getrusage``). The
two settings alternate, ``--repeats`` children each; the table gives the median of the children
and the range. The result committed in ``benchmarks/results/allocator.txt`` comes from the
command above with its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness

ROOT = harness.ROOT

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

CHILD = """
import json, resource, sys, time
import numpy as np
import xpcnn
from xpcnn import layers, optim, zoo

batch, seconds, net = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
x = rng.random((batch, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, batch)
if net == "notebook":
    model = xpcnn.Sequential([layers.Conv2D(16, 3, bias=False), layers.AvgPool2D(2), layers.Flatten(),
                              layers.Dense(10)])
else:
    model = zoo.default_cnn()
model.build((1, 28, 28), seed=0, backend="numpy")
sgd = optim.SGD(lr=0.01)
for _ in range(3):
    model.train_step(x, y, sgd)
faults0, steps, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, 0, time.perf_counter()
while steps < 10 or time.perf_counter() - t0 < seconds:
    model.train_step(x, y, sgd)
    steps += 1
elapsed = time.perf_counter() - t0
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
print(json.dumps({"applied": xpcnn._allocator._applied, "images_per_s": steps * batch / elapsed,
                  "faults_per_step": faults / steps, "steps": steps}))
"""


def child(mode: str, net: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "XPCNN_MALLOC": mode, "XPCNN_BACKEND": "numpy"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env.update({name: str(args.threads) for name in THREAD_VARS})
    proc = subprocess.run([sys.executable, "-c", CHILD, str(args.batch), str(args.seconds), net], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"bench_allocator: the {mode} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="children per setting (default 5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed training per child (default 3)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads per child (default 1)")
    parser.add_argument("--nets", nargs="+", default=["notebook", "default"], choices=["notebook", "default"])
    args = parser.parse_args(argv)

    import numpy as np

    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    for i, net in enumerate(args.nets):
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict]] = {"keep": [], "default": []}
        for _ in range(args.repeats):
            for mode in runs:  # alternate, so a change in the machine's load hits both settings alike
                runs[mode].append(child(mode, net, args))
        if not runs["keep"][0]["applied"]:
            print("note: keep_freed_memory() did not apply here (not glibc Linux): both rows measure the default")
        print(("\n" if i else "") + f"bench_allocator: {net} network, training at batch {args.batch}, float32, "
              f"NumPy backend, {args.threads} thread(s), {args.repeats} fresh processes per setting, "
              f"{args.seconds:g} s each")
        print(f"machine: {harness.cpu_model()}, {os.cpu_count()} CPUs, load average {load_before:.2f} before and "
              f"{os.getloadavg()[0]:.2f} after (other processes share the CPUs: compare the two rows, not runs); "
              f"Python {platform.python_version()}, NumPy {np.__version__}, {glibc or 'libc unknown'}")
        print()
        print(f"{'XPCNN_MALLOC':<14}{'images/s (median)':>19}{'range':>19}{'minor faults/step':>19}{'range':>17}")
        medians = {}
        for mode, rows in runs.items():
            speed = [r["images_per_s"] for r in rows]
            faults = [r["faults_per_step"] for r in rows]
            medians[mode] = statistics.median(speed)
            print(f"{mode:<14}{medians[mode]:>19,.0f}{f'{min(speed):,.0f}-{max(speed):,.0f}':>19}"
                  f"{statistics.median(faults):>19,.0f}{f'{min(faults):,.0f}-{max(faults):,.0f}':>17}")
        print()
        print(f"keep / default: {medians['keep'] / medians['default']:.2f}x images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
