"""Held-out accuracy of the teaching notebook's own code on mnist5k, next to xpcnn's.

    python benchmarks/notebook_code_accuracy.py                     # seeds 0-3, 4 epochs (~40 min)
    python benchmarks/notebook_code_accuracy.py --seeds 0 --epochs 1 --out /tmp/x.txt

"notebook code" is tests/notebook_reference.py: the notebook's per-pixel layers and per-image
SGD (lr 0.05) line for line, in float64, run as its ``main()`` does (4 epochs, the training set
reshuffled by ``X = X[rng.permutation(N)]`` each epoch), with the notebook's global
``np.random`` replaced by ``numpy.random.default_rng(seed)`` (kernels, then the softmax weight,
then the shuffles). It trains on the 4000 mnist5k training digits (the notebook used the first
5000 of MNIST and scored only its training steps); after every epoch it scores the 1000
held-out digits.

"xpcnn" is ``zoo.notebook_cnn()`` built with the same seed (so the same initial weights) and
trained by ``fit`` with the same recipe (SGD 0.05, batch 1, float64, 4 epochs); ``fit`` draws
its shuffles from its own ``default_rng(seed)``, so the image order differs from the notebook
run's and the two columns are two samples of the same algorithm, not the same trajectory
(tests/test_notebook_equivalence.py shows that with the same order they agree step for step).

The results table is printed and written to ``--out``
(default benchmarks/results/notebook_code_accuracy.txt) as each seed finishes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

# The oracle lives with the tests: tests/notebook_reference.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import xpcnn
from tests.notebook_reference import NotebookCNN
from xpcnn import optim, zoo
from xpcnn.callbacks import LambdaCallback
from xpcnn.datasets import load_data, preprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def notebook_code(seed: int, epochs: int, train, test) -> tuple[list[float], float]:
    """The notebook's ``main()`` with a held-out score after each epoch: (accuracies, seconds)."""
    (X, y), (x_test, y_test) = train, test
    rng = np.random.default_rng(seed)
    model = NotebookCNN(rng=rng)
    accuracies, start = [], time.perf_counter()
    for _ in range(epochs):
        permutation = rng.permutation(len(X))
        X, y = X[permutation], y[permutation]
        for image, label in zip(X, y):
            model.train_step(image, label)
        accuracies.append(float(np.mean(np.argmax(model.predict(x_test), axis=1) == y_test)))
    return accuracies, time.perf_counter() - start


def xpcnn_fit(seed: int, epochs: int, train, test) -> tuple[list[float], float]:
    """``zoo.notebook_cnn()`` trained by ``fit`` with the notebook's recipe: (accuracies, seconds)."""
    (x, y), (x_test, y_test) = train, test
    accuracies: list[float] = []
    model = zoo.notebook_cnn().build((1, 28, 28), seed=seed, dtype="float64", backend="numpy")
    start = time.perf_counter()
    model.fit(preprocess(x, "float64"), y, epochs=epochs, batch_size=1, optimizer=optim.SGD(0.05), seed=seed,
              validation_data=(preprocess(x_test, "float64"), y_test), verbose=0,
              callbacks=[LambdaCallback(on_epoch_end=lambda epoch, logs: accuracies.append(logs["val_accuracy"]))])
    return accuracies, time.perf_counter() - start


def row(name: str, seed: int, accuracies: list[float], seconds: float, images: int) -> str:
    cells = " ".join(f"{100 * a:6.1f}%" for a in accuracies)
    return f"{name:<14} {seed:>4}  {cells}  {seconds:8.1f} s  ({images / seconds:,.0f} img/s)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "notebook_code_accuracy.txt"))
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_data("mnist5k")
    train, test = (x_train, y_train), (x_test, y_test)
    images = args.epochs * len(x_train)
    lines = [
        f"# python benchmarks/notebook_code_accuracy.py --seeds {' '.join(map(str, args.seeds))} "
        f"--epochs {args.epochs}",
        f"# {time.strftime('%Y-%m-%d')}, xpcnn {xpcnn.__version__}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs (shared), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', '(unset)')}",
        f"# mnist5k: {len(x_train)} training digits, per-image SGD lr 0.05, float64; "
        f"held-out accuracy on {len(x_test)} digits after each epoch",
        "",
        f"{'run':<14} {'seed':>4}  " + " ".join(f"{'ep ' + str(e + 1):>7}" for e in range(args.epochs)) + "      time",
    ]
    print("\n".join(lines), flush=True)
    for seed in args.seeds:
        for name, run in (("notebook code", notebook_code), ("xpcnn fit", xpcnn_fit)):
            accuracies, seconds = run(seed, args.epochs, train, test)
            lines.append(row(name, seed, accuracies, seconds, images))
            print(lines[-1], flush=True)
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
