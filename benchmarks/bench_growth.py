"""How the cost of training the notebook network grows with batch size and with image size.

    .venv/bin/python benchmarks/bench_growth.py                       # ~2 minutes
    .venv/bin/python benchmarks/bench_growth.py --quick --plot runs/growth
    .venv/bin/python benchmarks/bench_growth.py --threads 1 --json runs/growth.json

1. Time per image vs batch size 1, 2, 4, ..., 512 (28x28): xpcnn vs PyTorch. A per-step overhead
   shows as a 1/batch slope at small batches; a flat tail means
   the work per image dominates.
2. Time per image vs image size 28, 56, 112 (nearest-neighbour upscaled mnist5k; the Dense input
   follows: 16 * (S-2)/2 * (S-2)/2): xpcnn and PyTorch at batch 64 and the notebook algorithm at
   batch 1 (its per-pixel loops should grow like S^2, as should everything else). The learning
   rate is 0.05 * (28/S)^2 for every contender: the Dense layer's inputs grow like S^2, and with
   0.05 the notebook algorithm's logits overflow its exp() within a few steps at 56 and 112 px
   (the harness refuses to time a non-finite loss).

All points of a sweep are measured in one round-robin pool (not one point after another), so
a change in machine load moves the whole curve rather than bending it. Otherwise the same
method as bench_train.py (benchmarks/harness.py): same data, same initial weights (the notebook algorithm
keeps its own), same threads, median of >= 5 rounds after a warm-up. ``--plot DIR`` writes growth_batch.png and
growth_image_size.png (log-log) with matplotlib.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # this process and its children are xpcnn's (README: allocator)

from benchmarks import harness

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
SIZES = [28, 56, 112]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_arguments(parser)
    parser.set_defaults(repeats=9, round_seconds=0.25)
    parser.add_argument("--quick", action="store_true", help="seconds-long: very short rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write growth_batch.png and growth_image_size.png here")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.round_seconds = 5, 0.03
    if args.repeats < 5:
        parser.error("--repeats: at least 5")
    return args


def _sweep(args, key, points, make):
    """All (point, contender) workloads measured in ONE round-robin pool, so a change in the
    machine's load during the sweep shifts every point alike instead of bending the curve."""
    pool, owner = [], {}
    for point in points:
        for w in make(point):
            base = w.name
            w.name = f"{base} {key}={point}"
            owner[w.name] = (point, base)
            pool.append(w)
    print(f"  measuring {len(pool)} workloads in one pool ...", file=sys.stderr, flush=True)
    res = harness.measure(pool, repeats=args.repeats, round_s=args.round_seconds, warmup_s=min(0.3, args.round_seconds))
    rows = []
    for point in points:
        mine = {owner[n][1]: dataclasses.replace(r, name=owner[n][1]) for n, r in res.items() if owner[n][0] == point}
        rows.append({key: point, "us_per_image": {n: 1e6 / r.median for n, r in mine.items()},
                     "ratios": harness.ratios(mine)})
    return rows


def batch_sweep(args, images, labels, with_torch):
    return _sweep(args, "batch", BATCHES, lambda batch: harness.contenders(
        "train", "notebook", batch, images, labels, backend=args.backend, torch_device=args.torch_device,
        with_torch=with_torch))


def size_lr(size: int) -> float:
    """The learning rate at image side ``size``: 0.05 at 28 px, scaled by (28/S)^2 (see the docstring)."""
    return harness.LR * (28 / size) ** 2


def size_sweep(args, with_torch):
    def make(size):
        images, labels = harness.load_images(size, n=1024)
        lr = size_lr(size)
        return harness.contenders("train", "notebook", 64, images, labels, backend=args.backend,
                                  torch_device=args.torch_device, with_torch=with_torch, image_size=size, lr=lr) + \
            harness.contenders("train", "notebook", 1, images[:200], labels[:200], with_torch=False,
                               with_notebook=True, image_size=size, lr=lr)[-1:]

    rows = _sweep(args, "image_size", SIZES, make)
    for row in rows:
        row["dense_inputs"] = 16 * ((row["image_size"] - 2) // 2) ** 2
    return rows


def print_table(title, key, rows):
    names = list(rows[0]["us_per_image"])
    print(f"\n{title}: microseconds per image (median; lower is better)")
    head = f"{key:>10} " + " ".join(f"{n:>16}" for n in names) + f" {'xpcnn/torch':>12}"
    print(head)
    print("-" * len(head))
    for row in rows:
        ratio = row["ratios"].get("xpcnn/torch")
        print(f"{row[key]:>10} " + " ".join(f"{row['us_per_image'][n]:>16.4g}" for n in names)
              + f" {(f'{ratio:.2f}x' if ratio else ''):>12}")


def plot(rows_b, rows_s, directory, subtitle):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    for rows, key, xlabel, name in ((rows_b, "batch", "batch size", "growth_batch.png"),
                                    (rows_s, "image_size", "image side (pixels)", "growth_image_size.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for contender in rows[0]["us_per_image"]:
            ax.plot([r[key] for r in rows], [r["us_per_image"][contender] for r in rows], marker="o", label=contender)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([r[key] for r in rows], [str(r[key]) for r in rows])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("microseconds per image (training step)")
        ax.set_title(f"notebook network: cost per image vs {xlabel}\n{subtitle}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(directory, name)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    args = parse_args(argv)
    with_torch, env, busy_before, load = harness.start_run(args)
    print(f"{env['date']}  {env['cpu']}, threads {args.threads}, numpy {env['numpy']}, torch {env['torch'] or '-'}, "
          f"xpcnn backend {args.backend}")
    images, labels = harness.load_images()
    rows_b = batch_sweep(args, images, labels, with_torch)
    rows_s = size_sweep(args, with_torch)
    other, load_line = load.other_cpus(), load.summary(env["cpu_count"])
    print_table("training time per image vs batch size (28x28)", "batch", rows_b)
    print_table("training time per image vs image size (xpcnn/torch batch 64, notebook batch 1)", "image_size", rows_s)
    if load_line is not None:
        print(f"\n{load_line}")
    if args.plot:
        subtitle = f"{env['cpu']}, threads: {args.threads}, numpy {env['numpy']}, torch {env['torch'] or '-'}"
        for path in plot(rows_b, rows_s, args.plot, subtitle):
            print(f"wrote {path}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"environment": env, "other_cpus_busy_before": busy_before, "other_cpus_busy": other,
                       "batch": rows_b, "image_size": rows_s, "lr_by_image_size": {s: size_lr(s) for s in SIZES}},
                      f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
