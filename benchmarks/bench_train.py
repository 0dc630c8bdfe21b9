"""Training and inference throughput, operations and host reads per step, and peak memory:
xpcnn vs PyTorch vs the notebook algorithm.

    python benchmarks/bench_train.py                    # full run, ~5 minutes
    python benchmarks/bench_train.py --quick            # seconds
    python benchmarks/bench_train.py --threads 1 --json runs/bench.json
    python benchmarks/bench_train.py --backend cupy --torch-device cuda \\
        --scenario train:deep:256 --scenario train:resnet8:256          # on a GPU box

Scenarios (one run; within each, contenders alternate round-robin; median of --repeats rounds
after a warm-up; same mnist5k images, float32 in [0, 1]; xpcnn and PyTorch from the same initial
weights; same threads; SGD lr 0.05; every training round must end with a finite loss):

    train notebook-net  batch 1     xpcnn, PyTorch, the notebook algorithm (tests/notebook_reference.py)
    train notebook-net  batch 64    xpcnn, PyTorch
    train deep-net      batch 64    xpcnn, PyTorch
    train default-net   batch 64    xpcnn, PyTorch (xpcnn.zoo.default_cnn, the network `xpcnn train` trains)
    train resnet8-net   batch 64    xpcnn, PyTorch (xpcnn.zoo "resnet8"; left out with a note until the zoo has it)
    infer notebook-net  batch 1000  xpcnn model.predict, PyTorch softmax(net(x)) under no_grad

notebook-net: Conv2D(16, 3x3, no bias) -> AvgPool2D(2) -> Flatten -> Dense(10). deep-net: Conv 32
3x3 pad 1 -> ReLU -> MaxPool 2 -> Conv 64 3x3 pad 1 -> ReLU -> MaxPool 2 -> Flatten -> Dense 10.
default-net: Conv 16 3x3 -> ReLU -> MaxPool 2 -> Conv 32 3x3 -> ReLU -> MaxPool 2 -> Flatten -> Dense 10.

ops/step and reads/step: operations (top-level ATen calls that do more than make a view) and
host reads of one step, counted with torch.profiler on a copy of the xpcnn workload running on
the torch backend (CPU), and of the PyTorch contender's own loop (benchmarks/harness.py,
count_ops). "GPU forms": the xpcnn count again inside ``xpcnn.fewest_operations()``, the
kernel forms a GPU runs (what it launches). benchmarks/bench_ops.py prints where each
operation comes from.

Peak memory: every training contender is re-run alone in a fresh child process that reports
its peak RSS (VmHWM of its own process image: Linux's ``ru_maxrss`` would also count the
parent's RSS at fork, carried across exec; it is recorded in the JSON as ru_maxrss_mb), and the
RSS it had after imports and data loading, before training; one more child trains the notebook
network with xpcnn for one full epoch of mnist5k at batch 64 (target: peak under 250 MB).

The PyTorch contender is skipped (with a note) when torch is not installed. Cost growth with
batch and image size: benchmarks/bench_growth.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # this process and its children are xpcnn's (README: allocator)

from benchmarks import harness

EPOCH_RSS_TARGET_MB = 250

SCENARIOS = [
    # (kind, net, batch, with the notebook algorithm)
    ("train", "notebook", 1, True),
    ("train", "notebook", 64, False),
    ("train", "deep", 64, False),
    ("train", "default", 64, False),
    ("train", "resnet8", 64, False),
    ("infer", "notebook", 1000, False),
]


def scenario(text: str):
    """"train:deep:256" -> ("train", "deep", 256, False)."""
    try:
        kind, net, batch = text.split(":")
        batch = int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KIND:NET:BATCH (e.g. train:deep:256), got {text!r}") from None
    if kind not in ("train", "infer") or net not in harness.NETS or batch < 1:
        raise argparse.ArgumentTypeError(f"expected KIND in train/infer, NET in {', '.join(harness.NETS)}, "
                                         f"BATCH >= 1; got {text!r}")
    return kind, net, batch, False


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_arguments(parser)
    parser.set_defaults(repeats=11, round_seconds=0.4)
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long: 5 short rounds; of the memory children only the one-epoch xpcnn run")
    parser.add_argument("--scenario", action="append", type=scenario, metavar="KIND:NET:BATCH",
                        help="run these scenarios instead of the default list (repeatable), e.g. train:deep:256")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.round_seconds = 5, 0.05
    if args.repeats < 5:
        parser.error("--repeats: at least 5 (the median of fewer is not worth printing)")
    return args


def measure_all(args, with_torch, images, labels):
    """Rows [scenario, Result, ratios, peak RSS, JSON entry] of every scenario that can run here."""
    rows, results = [], []
    for kind, net, batch, with_nb in args.scenario or SCENARIOS:
        name = f"{kind} {net}-net b{batch}"
        print(f"  measuring {name} ...", file=sys.stderr, flush=True)
        try:
            res = harness.run_scenario(kind, net, batch, images, labels, args=args, with_torch=with_torch,
                                       with_notebook=with_nb, count=with_torch)
        except harness.Unavailable as e:
            print(f"note: {name} not measured: {e}")
            continue
        rat = harness.ratios(res)
        for r in res.values():
            entry = {"scenario": name, "kind": kind, "net": net, **r.as_dict(), "ratios": rat}
            results.append(entry)
            rows.append([name, r, rat, None, entry])
    return rows, results


def memory_children(args, rows):
    """Peak RSS of each training contender in a fresh process, and one full xpcnn epoch."""
    memory = []
    for row in rows:
        name, r, _, _, entry = row
        if entry["kind"] != "train" or args.quick:
            continue
        print(f"  peak RSS: {name} {r.name} in a child ...", file=sys.stderr, flush=True)
        spec = {"contender": r.name.split("[")[0], "net": entry["net"], "batch": r.images_per_step,
                "threads": args.threads, "backend": args.backend, "torch_device": args.torch_device, "seconds": 2.0}
        child = harness.run_child(spec)
        child["scenario"] = name
        memory.append(child)
        if "peak_rss_mb" in child:
            row[3] = entry["peak_rss_mb"] = child["peak_rss_mb"]
    print("  peak RSS: xpcnn, one epoch of mnist5k at batch 64 ...", file=sys.stderr, flush=True)
    epoch = harness.run_child({"contender": "xpcnn", "net": "notebook", "batch": 64, "threads": args.threads,
                               "backend": args.backend, "epoch": True})
    epoch["scenario"] = "train notebook-net b64, 1 epoch mnist5k"
    memory.append(epoch)
    return memory


def print_memory(memory):
    print(f"{'memory child (fresh process)':<44} {'contender':<14} {'after setup MB':>14} {'peak MB':>8} "
          f"{'images/s':>9} {'faults/step':>11}")
    for m in memory:
        if "error" in m:
            print(f"{m['scenario']:<44} {m['contender']:<14} failed: {m['error']}")
            continue
        print(f"{m['scenario']:<44} {m['contender']:<14} {m['setup_rss_mb']:>14.0f} {m['peak_rss_mb']:>8.0f} "
              f"{m['images_per_s']:>9.4g} {m['minor_faults_per_step']:>11.0f}")
    if "peak_rss_mb" in memory[-1]:
        peak = memory[-1]["peak_rss_mb"]
        verdict = "within" if peak < EPOCH_RSS_TARGET_MB else "OVER"
        print(f"xpcnn one-epoch peak RSS {peak:.0f} MB: {verdict} the {EPOCH_RSS_TARGET_MB} MB target")


def main(argv=None) -> int:
    args = parse_args(argv)
    with_torch, env, busy_before, load = harness.start_run(args)
    print(f"{env['date']}  {env['cpu']} ({env['cpu_count']} CPUs), threads {args.threads}, numpy {env['numpy']}, "
          f"torch {env['torch'] or 'not installed'}, xpcnn backend {args.backend}, torch device {args.torch_device}, "
          f"commit {env['commit']}")
    print(f"BLAS: {'; '.join(env['blas']) or '?'}")
    print(f"{args.repeats} rounds of ~{args.round_seconds:g} s per contender, round-robin; images/s = median\n")
    images, labels = harness.load_images()
    rows, results = measure_all(args, with_torch, images, labels)
    memory = [] if args.no_memory else memory_children(args, rows)

    other = load.other_cpus()
    load_line = load.summary(env["cpu_count"])
    print()
    print(harness.format_rows([row[:4] for row in rows]))
    print("images/s: median of rounds, higher is better; min..max: spread over rounds; ratios > 1: xpcnn faster.")
    print("ops/step, reads/step: operations (views excluded) and host reads per step, torch.profiler on the torch "
          "backend (CPU) for xpcnn, and of the PyTorch loop itself; GPU forms: xpcnn's count with the kernel forms "
          "a GPU runs (xpcnn.fewest_operations()).")
    if memory:
        print("peak RSS: VmHWM of a fresh child running that contender alone (imports + data + training).\n")
        print_memory(memory)
    if load_line is not None:
        print(f"\n{load_line}")

    if args.json:
        report = {"environment": env, "settings": {"repeats": args.repeats, "round_seconds": args.round_seconds,
                                                   "quick": args.quick, "threads": args.threads},
                  "other_cpus_busy_before": busy_before, "other_cpus_busy": other,
                  "results": results, "memory": memory}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
