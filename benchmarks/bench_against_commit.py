"""This checkout's ``train_step`` against an earlier commit's, or against itself with a patch
applied (a form taken out: ``benchmarks/without/``), side by side in one run.

    python benchmarks/bench_against_commit.py 9d0182e            # an earlier commit's code
    python benchmarks/bench_against_commit.py HEAD~5 --threads 1
    python benchmarks/bench_against_commit.py --patch benchmarks/without/max_pool_taps.patch

The earlier commit is checked out with ``git worktree`` into a temporary directory (with
``--patch``, this checkout's xpcnn/ is copied there and the patch applied); each contender
runs in its own fresh process (so the two xpcnn packages never meet), on the notebook network
(batch 1 and 64) and the default network (batch 64) unless ``--workloads`` says otherwise
(``resnet8:64``, ``deep:64`` ...), float32, SGD, same weights seed. Each process times every
step and keeps the median step; processes alternate round by round and the median over rounds
is reported, so a change of machine speed between days (which moves absolute figures by tens
of percent) does not show up as a regression or a gain. ``--threads 1 --clock cpu`` times each
step in the process's CPU time, which the other processes of a shared machine barely move.
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
from xpcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
if hasattr(xpcnn, "keep_freed_memory"):
    xpcnn.keep_freed_memory()
threadpoolctl.threadpool_limits(int(sys.argv[2]))
deep = lambda: xpcnn.Sequential([Conv2D(32, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(64, 3, padding=1), ReLU(),
                                 MaxPool2D(2), Flatten(), Dense(10)])
nets = {"notebook": zoo.notebook_cnn, "default": zoo.default_cnn, "resnet8": zoo.resnet8, "deep": deep}
results = {}
for net, n in json.loads(sys.argv[3]):
    model = nets[net]().build((1, 28, 28), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    opt = optim.SGD(0.05)
    steps = 2000 if n == 1 else 60 if net in ("notebook", "default") else 20
    for _ in range(steps // 4):
        model.train_step(x, y, opt)
    times = []
    clock = time.process_time if sys.argv[4] == "cpu" else time.perf_counter
    for _ in range(steps):
        start = clock()
        model.train_step(x, y, opt)
        times.append(clock() - start)
    # The median step, not the mean: a step the shared host delays does not move it.
    results[f"{net} b{n}"] = sorted(times)[steps // 2]
print(json.dumps(results))
"""


def run_child(tree: str, threads: int, workloads, clock: str) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, tree, str(threads), json.dumps(workloads), clock],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", nargs="?", help="the earlier commit to compare with (any git revision)")
    parser.add_argument("--patch", help="compare with this checkout with PATCH applied instead of a commit")
    parser.add_argument("--workloads", nargs="+", default=["notebook:1", "notebook:64", "default:64"],
                        help="NET:BATCH, NET one of notebook, default, resnet8, deep")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the process's CPU time, which other processes barely move (use with --threads 1)")
    args = parser.parse_args()
    if (args.commit is None) == (args.patch is None):
        parser.error("give a commit or --patch, not both")
    workloads = [(net, int(batch)) for net, batch in (w.split(":") for w in args.workloads)]
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="xpcnn-earlier-")
    tree = os.path.join(tmp, "tree")
    if args.patch:
        rev = f"with {os.path.basename(args.patch)}"
        shutil.copytree(os.path.join(ROOT, "xpcnn"), os.path.join(tree, "xpcnn"))
        subprocess.run(["git", "apply", os.path.abspath(args.patch)], cwd=tree, check=True)
    else:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.commit], check=True,
                             capture_output=True, text=True).stdout.strip()
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", tree, rev], check=True)
    try:
        times: dict[str, dict[str, list[float]]] = {"this checkout": {}, rev: {}}
        for r in range(args.rounds):
            order = [("this checkout", ROOT), (rev, tree)]
            for label, path in order if r % 2 == 0 else order[::-1]:
                for key, seconds in run_child(path, args.threads, workloads, args.clock).items():
                    times[label].setdefault(key, []).append(seconds)
    finally:
        if not args.patch:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"train_step: this checkout ({head} with any local changes) vs {rev}; {args.threads} thread(s), "
          f"{args.rounds} alternating rounds of fresh processes, median step time ({args.clock} clock); load average "
          f"{load:.2f}")
    width = max(16, len(rev))
    print(f"{'workload':<16} {'this checkout':>16} {rev:>{width}} {'speed ratio':>12}")
    for key in times["this checkout"]:
        ours, theirs = statistics.median(times["this checkout"][key]), statistics.median(times[rev][key])
        print(f"{key:<16} {ours * 1e6:>13.0f} us {theirs * 1e6:>{width - 3}.0f} us {theirs / ours:>11.2f}x")
    print("speed ratio > 1: this checkout is faster")


if __name__ == "__main__":
    main()
