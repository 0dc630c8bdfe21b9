"""Data-parallel training throughput over MPI, and the measured inputs of the cost model in
docs/distributed.md.

    python benchmarks/bench_distributed.py                    # ~3 minutes on 2 idle cores
    python benchmarks/bench_distributed.py --quick            # ~1 minute, for a smoke test
    python benchmarks/bench_distributed.py --ranks 4          # on a machine with 4+ cores

Contenders (each a fresh set of processes, every one limited to 1 BLAS thread):

    1 process   ``model.fit(x, y, batch_size=128)`` in one plain Python process
    K ranks     ``mpiexec -n K python ... model.fit(x, y, batch_size=128, distributed=True)``

Both train the deep network of benchmarks/bench_train.py (Conv2D(32, 3x3, pad 1) -> ReLU ->
MaxPool2D(2) -> Conv2D(64, 3x3, pad 1) -> ReLU -> MaxPool2D(2) -> Flatten -> Dense(10); float32,
NumPy backend, SGD lr 0.05) on 4096 random 28x28 images (throughput does not depend on the
pixels) at global batch 128: after one warm-up epoch on 1024 images, ``--epochs`` epochs are
timed end to end (shuffling, batch copies, the allreduce, the optimizer; the ranks leave fit
together). The contenders alternate, ``--repeats`` runs each; the table gives the median and
the range of images/s, and the ratio of the medians.

Cost-model inputs, measured in the same run:

* compute: seconds per training step of one process at per-rank batch b (b = 2 ... 256),
  ``model.train_step`` repeated for ``--round-seconds`` per size after a warm-up, the fastest
  repetition (the least disturbed by other processes);
* allreduce: seconds per gradient allreduce between the K ranks here (the buffer of one step:
  every parameter plus loss and correct count, float32), the fastest of 200.

From those the script prints the model's predicted speed-up for N ranks at global batch B:
``T1(B) / (T1(B/N) + t_allreduce(N))`` with ``T1(b) = a + c b`` fitted to the measured step
times (a per-step overhead and a per-image cost), and for N machines on a network an allreduce
time ``2 (N-1) alpha + 2 (N-1)/N * S / beta`` (ring allreduce; S the gradient bytes, alpha the
per-message latency, beta the link bandwidth; alpha and beta are the assumptions printed with
the table, not measurements).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
N_IMAGES, WARMUP_IMAGES, GLOBAL_BATCH, LR = 4096, 1024, 128, 0.05
STEP_BATCHES = (2, 4, 8, 16, 32, 64, 128, 256)
# Assumed network for machines that are not on one board (printed with the predictions).
NETWORKS = {"10 GbE": (50e-6, 1.25e9), "100 Gb/s InfiniBand": (2e-6, 12.5e9)}
# An assumed GPU compute cost per image, to show how the break-even batch moves (not measured).
GPU_SECONDS_PER_IMAGE = 2e-6


# ---------------------------------------------------------------- the worker (every rank)


def deep_network():
    import xpcnn
    from xpcnn import layers

    return xpcnn.Sequential([
        layers.Conv2D(32, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
        layers.Conv2D(64, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
        layers.Flatten(), layers.Dense(10),
    ]).build((1, 28, 28), seed=0, dtype="float32")


def images(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def worker(args) -> None:
    import numpy as np
    from threadpoolctl import threadpool_limits

    import xpcnn
    from xpcnn import optim
    from xpcnn.distributed import mpi

    xpcnn.keep_freed_memory()
    threadpool_limits(1)
    x, y = images(N_IMAGES)
    model = deep_network()
    distributed = mpi.size() > 1
    model.fit(x[:WARMUP_IMAGES], y[:WARMUP_IMAGES], batch_size=GLOBAL_BATCH, optimizer=optim.SGD(LR), verbose=0,
              distributed=distributed)
    comm = mpi.communicator(distributed)
    if comm is not None:
        comm.comm.Barrier()
    start = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, batch_size=GLOBAL_BATCH, optimizer=optim.SGD(LR), verbose=0,
              distributed=distributed)
    seconds = time.perf_counter() - start
    report = {"ranks": mpi.size(), "images_per_s": args.epochs * N_IMAGES / seconds, "seconds": seconds}

    parameters = sum(int(np.prod(w.shape)) for w in model.get_weights())
    report["parameters"] = parameters
    if comm is not None:
        flat = np.zeros(parameters + 2, dtype=np.float32)
        times = []
        for _ in range(220):
            comm.comm.Barrier()
            t = time.perf_counter()
            comm.allreduce_sum(flat, model.backend)
            times.append(time.perf_counter() - t)
        report["allreduce_s"] = min(times[20:])
    elif args.step_times:
        report["step_s"] = step_times(model, x, y, args.round_seconds)
    if mpi.rank() == 0:
        print("RESULT " + json.dumps(report), flush=True)


def step_times(model, x, y, round_seconds: float) -> dict[str, float]:
    """Seconds of one ``train_step`` at each batch size (one process, 1 thread): the fastest of
    the repetitions, the one least disturbed by other processes on a shared machine."""
    from xpcnn import optim

    opt = optim.SGD(LR)
    out = {}
    for b in STEP_BATCHES:
        xb, yb = x[:b], y[:b]
        for _ in range(3):
            model.train_step(xb, yb, opt)
        times = []
        deadline = time.perf_counter() + round_seconds
        while time.perf_counter() < deadline or len(times) < 5:
            t = time.perf_counter()
            model.train_step(xb, yb, opt)
            times.append(time.perf_counter() - t)
        out[str(b)] = min(times)
    return out


# ---------------------------------------------------------------- the parent


def run(command: list[str]) -> dict:
    env = {**os.environ, **{v: "1" for v in THREAD_VARS}, "PYTHONPATH": ROOT}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or len(lines) != 1:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[0][len("RESULT "):])


def busy_cpus(seconds: float = 1.0) -> float:
    """CPUs kept busy by everything on the machine over ``seconds`` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))


def linear_fit(step_s: dict[str, float]) -> tuple[float, float]:
    """(a, c) of ``T1(b) = a + c * b`` fitted to the measured step times, each point weighted by
    1/T1(b) (relative errors count the same at every batch size)."""
    import numpy as np

    b = np.array([int(k) for k in step_s], dtype=float)
    t = np.array(list(step_s.values()))
    w = 1 / t
    (a, c), *_ = np.linalg.lstsq(np.stack([w, w * b], axis=1), w * t, rcond=None)
    return max(float(a), 0.0), float(c)


def speedup(a: float, c: float, batch: float, ranks: int, allreduce_s: float) -> float:
    """T1(B) / (T1(B / N) + t_allreduce) with the linear step time."""
    return (a + c * batch) / (a + c * batch / ranks + allreduce_s)


def batch_for_efficiency(a: float, c: float, ranks: int, allreduce_s: float, efficiency: float) -> float:
    """The global batch from which the speed-up reaches ``efficiency * N`` (solved from
    a + cB >= e N (a + cB/N + t_allreduce))."""
    return ((efficiency * ranks - 1) * a + efficiency * ranks * allreduce_s) / (c * (1 - efficiency))


def ring_allreduce_s(ranks: int, nbytes: int, alpha: float, beta: float) -> float:
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes / beta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks of the distributed contender (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per contender, alternating (default 5)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of 4096 images per run (default 2)")
    parser.add_argument("--round-seconds", type=float, default=1.0, help="timing per step size (default 1)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 1 epoch, 0.3 s per step size")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--step-times", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs, args.round_seconds = 2, 1, 0.3
    if args.worker:
        worker(args)
        return 0

    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if mpiexec is None:
        parser.error("mpiexec not found: pip install -e '.[mpi]'")
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--epochs", str(args.epochs),
          "--round-seconds", str(args.round_seconds)]
    contenders = {"1 process": me, f"{args.ranks} ranks": [mpiexec, "-n", str(args.ranks), *me]}
    import numpy as np

    utc = datetime.timezone(datetime.timedelta(0))  # datetime.UTC is Python 3.11+
    now = datetime.datetime.now(utc).isoformat(timespec="seconds")
    print(f"{now}  {platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), numpy {np.__version__}, "
          f"Python {platform.python_version()}, 1 BLAS thread per process")
    before = busy_cpus()
    print(f"CPUs busy before the run (other processes): {before:.2f}")
    print(f"deep network, float32, NumPy backend, global batch {GLOBAL_BATCH}, {args.epochs} x {N_IMAGES} images "
          f"per run, {args.repeats} alternating runs per contender\n")

    results: dict[str, list[dict]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            command = contenders[name] + (["--step-times"] if name == "1 process" and r == 0 else [])
            print(f"  run {r + 1}/{args.repeats}: {name} ...", file=sys.stderr, flush=True)
            results[name].append(run(command))
    after = busy_cpus()

    print(f"{'contender':<12} {'images/s (median)':>18} {'min..max':>20}")
    medians = {}
    for name, runs in results.items():
        speeds = [run_["images_per_s"] for run_ in runs]
        medians[name] = statistics.median(speeds)
        print(f"{name:<12} {medians[name]:>18.1f} {f'{min(speeds):.1f}..{max(speeds):.1f}':>20}")
    dist = names[1]
    ratio = medians[dist] / medians["1 process"]
    print(f"\nthroughput ratio {dist} / 1 process: {ratio:.2f}x (target >= 1.6x for 2 ranks)")
    print(f"CPUs busy right after the run: {after:.2f} (the run itself keeps up to {args.ranks} busy)")

    step_s = results["1 process"][0]["step_s"]
    parameters = results[dist][0]["parameters"]
    nbytes = 4 * (parameters + 2)
    allreduce_s = min(run_["allreduce_s"] for run_ in results[dist])
    print(f"\ncost-model inputs (measured here): {parameters:,d} parameters -> {nbytes:,d} bytes per gradient "
          f"allreduce; allreduce between {args.ranks} ranks on this machine {allreduce_s * 1e3:.3f} ms")
    print("one-process train_step time at batch b (1 thread, fastest repetition):")
    print("  " + "  ".join(f"b={b}: {step_s[str(b)] * 1e3:.2f} ms" for b in STEP_BATCHES))
    print("  " + "  ".join(f"b={b}: {step_s[str(b)] / b * 1e3:.3f} ms/img" for b in STEP_BATCHES))

    a, c = linear_fit(step_s)
    print(f"  fitted T1(b) = a + c b: a = {a * 1e3:.2f} ms per step, c = {c * 1e3:.3f} ms per image")
    half = GLOBAL_BATCH // args.ranks
    here = step_s[str(GLOBAL_BATCH)] / (step_s[str(half)] + allreduce_s)
    fitted = speedup(a, c, GLOBAL_BATCH, args.ranks, allreduce_s)
    print(f"\nmodel for {args.ranks} ranks here at batch {GLOBAL_BATCH}: "
          f"T1({GLOBAL_BATCH}) / (T1({half}) + allreduce) = {here:.2f}x from the measured step times, "
          f"{fitted:.2f}x from the fit (measured above: {ratio:.2f}x)")

    batches = (16, 32, 64, 128, 256, 1024)
    for label, (alpha, beta) in NETWORKS.items():
        print(f"\npredicted speed-up for N machines, 1 core each, on {label} (assumed alpha {alpha * 1e6:g} us, "
              f"beta {beta / 1e9:g} GB/s; ring allreduce of {nbytes:,d} bytes; fitted T1):")
        print(f"  {'N':>3} {'allreduce ms':>13} " + " ".join(f"{'B=' + str(b):>8}" for b in batches)
              + f" {'B* (x1)':>9} {'B (80%)':>9}")
        for n in (2, 4, 8, 16):
            t_ar = ring_allreduce_s(n, nbytes, alpha, beta)
            cells = " ".join(f"{speedup(a, c, b, n, t_ar):>7.2f}x" for b in batches)
            print(f"  {n:>3} {t_ar * 1e3:>13.3f} {cells} {t_ar / (c * (1 - 1 / n)):>9.1f}"
                  f" {batch_for_efficiency(a, c, n, t_ar, 0.8):>9.0f}")

    print(f"\nB* with an assumed GPU compute c = {GPU_SECONDS_PER_IMAGE * 1e6:g} us/image and no per-step overhead "
          "(not measured):")
    for label, (alpha, beta) in NETWORKS.items():
        cells = [f"N={n}: {ring_allreduce_s(n, nbytes, alpha, beta) / (GPU_SECONDS_PER_IMAGE * (1 - 1 / n)):.0f}"
                 for n in (2, 4, 8, 16)]
        print(f"  {label}: " + ", ".join(cells))
    print("\nB* (x1): the global batch above which N machines beat one (the allreduce costs less than the compute "
          "it saves: B > t_allreduce / (c (1 - 1/N))). B (80%): the global batch from which the speed-up is at least "
          "0.8 N (the per-step overhead a, paid on every machine, and the allreduce both count against it).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
