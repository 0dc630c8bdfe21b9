"""Inference speed side by side: xpcnn's ``predict`` (NumPy) now and at an earlier commit,
onnxruntime on the exported graph, and PyTorch (``interop.to_torch``, eval, no_grad).

    python benchmarks/bench_inference.py                  # against 0614e3b, before issue 22
    python benchmarks/bench_inference.py --before HEAD~3 --rounds 5
    python benchmarks/bench_inference.py --patch benchmarks/without/inference_slices.patch

Each contender runs in its own process (the two xpcnn packages never meet; the earlier commit
is checked out with ``git worktree``; with ``--patch``, this checkout's xpcnn/ is copied and
the patch applied instead, to measure what one form is worth), with one thread (BLAS, onnxruntime's and PyTorch's
pools), timed in the process's CPU time so the other processes of a shared machine barely move
it. The processes take turns workload by workload for ``--rounds`` rounds; each turn times
``--calls`` calls of softmax probabilities for one batch (after one warm-up call) and keeps the
median, and the median over rounds is reported, as images per second and ratios. Every
contender runs the same float32 weights (``build(seed=0)``) on the same images.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import LoadMonitor, environment, print_load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import threadpoolctl
import xpcnn
from xpcnn import zoo
threadpoolctl.threadpool_limits(1)
kind = sys.argv[2]
rng = np.random.default_rng(0)
images = rng.random((256, 1, 28, 28), dtype=np.float32)
runners = {}

def runner(net):
    model = zoo.get(net).build((1, 28, 28), seed=0)
    if kind == "xpcnn":
        return lambda x: xpcnn.to_numpy(model.predict(x))
    if kind == "onnxruntime":
        import onnxruntime
        from xpcnn.export import to_onnx
        path = os.path.join(tempfile.mkdtemp(), net + ".onnx")
        to_onnx(model, path, output="probabilities")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input": x})[0]
    import torch
    from xpcnn import interop
    torch.set_num_threads(1)
    module = interop.to_torch(model).eval()
    def run(x):
        with torch.no_grad():
            return torch.softmax(module(torch.from_numpy(x)), dim=1).numpy()
    return run

print("ready", flush=True)
for line in sys.stdin:
    net, batch, calls = json.loads(line)
    if net not in runners:
        runners[net] = runner(net)
    x = images[:batch]
    out = runners[net](x)
    times = []
    for _ in range(calls):
        start = time.process_time()
        runners[net](x)
        times.append(time.process_time() - start)
    print(json.dumps([sorted(times)[len(times) // 2], float(out[:4].sum())]), flush=True)
"""

WORKLOADS = [("default", 1), ("default", 256), ("resnet8", 1), ("resnet8", 256)]


def calls_for(batch: int) -> int:
    return 200 if batch == 1 else 5


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="0614e3b", help="the earlier commit (default: before issue 22)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patch", help="compare with this checkout with PATCH applied instead of --before")
    args = parser.parse_args(argv)
    env = environment(1, "numpy", None)
    print(f"# bench_inference: {json.dumps(env)}")
    tmp = tempfile.mkdtemp()
    before = os.path.join(tmp, "before")
    if args.patch:
        args.before = os.path.basename(args.patch)
        shutil.copytree(os.path.join(ROOT, "xpcnn"), os.path.join(before, "xpcnn"))
        subprocess.run(["git", "apply", os.path.abspath(args.patch)], cwd=before, check=True)
    else:
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", before, args.before], check=True,
                       capture_output=True)
    contenders = {"xpcnn": ("xpcnn", ROOT), f"xpcnn@{args.before}": ("xpcnn", before),
                  "onnxruntime": ("onnxruntime", ROOT), "torch": ("torch", ROOT)}
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen([sys.executable, "-c", CHILD, path, kind], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, env=child_env, cwd=tmp)
             for name, (kind, path) in contenders.items()}
    try:
        for proc in procs.values():
            assert proc.stdout.readline().strip() == "ready"
        load = LoadMonitor()
        seconds = {(name, w): [] for name in procs for w in WORKLOADS}
        checks = {}
        for _ in range(args.rounds):
            for net, batch in WORKLOADS:
                for name, proc in procs.items():
                    proc.stdin.write(json.dumps([net, batch, calls_for(batch)]) + "\n")
                    proc.stdin.flush()
                    median, check = json.loads(proc.stdout.readline())
                    seconds[name, (net, batch)].append(median)
                    checks.setdefault((net, batch), []).append(check)
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()  # a finished child's CPU time is ours (RUSAGE_CHILDREN), not the machine's other load
        if not args.patch:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", before], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    report(seconds, list(procs), args.before, checks)
    print_load(load, env)


def report(seconds: dict, names: list[str], before: str, checks: dict) -> None:
    old = f"xpcnn@{before}"
    print("\nimages/s (median over rounds of each turn's median call; 1 thread, process CPU time)")
    print(f"{'network':<8} {'batch':>5} " + " ".join(f"{n:>{max(16, len(n))}}" for n in names)
          + f" {'xpcnn/old':>10} {'ort/old':>8} {'ort/xpcnn':>9} {'torch/xpcnn':>11}")
    for net, batch in WORKLOADS:
        rate = {n: batch / statistics.median(seconds[n, (net, batch)]) for n in names}
        agree = max(checks[net, batch]) - min(checks[net, batch])
        print(f"{net:<8} {batch:>5} " + " ".join(f"{rate[n]:>{max(16, len(n))}.1f}" for n in names)
              + f" {rate['xpcnn'] / rate[old]:>10.2f} {rate['onnxruntime'] / rate[old]:>8.2f}"
              + f" {rate['onnxruntime'] / rate['xpcnn']:>9.2f} {rate['torch'] / rate['xpcnn']:>11.2f}"
              + f"   (outputs agree to {agree:.1e})")


if __name__ == "__main__":
    main()
