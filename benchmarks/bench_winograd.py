"""Winograd F(2x2, 3x3) against im2col for 3x3 stride-1 convolutions: the measurements behind
the dispatch rules ``winograd_applicable`` (forward) and ``winograd_input_grad_applicable`` in
xpcnn/functional/winograd.py.

    python benchmarks/bench_winograd.py                  # ~5 minutes; --quick: ~1 minute
    python benchmarks/bench_winograd.py --backend cupy   # the same table for another backend
    python benchmarks/bench_winograd.py --threads 1 --clock cpu   # CPU time: robust on a busy machine
    python benchmarks/bench_winograd.py --network resnet8 --threads 2  # whole steps: rule vs im2col

1. Accuracy (float32 against float64, numpy): for F(2x2, 3x3), F(4x4, 3x3) and im2col, the
   worst ratio of |error| to the parity suite's float32 per-op bound (1e-5 + 1e-4 |ref|, <= 1
   passes) for y, grad_x and grad_weight, on small shapes like the tests' and on network-sized
   ones with He-scaled weights; the reference is im2col in float64.
2. Speed, float32, per shape (N, C -> O, H x W, padding 1): milliseconds per call of im2col and
   Winograd for the forward, the input gradient (im2col's is its full backward minus its weight
   gradient) and the weight gradient (each from its own forward's cache: im2col columns /
   transformed tiles), and of building the im2col columns alone: the fastest of --repeats
   rounds in which the contenders alternate (on a shared machine the least disturbed round is
   the best estimate of an algorithm's cost; with ``--clock cpu`` and one thread, the process's
   CPU time, which other processes barely move). The dispatch keeps im2col for the weight
   gradient (part 1: Winograd's float32 weight gradient is the least accurate), so a Winograd
   forward is charged for the columns the backward then builds. Each row says what the rule
   picks for the forward and the input gradient, and whether the measurement agrees; "step"
   is im2col throughout / the rule's choice, for one forward and backward of that layer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402

GRID = [(28, (16, 32, 64)), (14, (16, 32, 64, 128)), (7, (16, 32, 64, 128))]  # (H = W, channel counts)
BATCHES = (64,)
EXTRA = [  # (N, C, O, H, padding): the benchmark networks' 3x3 convolutions and batch 1
    (64, 1, 16, 28, 0), (64, 16, 32, 13, 0), (64, 1, 32, 28, 1),
    (1, 32, 32, 14, 1), (1, 64, 64, 14, 1), (1, 128, 128, 14, 1), (8, 128, 128, 14, 1),
]
ACCURACY_SHAPES = [  # (N, C, O, H, padding, weight scale)
    (2, 3, 4, 7, 0, 1.0), (3, 4, 2, 6, 2, 1.0), (2, 5, 5, 9, 1, 1.0),
    (2, 16, 32, 13, 0, (2 / 144) ** 0.5), (4, 32, 64, 14, 1, (2 / 288) ** 0.5), (2, 64, 64, 16, 1, (2 / 576) ** 0.5),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (default 2)")
    parser.add_argument("--backend", default="numpy", help="xpcnn backend to time (numpy, torch, cupy, ...)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds per contender (the fastest counts)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, a smaller grid")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time (default) or this process's CPU time (use with --threads 1)")
    parser.add_argument("--network", choices=harness.NETS,
                        help="instead of the tables: whole training steps of this network (batch 64, NumPy) with "
                             "the rule's dispatch against im2col everywhere, alternating rounds")
    return parser.parse_args(argv)


def network_check(net: str, threads: int, repeats: int) -> None:
    """Whole ``train_step``s of ``net`` with the rule's dispatch and with im2col everywhere,
    alternating rounds of ~1.5 s; images/s medians. Per-op timings (the tables) can mislead
    when a layer's cost depends on what ran before it (caches, BLAS threads)."""
    from xpcnn.functional import conv

    images, labels = harness.load_images()
    work = harness.xpcnn_workload(harness.build_xpcnn(net), images, labels, 64)
    rule = (conv.winograd_applicable, conv.winograd_input_grad_applicable)
    never = (lambda *a: False, lambda *a: False)

    def run(dispatch, seconds=1.5):
        conv.winograd_applicable, conv.winograd_input_grad_applicable = dispatch
        work.step()
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            work.step()
            steps += 1
        return steps * 64 / (time.perf_counter() - t0)

    try:
        speeds = {"rule": [], "im2col": []}
        for _ in range(repeats):
            speeds["rule"].append(run(rule))
            speeds["im2col"].append(run(never))
    finally:
        conv.winograd_applicable, conv.winograd_input_grad_applicable = rule
    median = {k: float(np.median(v)) for k, v in speeds.items()}
    print(f"{net} network, batch 64, train_step, {threads} thread(s), {repeats} alternating rounds of ~1.5 s:")
    for k, v in speeds.items():
        print(f"  {k:<8} {median[k]:8.1f} img/s (median; {min(v):.1f}..{max(v):.1f})")
    print(f"  rule / im2col everywhere: {median['rule'] / median['im2col']:.3f}x")


def shapes(quick: bool):
    grid = [(n, c, o, h, 1) for n in BATCHES for h, chans in GRID for c in chans for o in chans]
    if quick:
        grid = [s for s in grid if s[1] == s[2]]
    return grid + EXTRA


# ---------------------------------------------------------------- accuracy


def tolerance_ratio(got, ref) -> float:
    from tests.tolerances import FLOAT32_ATOL, FLOAT32_RTOL

    got = np.asarray(got, dtype=np.float64)
    return float(np.max(np.abs(got - ref) / (FLOAT32_ATOL + FLOAT32_RTOL * np.abs(ref))))


def accuracy_rows():
    from xpcnn.functional import conv, winograd

    rng = np.random.default_rng(0)
    rows = []
    for n, c, o, h, p, scale in ACCURACY_SHAPES:
        x = rng.standard_normal((n, c, h, h))
        w = rng.standard_normal((o, c, 3, 3)) * scale
        geom = conv.conv2d_geometry(x.shape, w.shape, 1, p)
        g = rng.standard_normal((n, o, *geom.out_hw))
        y64, cols = conv._conv2d_im2col(np, x, w, None, geom)
        gx64, gw64, _ = conv.conv2d_backward_kernel(np, g, x, w, geom, bias=False, cols=cols, input_grad=True)
        x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
        y, cols32 = conv._conv2d_im2col(np, x32, w32, None, geom)
        gx, gw, _ = conv.conv2d_backward_kernel(np, g32, x32, w32, geom, bias=False, cols=cols32, input_grad=True)
        found = {"im2col": (y, gx, gw)}
        for m in (2, 4):
            y, cache = winograd.winograd_conv2d(np, x32, w32, None, geom, m)
            found[f"F({m}x{m},3x3)"] = (y, winograd.winograd_conv2d_input_grad(np, g32, w32, geom, (h, h), m),
                                        winograd.winograd_conv2d_weight_grad(np, g32, x32, geom, cache))
        for name, (y, gx, gw) in found.items():
            rows.append(((n, c, o, h, p), name, [tolerance_ratio(a, r) for a, r in ((y, y64), (gx, gx64), (gw, gw64))]))
    return rows


def print_accuracy(rows):
    print("1. float32 error / the float32 per-op bound (1e-5 + 1e-4 |ref|; <= 1 is within tolerance), "
          "reference im2col float64")
    print(f"{'N, C, O, H, pad':<22} {'algorithm':<13} {'y':>7} {'grad_x':>7} {'grad_w':>7}")
    for shape, name, ratios in rows:
        print(f"{str(shape):<22} {name:<13} " + " ".join(f"{r:>7.2f}" for r in ratios))
    worst = {}
    for shape, name, ratios in rows:
        if all(r <= 1 for s, nm, rs in rows if s == shape and nm == "im2col" for r in rs):
            worst[name] = max(worst.get(name, 0.0), *ratios)
    print("worst ratio on the shapes where im2col float32 is within tolerance: "
          + ", ".join(f"{k} {v:.2f}" for k, v in worst.items()))


# ---------------------------------------------------------------- speed


def fastest_ms(fns: dict, repeats: int, clock=time.perf_counter) -> dict:
    """Milliseconds per call of each function in its fastest round, the functions alternating
    round by round; a round repeats a call until it has taken ~20 ms (at least once)."""
    counts = {}
    for name, fn in fns.items():
        fn()
        t0, k = clock(), 0
        while k < 1 or clock() - t0 < 0.02:
            fn()
            k += 1
        counts[name] = k
    samples = {name: [] for name in fns}
    for r in range(repeats):
        order = list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]
        for name in order:
            t0 = clock()
            for _ in range(counts[name]):
                fns[name]()
            samples[name].append((clock() - t0) / counts[name] * 1e3)
    return {name: min(v) for name, v in samples.items()}


def speed_row(xp, backend, shape, repeats, clock):
    import xpcnn
    from xpcnn.functional import conv, winograd

    n, c, o, h, p = shape
    rng = np.random.default_rng(0)
    x, w, b = (xpcnn.to_device(a.astype(np.float32), backend) for a in (
        rng.standard_normal((n, c, h, h)), rng.standard_normal((o, c, 3, 3)), rng.standard_normal(o)))
    geom = conv.conv2d_geometry(tuple(x.shape), tuple(w.shape), 1, p)
    g = xpcnn.to_device(rng.standard_normal((n, o, *geom.out_hw)).astype(np.float32), backend)
    sync = harness._sync_for(backend.split(":")[0], backend.partition(":")[2] or None)
    _, cols = conv._conv2d_im2col(xp, x, w, b, geom)
    _, cache = winograd.winograd_conv2d(xp, x, w, b, geom)

    def timed(fn):
        def call():
            fn()
            sync()
        return call

    t = fastest_ms({
        "fwd_i": timed(lambda: conv._conv2d_im2col(xp, x, w, b, geom)),
        "fwd_w": timed(lambda: winograd.winograd_conv2d(xp, x, w, b, geom)),
        "cols": timed(lambda: conv._columns(xp, x, (3, 3), geom)),
        "bwd_i": timed(lambda: conv.conv2d_backward_kernel(xp, g, x, w, geom, bias=True, cols=cols, input_grad=True)),
        "wgrad_i": timed(lambda: conv.conv2d_backward_kernel(xp, g, x, w, geom, bias=True, cols=cols,
                                                             input_grad=False)),
        "wgrad_w": timed(lambda: winograd.winograd_conv2d_weight_grad(xp, g, x, geom, cache)),
        "igrad_w": timed(lambda: winograd.winograd_conv2d_input_grad(xp, g, w, geom, (h, h))),
    }, repeats, clock)
    t["igrad_i"] = max(t["bwd_i"] - t["wgrad_i"], 0.0)
    # A Winograd forward leaves no im2col columns: the weight gradient (im2col) builds them again.
    t["fwd_w+cols"] = t["fwd_w"] + t["cols"]
    t["rule_fwd"] = winograd.winograd_applicable(tuple(x.shape), tuple(w.shape), geom)
    t["rule_igrad"] = winograd.winograd_input_grad_applicable(tuple(x.shape), tuple(w.shape), geom)
    chosen = ((t["fwd_w+cols"] if t["rule_fwd"] else t["fwd_i"]) + t["wgrad_i"]
              + (t["igrad_w"] if t["rule_igrad"] else t["igrad_i"]))
    t["step"] = (t["fwd_i"] + t["bwd_i"]) / chosen
    return t


def print_speed(rows):
    print("\n2. milliseconds per call, float32, im2col / Winograd F(2x2,3x3); ratio > 1: Winograd faster.")
    print("   forward: Winograd + rebuilding the im2col columns the weight gradient needs; weight grad: "
          "for information (the dispatch keeps im2col, see 1.); step: im2col everywhere / the rule's choice")
    head = (f"{'N, C, O, H, pad':<22} {'forward':>17} {'input grad':>17} {'weight grad':>17} "
            f"{'fwd':>5} {'igrad':>5} {'wgrad':>5} {'step':>5}  rule: forward, input grad")
    print(head)
    print("-" * len(head))
    agree = {"forward": 0, "input grad": 0}
    for shape, t in rows:
        pairs = " ".join(f"{t[a]:>8.3f}/{t[b]:<8.3f}" for a, b in (("fwd_i", "fwd_w+cols"), ("igrad_i", "igrad_w"),
                                                                     ("wgrad_i", "wgrad_w")))
        ratios = {k: t[a] / t[b] for k, a, b in (("forward", "fwd_i", "fwd_w+cols"),
                                                 ("input grad", "igrad_i", "igrad_w"),
                                                 ("weight grad", "wgrad_i", "wgrad_w"))}
        notes = []
        for key, rule in (("forward", t["rule_fwd"]), ("input grad", t["rule_igrad"])):
            if (ratios[key] > 1) == rule:
                agree[key] += 1
            else:
                notes.append(f"{key} measured otherwise")
        verdict = ", ".join("winograd" if r else "im2col" for r in (t["rule_fwd"], t["rule_igrad"]))
        print(f"{str(shape):<22} {pairs} " + " ".join(f"{r:>5.2f}" for r in ratios.values())
              + f" {t['step']:>5.2f}  {verdict}" + (f"  ({'; '.join(notes)})" if notes else ""))
    print("rule vs measurement: " + ", ".join(f"{k} {v} of {len(rows)} shapes agree" for k, v in agree.items()))


def main(argv=None) -> int:
    args = parse_args(argv)
    import xpcnn
    from xpcnn.functional import conv

    harness.set_threads(args.threads, torch_too=args.backend.startswith("torch"))
    env = harness.environment(args.threads, args.backend, None)
    print(f"{env['date']}  {env['cpu']} ({env['cpu_count']} CPUs), threads {args.threads}, numpy {env['numpy']}, "
          f"xpcnn backend {args.backend}, commit {env['commit']}; BLAS: {'; '.join(env['blas']) or '?'}\n")
    if args.network:
        os.environ.setdefault("XPCNN_MALLOC", "keep")  # as bench_train.py
        xpcnn.keep_freed_memory()
        network_check(args.network, args.threads, args.repeats)
        return 0
    print_accuracy(accuracy_rows())
    load = harness.LoadMonitor()
    xp = xpcnn.namespace_of(xpcnn.to_device(np.zeros(1, np.float32), args.backend))
    rows = []
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"\nclock: {'CPU time of this process' if args.clock == 'cpu' else 'wall clock'}")
    # im2col contenders call conv's own kernels: keep its dispatch on im2col while they run.
    with mock.patch.object(conv, "winograd_applicable", lambda *a: False, create=True), \
            mock.patch.object(conv, "winograd_input_grad_applicable", lambda *a: False, create=True):
        for shape in shapes(args.quick):
            print(f"  {shape} ...", file=sys.stderr, flush=True)
            rows.append((shape, speed_row(xp, args.backend, shape, 3 if args.quick else args.repeats, clock)))
    print_speed(rows)
    if (line := load.summary(env["cpu_count"], "the timings")) is not None:
        print(f"\n{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
