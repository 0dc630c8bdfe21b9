"""Train a CNN on real MNIST digits (the 4000/1000 mnist5k split, offline) and state its accuracy.

    python examples/train_mnist.py              # default CNN, Adam: >= 95% held-out in ~10 epochs
    python examples/train_mnist.py --notebook   # the teaching notebook's experiment, step for step

--notebook reproduces the notebook: Conv2D(16, 3, no bias) -> AvgPool2D(2) -> Dense(10) ->
softmax, kernels randn/9 and dense weights randn/2704, SGD lr 0.05 on one image at a time,
4 epochs, images / 255 in float64, printing the notebook's own log lines. The notebook measured
only training accuracy; here 1000 digits are held out and scored after every epoch.
"""

import argparse
import time

import xpcnn
from xpcnn import optim, zoo
from xpcnn.callbacks import LambdaCallback, NotebookLogger
from xpcnn.datasets import load_data, preprocess


def notebook(seed):
    (x_train, y_train), (x_test, y_test) = load_data("mnist5k")
    x_train, x_test = preprocess(x_train, "float64"), preprocess(x_test, "float64")  # image / 255.
    model = zoo.notebook_cnn().build((1, 28, 28), seed=seed, dtype="float64")
    report = LambdaCallback(on_epoch_end=lambda epoch, logs: print(
        f"held-out accuracy after epoch {epoch + 1}: {100 * logs['val_accuracy']:.1f}%"))
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=4, batch_size=1, optimizer=optim.SGD(0.05), seed=seed,
              validation_data=(x_test, y_test), callbacks=[NotebookLogger(), report], verbose=0)
    result = model.evaluate(x_test, y_test)
    print(f"held-out accuracy: {100 * result['accuracy']:.1f}% on {len(x_test)} digits "
          f"({time.perf_counter() - start:.1f} s)")


def default(seed, epochs, backend):
    if backend:
        xpcnn.set_backend(backend)
    (x_train, y_train), (x_test, y_test) = load_data("mnist5k")
    x_train, x_test = preprocess(x_train), preprocess(x_test)  # float32 (N, 1, 28, 28) in [0, 1]
    model = zoo.default_cnn().build((1, 28, 28), seed=seed)
    model.summary()  # prints the table
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, optimizer=optim.Adam(3e-3), seed=seed,
              validation_data=(x_test, y_test))
    seconds = time.perf_counter() - start
    result = model.evaluate(x_test, y_test)
    print(f"held-out accuracy: {100 * result['accuracy']:.1f}% on {len(x_test)} digits "
          f"after {epochs} epochs in {seconds:.1f} s ({seconds / epochs:.2f} s/epoch) on {xpcnn.get_backend()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", action="store_true", help="run the notebook's experiment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10, help="default CNN only")
    parser.add_argument("--backend", help="default CNN only: numpy, cupy, torch, array_api_strict")
    args = parser.parse_args()
    notebook(args.seed) if args.notebook else default(args.seed, args.epochs, args.backend)
