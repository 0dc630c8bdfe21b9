"""Image folders against in-memory arrays: is the loader the bottleneck?

    python benchmarks/bench_images.py --threads 1 --repeats 5 > benchmarks/results/images.txt  # minutes
    python benchmarks/bench_images.py --images 64 --epochs 1 --repeats 1 # seconds, a smoke test

Data: the first --images mnist5k digits (harness.load_images), each written once to a
temporary folder ``<class>/<i>.png`` as a 64x64 grayscale PNG (nearest-neighbour upscaling).

1. Decode + resize: ``image_folder(..., image_size=(32, 32), color="gray")`` read whole, batch
   64, through :class:`xpcnn.datasets.Prefetcher` with 1 and 2 decoding threads (PNG decode,
   Pillow's bilinear resize to 32x32, scaling to float32): images per second, the two thread
   counts alternating, the median of --repeats passes.
2. fit: resnet8 (xpcnn.zoo) on those 32x32 images, --epochs epochs, batch 32, Adam 3e-3, seed 0,
   float32, numpy backend, once on the folder (decoded batch by batch by fit's prefetching thread
   pool) and once on the same images decoded beforehand into one float32 array (N, 1, 32, 32):
   the two alternate, --repeats runs each, the median seconds and the ratio folder / arrays (the
   target is at most 1.15). Both runs must end with identical weights (a dataset and its arrays
   train bit-identically). One untimed epoch of each comes first (first-call costs).

NumPy's BLAS gets --threads threads; the decoding threads come on top. The last line is the
load other processes put on the machine during the run.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # this process is xpcnn's (README: allocator)

from benchmarks import harness


def write_folder(root: Path, images, labels) -> None:
    from PIL import Image

    idx = np.arange(64) * 28 // 64
    for i, (pixels, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(pixels[idx][:, idx]).save(root / str(label) / f"{i:05d}.png")


def decode_all(folder, workers: int) -> None:
    from xpcnn.datasets import Prefetcher, iterate_batches

    with Prefetcher(folder, workers) as loader:
        for idx in iterate_batches(len(folder), 64, shuffle=False):
            loader.batch(idx)


def fit_seconds(data, labels, epochs: int):
    """(seconds of one fit of a fresh resnet8 on ``data`` (a dataset, or arrays with ``labels``), its weights)."""
    from xpcnn import optim

    model = harness.build_xpcnn("resnet8", image_size=32)
    start = time.perf_counter()
    model.fit(data, labels, epochs=epochs, batch_size=32, optimizer=optim.Adam(3e-3), seed=0, verbose=0)
    return time.perf_counter() - start, [np.asarray(w) for w in model.get_weights()]


def main() -> None:
    args, env, load = harness.start_kernel_bench(__doc__.splitlines()[0], repeats=3, add_arguments=lambda p: (
        p.add_argument("--images", type=int, default=384), p.add_argument("--epochs", type=int, default=2)))
    from xpcnn.datasets import image_folder

    images, labels = harness.load_images(n=args.images)
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), images, labels)
        folder = image_folder(tmp, image_size=(32, 32), color="gray")
        print(f"\n{len(folder)} PNG files, 64x64 grayscale, {len(folder.class_names)} classes, resized to 32x32\n")
        ms = harness.alternating_median_ms([lambda w=w: decode_all(folder, w) for w in (1, 2)], args.repeats)
        for workers, t in zip((1, 2), ms):
            print(f"decode + resize, {workers} thread(s): {len(folder) / t * 1e3:8.0f} images/s")
        x, y = folder.batch(np.arange(len(folder)))
        assert np.array_equal(y, labels[np.argsort(labels, kind="stable")])
        times = {"folder": [], "arrays": []}
        weights = {}
        fit_seconds(folder, None, 1), fit_seconds(x, y, 1)  # warm-up, untimed: first-call costs of both paths
        for r in range(args.repeats):
            for name in ("folder", "arrays") if r % 2 == 0 else ("arrays", "folder"):
                seconds, weights[name] = fit_seconds(folder, None, args.epochs) if name == "folder" else \
                    fit_seconds(x, y, args.epochs)
                times[name].append(seconds)
        same = all(np.array_equal(a, b) for a, b in zip(weights["folder"], weights["arrays"]))
        print(f"\nfit resnet8, {len(folder)} images 32x32, {args.epochs} epoch(s), batch 32, median of "
              f"{args.repeats} alternating runs each (identical final weights: {'yes' if same else 'NO'})")
        for name, ts in times.items():
            print(f"  {name:<6}  {statistics.median(ts):7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in ts)})")
        ratio = statistics.median(times["folder"]) / statistics.median(times["arrays"])
        print(f"  folder / arrays: {ratio:.3f}x (target <= 1.15x: {'met' if ratio <= 1.15 else 'NOT met'})")
    harness.print_load(load, env)


if __name__ == "__main__":
    main()
