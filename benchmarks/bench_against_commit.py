"""This checkout's ``train_step`` against an earlier commit's, side by side in one run.

    python benchmarks/bench_against_commit.py 9d0182e            # the previous round's code
    python benchmarks/bench_against_commit.py HEAD~5 --threads 1

The earlier commit is checked out with ``git worktree`` into a temporary directory; each
contender runs in its own fresh process (so the two xpcnn packages never meet), on the
notebook network (batch 1 and 64) and the default network (batch 64), float32, SGD, same
weights seed. Each process times every step and keeps the median step; processes alternate
round by round and the median over rounds is reported, so a change of machine speed between
days (which moves absolute figures by tens of percent) does not show up as a regression or a
gain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import threadpoolctl
import xpcnn
from xpcnn import optim, zoo
if hasattr(xpcnn, "keep_freed_memory"):
    xpcnn.keep_freed_memory()
threadpoolctl.threadpool_limits(int(sys.argv[2]))
results = {}
for net, n in (("notebook", 1), ("notebook", 64), ("default", 64)):
    model = (zoo.notebook_cnn() if net == "notebook" else zoo.default_cnn()).build((1, 28, 28), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    opt = optim.SGD(0.05)
    steps = 2000 if n == 1 else 60
    for _ in range(steps // 4):
        model.train_step(x, y, opt)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_step(x, y, opt)
        times.append(time.perf_counter() - start)
    # The median step, not the mean: a step the shared host delays does not move it.
    results[f"{net} b{n}"] = sorted(times)[steps // 2]
print(json.dumps(results))
"""


def run_child(tree: str, threads: int) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, tree, str(threads)], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the earlier commit to compare with (any git revision)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.commit], check=True, capture_output=True,
                         text=True).stdout.strip()
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="xpcnn-earlier-")
    tree = os.path.join(tmp, "tree")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", tree, rev], check=True)
    try:
        times: dict[str, dict[str, list[float]]] = {"this checkout": {}, rev: {}}
        for r in range(args.rounds):
            order = [("this checkout", ROOT), (rev, tree)]
            for label, path in order if r % 2 == 0 else order[::-1]:
                for key, seconds in run_child(path, args.threads).items():
                    times[label].setdefault(key, []).append(seconds)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"train_step: this checkout ({head} with any local changes) vs {rev}; {args.threads} thread(s), "
          f"{args.rounds} alternating rounds of fresh processes, median step time; load average {load:.2f}")
    print(f"{'workload':<16} {'this checkout':>16} {rev:>16} {'speed ratio':>12}")
    for key in times["this checkout"]:
        ours, theirs = statistics.median(times["this checkout"][key]), statistics.median(times[rev][key])
        print(f"{key:<16} {ours * 1e6:>13.0f} us {theirs * 1e6:>13.0f} us {theirs / ours:>11.2f}x")
    print("speed ratio > 1: this checkout is faster")


if __name__ == "__main__":
    main()
