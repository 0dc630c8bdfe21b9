"""``python -m xpcnn`` (or ``xpcnn``): train | evaluate | predict | export | info | parity | bench.

    python -m xpcnn train                      # default CNN, Adam, mnist5k, prints held-out accuracy
    python -m xpcnn train --model notebook     # the notebook's network, per-image SGD, its log lines
    python -m xpcnn train --save model.safetensors --plot plots/
    python -m xpcnn evaluate model.safetensors
    python -m xpcnn predict model.safetensors digit.png
    python -m xpcnn train --data photos/ --image-size 64 64 --augment flip,crop --save m.safetensors
    python -m xpcnn predict m.safetensors new_photo.jpg more_photos/   # prints class names
    python -m xpcnn export model.safetensors model.onnx   # then: python -m xpcnn predict model.onnx digit.png
    python -m xpcnn info                       # version, backends and devices

Exit status: 0 success, 1 an xpcnn error, 2 bad usage (a bad option or path, checked before any
training), 130 interrupted. Errors are one ``error: ...`` line on stderr naming the option,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from . import plot
from .backend import (
    available_backends,
    current_backend,
    load_backend,
    to_device,
    to_numpy,
)
from .cli_train import UsageError, backend_option, check_inputs, cmd_train, load_split, output_file
from .datasets.folder import SUFFIXES, ImageFolder, image_folder
from .datasets.folder import read_image as read_color_image
from .errors import ArgumentError, BackendUnavailableError, DataError, ShapeError, XpcnnError
from .saving import load
from .version import __version__

# Errors of the Python API name its arguments; where the CLI has a flag for one, the message names the flag.
FLAG_WORDING = {"image_size=(H, W)": "--image-size H W", "validation_split:": "--validation-split:"}
DELEGATED = {"parity": "tests.parity_matrix", "bench": "benchmarks.harness"}
# The benchmark harness is tooling kept in a source checkout's benchmarks/ folder, not in the package.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _number(cast, expected: str, *, low: float, strict: bool):
    """An argparse type: ``cast(text)``, finite, and > ``low`` (``strict``) or >= ``low``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (value > low if strict else value >= low) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _number(int, "a positive integer", low=0, strict=True)
_positive_float = _number(float, "a positive finite number", low=0.0, strict=True)
_seed = _number(int, "a non-negative integer", low=0, strict=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xpcnn", description="xpcnn: a CNN library on the Python Array API (NumPy, CuPy, torch, ...).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict,export,info,parity,bench}")

    train = sub.add_parser("train", help="train a CNN on MNIST and print the held-out accuracy")
    train.add_argument("--model", default="default", metavar="NAME",
                       help="a network of xpcnn.zoo: 'default' (Conv16-Conv32, Adam; the default), 'notebook' "
                            "(the notebook's, per-image SGD, printing its log lines), 'resnet8' (residual, BatchNorm)")
    train.add_argument("--backend", help="numpy (default), cupy, torch, jax, array_api_strict, auto; 'name:device' too")
    train.add_argument("--epochs", type=_positive_int, help="epochs (default: 10; notebook 4, resnet8 12)")
    train.add_argument("--batch-size", type=_positive_int, help="mini-batch size (default: 64; notebook 1, resnet8 32)")
    train.add_argument("--lr", type=_positive_float, help="learning rate (default: Adam 3e-3; notebook SGD 0.05)")
    train.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default: adam; notebook sgd")
    train.add_argument("--seed", type=_seed, help="seed of the initial weights and the shuffles (default 0)")
    train.add_argument("--dataset", choices=("mnist5k", "mnist"), default="mnist5k",
                       help="mnist5k: 4000/1000 offline subset (default); mnist: the full 60000/10000")
    train.add_argument("--data-path", help="directory (mnist) or mnist_5k.csv.gz file (mnist5k) to read instead")
    train.add_argument("--data", metavar="DIR", help="train on an image folder DIR/<class name>/<images> instead of "
                       "MNIST (needs Pillow); --validation-split of each class is held out")
    train.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                       help="with --data: resize every image to H x W (bilinear); without it they must be one size")
    train.add_argument("--color", choices=("rgb", "gray"), default="rgb", help="with --data: 3 channels or 1")
    train.add_argument("--validation-split", type=_positive_float, default=0.2, metavar="F",
                       help="with --data: the fraction of each class held out, in (0, 1) (default 0.2)")
    train.add_argument("--augment", default="", metavar="LIST",
                       help="with --data: comma-separated flip (RandomFlip horizontal), crop (RandomCrop to the image "
                            "size, padding 1/8 of it), put before the network")
    train.add_argument("--dtype", choices=("float32", "float64"), help="default float32; notebook float64")
    train.add_argument("--save", metavar="PATH", help="write the trained model here (safetensors)")
    train.add_argument("--plot", metavar="DIR", help="write training curves and first-layer kernels as PNG here "
                       "(needs matplotlib)")
    train.add_argument("--lr-schedule", choices=("none", "cosine", "step"),
                       help="learning rate per epoch: cosine (from --lr down towards 0 over the epochs), step (x0.1 "
                            "at 1/2 and 3/4 of the epochs), none (default; resnet8: cosine)")
    train.add_argument("--early-stopping", type=_positive_int, metavar="N", help="stop when the held-out loss has "
                       "not improved for N epochs, and keep the best epoch's weights")
    train.add_argument("--checkpoint-dir", metavar="DIR", help="save a checkpoint after every epoch here (newest 3 "
                       "kept); must hold none yet, unless --resume")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir, "
                       "if any: its optimizer (and learning rate), shuffle state, dtype and batch size are kept; "
                       "--epochs is the total to reach")
    train.add_argument("--threads", type=_positive_int, help="limit NumPy's BLAS / OpenMP threads (threadpoolctl) and "
                       "torch's; 1 is often fastest for this small network, and much faster on a busy machine")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="0 quiet; 1 a line per epoch, with "
                       "a progress bar within the epoch on a terminal (default); 2 a line per epoch only")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI ranks: mpiexec -n K python -m xpcnn train --distributed; rank 0 "
                            "alone prints, checkpoints, saves and plots (docs/distributed.md; pip install -e '.[mpi]')")

    evaluate = sub.add_parser("evaluate", help="accuracy, loss, per-class precision and recall and the confusion "
                              "matrix of a saved model on the MNIST test split or an image folder")
    evaluate.add_argument("model", help="model file (or checkpoint directory)")
    evaluate.add_argument("--backend", help="backend to run on (default: the selected one, numpy)")
    evaluate.add_argument("--dataset", choices=("mnist5k", "mnist"), default="mnist5k")
    evaluate.add_argument("--data-path")
    evaluate.add_argument("--data", metavar="DIR", help="evaluate on the image folder DIR/<class name>/<images> "
                          "instead (resized to the model's input; its classes must be among the model's)")
    evaluate.add_argument("--plot", metavar="FILE", help="draw the confusion matrix to FILE (PNG; needs matplotlib)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256)

    predict = sub.add_parser("predict", help="classify an image file (needs Pillow)")
    predict.add_argument("model", help="model file (or checkpoint directory)")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files (PNG, JPEG, ...) or folders of them, resized to the model's input; one line "
                              "each: the class (its name when the model has class names) and its probability")
    predict.add_argument("--backend")
    predict.add_argument("--top", type=_positive_int, default=1, metavar="K",
                         help="print the K most probable classes of each image (default 1)")
    predict.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                         help="for a grayscale model without class names (MNIST digits are white on black): "
                              "'auto' inverts images whose background is light")

    export = sub.add_parser("export", help="write a saved model as an ONNX graph (needs the onnx extra)")
    export.add_argument("model", help="model file (or checkpoint directory)")
    export.add_argument("onnx", metavar="MODEL.onnx", help="the ONNX file to write (docs/deploy.md)")
    export.add_argument("--output", choices=("logits", "probabilities"), default="logits",
                        help="what the graph returns (default logits)")
    export.add_argument("--dtype", choices=("float32", "float64"),
                        help="the graph's float type (default the model's; onnxruntime has no float64 convolution)")

    sub.add_parser("info", help="version, backends with availability or the reason, devices")
    for name in DELEGATED:
        sub.add_parser(name, help=f"see 'xpcnn {name} --help'", add_help=False)
    return parser


# ---------------------------------------------------------------- evaluate / predict / export


def _class_folder(model, path: str):
    """The image folder ``path`` for ``model``: resized to its input, labels renumbered to its
    classes (``model.class_names``, else "0", "1", ...); a class it lacks is a DataError."""
    names = model.class_names or [str(k) for k in range(model.output_shape()[-1])]
    c, h, w = model.input_shape
    ds = image_folder(path, image_size=(h, w), color="rgb" if c == 3 else "gray")
    unknown = [name for name in ds.class_names if name not in names]
    if unknown:
        raise DataError(f"--data: {Path(path) / unknown[0]}: the class {unknown[0]!r} is not one of the model's "
                        f"classes ({', '.join(names)})")
    index = np.array([names.index(name) for name in ds.class_names], dtype=np.int64)
    return ImageFolder(ds.files, index[ds.labels], names, ds.sample_shape, ds.color, ds.resize, ds.skipped)


def class_report(y_true, y_pred, names) -> tuple[str, np.ndarray]:
    """Per-class precision and recall and the confusion matrix (K, K) (rows: true class, columns:
    predicted) of int labels ``y_true`` and predictions ``y_pred`` (N,); K = len(names).
    Returns (the table as text, the matrix)."""
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    right, width = np.diag(counts), max(7, *map(len, names))

    def ratio(num, den):
        return f"{num / den:9.3f}" if den else f"{'-':>9}"

    lines = [f"{'class':<{width}}  precision    recall  images"]
    lines += [f"{name:<{width}}  {ratio(right[k], counts[:, k].sum())} {ratio(right[k], counts[k].sum())}  "
              f"{counts[k].sum():6d}" for k, name in enumerate(names)]
    lines += ["confusion matrix (rows: true class, columns: predicted class):",
              " " * width + "".join(f" {name:>{width}}" for name in names)]
    lines += [f"{name:<{width}}" + "".join(f" {c:>{width}}" for c in row) for name, row in zip(names, counts)]
    return "\n".join(lines), counts


def cmd_evaluate(args) -> int:
    if args.plot:
        output_file(args.plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'xpcnn[plot]'")
    check_inputs(args)
    model = load(args.model, backend=backend_option(args.backend))
    if args.data:
        _evaluate(model, _class_folder(model, args.data), None, args, f"the images of {args.data}")
        return 0
    _, (x_test, y_test) = load_split(args.dataset, args.data_path, model.dtype)
    if tuple(x_test.shape[1:]) != tuple(model.input_shape):
        want, got = model.input_shape, tuple(x_test.shape[1:])
        raise DataError(f"model: {args.model} expects {'x'.join(map(str, want[1:]))} images with {want[0]} channel(s); "
                        f"the {args.dataset} test split is {'x'.join(map(str, got[1:]))} with {got[0]}: evaluate it "
                        "on data of its own shape (the model's input shape is fixed when it is built)")
    _evaluate(model, x_test, y_test, args, f"the {args.dataset} test split")
    return 0


def _evaluate(model, x, y, args, what: str) -> None:
    """Print accuracy and loss of ``model`` on (x, y) or a dataset x, the per-class table and
    confusion matrix (:func:`class_report`), and draw it with --plot."""
    result = model.evaluate(x, y, batch_size=args.batch_size)
    correct = round(result["accuracy"] * len(x))
    print(f"{args.model}: accuracy {100 * result['accuracy']:.2f}% ({correct}/{len(x)}) on {what}, "
          f"loss {result['loss']:.4f} ({model.backend}, {model.dtype})")
    predicted = to_numpy(model.predict(x, batch_size=args.batch_size)).argmax(axis=1)
    names = model.class_names or [str(k) for k in range(model.output_shape()[-1])]
    table, counts = class_report(np.asarray(x.labels if y is None else y), predicted, names)
    print(table)
    if args.plot:
        print(f"wrote {plot.confusion_matrix(counts, names, args.plot)}")


def read_image(path: str, shape: tuple[int, ...], invert: str = "auto"):
    """An image file as uint8 (1, H, W) for a model of input ``shape`` (1, H, W): grayscale,
    resized, inverted to white-on-black when asked (``auto``: when its border is light)."""


    if len(shape) != 3 or shape[0] != 1:
        raise ShapeError(f"model: predict reads grayscale images, so the model input must be (1, H, W), got {shape}")
    # Alpha dropped, not composited: a digit drawn on a transparent background keeps its strokes
    pixels = read_color_image(path, "gray", shape[1:], alpha="drop")[0]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if invert == "yes" or (invert == "auto" and border.mean() > 127):
        pixels = 255 - pixels
    return pixels[None]


def cmd_predict(args) -> int:
    files = []
    for item in map(Path, args.images):
        found = sorted(f for f in item.rglob("*") if f.suffix.lower() in SUFFIXES and not any(  # hidden: skipped,
            part.startswith(".") for part in f.relative_to(item).parts)) if item.is_dir() else [item]  # as image_folder
        if not found:
            raise UsageError(f"IMAGE: no image in the folder {item} or its subfolders (read: files ending in "
                             f"{', '.join(SUFFIXES)})")
        files += found
    if args.model.lower().endswith(".onnx") and args.backend:
        raise UsageError("--backend: an ONNX model runs on onnxruntime; leave --backend out")
    model = _export().OnnxModel(args.model) if args.model.lower().endswith(".onnx") else \
        load(args.model, backend=backend_option(args.backend))
    color = "rgb" if model.input_shape[0] == 3 else "gray"
    for path in files:
        pixels = read_color_image(path, color, model.input_shape[1:]) if model.class_names or color == "rgb" \
            else read_image(path, model.input_shape, args.invert)
        x = to_device(pixels[None].astype(model.dtype) / np.dtype(model.dtype).type(255), model.backend)
        probs = to_numpy(model.predict(x))[0]
        order, names = np.argsort(-probs), model.class_names or [str(k) for k in range(len(probs))]
        print(f"{path}: {names[order[0]]} (probability {probs[order[0]]:.3f})" + "".join(
            ("; next: " if i == 1 else ", ") + f"{names[k]} ({probs[k]:.3f})"
            for i, k in enumerate(order[1:args.top], 1)))
    return 0


def _export():
    """xpcnn.export, or an error saying which package to install."""
    try:
        return importlib.import_module("xpcnn.export")
    except ImportError as e:
        raise DataError(f"ONNX export needs {e.name or 'onnx'}: pip install 'xpcnn[onnx]'") from None


def cmd_export(args) -> int:
    if not args.onnx.lower().endswith(".onnx"):  # xpcnn predict reads a model as ONNX by this suffix
        raise UsageError(f"MODEL.onnx: expected a file name ending in .onnx, got {args.onnx}")
    output_file(args.onnx, "MODEL.onnx")
    model = load(args.model, backend="numpy")
    _export().to_onnx(model, args.onnx, output=args.output, dtype=args.dtype)
    print(f"{args.onnx}: {args.output} of {args.model} ({args.dtype or model.dtype}, ONNX opset 17); "
          f"run it with: xpcnn predict {args.onnx} IMAGE")
    return 0


# ---------------------------------------------------------------- info


def _devices(name: str) -> str:

    try:
        xp = load_backend(name).xp
        with warnings.catch_warnings():  # torch warns about device types it is retiring
            warnings.simplefilter("ignore")
            names = [str(d) for d in xp.__array_namespace_info__().devices() if d is not None]  # jax lists None
    except Exception as e:  # a backend's inspection API is optional; info must still print
        return f"(could not list: {type(e).__name__})"
    # array_api_strict.Device('device1') -> device1; an object without a readable name (ndonnx) -> its class
    listed = ", ".join(re.sub(r"^<([\w.]+\.)?(\w+) object at .*>$", r"\2 (unnamed)",
                              re.sub(r"^[\w.]+\('(.*)'\)$", r"\1", name)) for name in names)
    note = load_backend(name).dtype_note
    return f"{listed}; {note}" if note else listed


def cmd_info(args) -> int:



    print(f"xpcnn {__version__} (Python {sys.version.split()[0]}, NumPy {np.__version__})")
    env = f"XPCNN_BACKEND={os.environ.get('XPCNN_BACKEND', '')!r}"
    code = 0
    try:
        print(f"selected backend: {current_backend()} ({env})")
    except BackendUnavailableError as e:
        print(f"selected backend: UNAVAILABLE ({env}): {e}")
        code = 1
    except ArgumentError as e:  # an unknown name: every use of xpcnn will raise the same
        print(f"selected backend: INVALID: {e}")
        code = 1
    print("backends:")
    for name, status in available_backends().items():
        if status == "available":
            print(f"  {name:<17} available; devices: {_devices(name)}")
        else:
            print(f"  {name:<17} unavailable: {status}")
    return code


# ---------------------------------------------------------------- parity / bench


def delegate(command: str, argv: list[str]) -> int:
    """Run ``xpcnn parity`` / ``xpcnn bench`` through their modules' add_arguments / run."""
    module_name = DELEGATED[command]
    if os.path.isfile(os.path.join(CHECKOUT, *module_name.split(".")[:-1], module_name.split(".")[-1] + ".py")):
        sys.path.insert(0, CHECKOUT)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = e.name or str(e)
        if missing in (module_name, module_name.split(".")[0]):
            where = f" (it runs from a source checkout of xpcnn: {module_name.replace('.', '/')}.py)"
            print(f"error: 'xpcnn {command}' is not available: this installation has no {module_name} module{where}",
                  file=sys.stderr)
        else:
            print(f"error: 'xpcnn {command}' needs the package {missing!r}, which is not installed ({e}); "
                  "pip install 'xpcnn[test]' or 'xpcnn[bench]'", file=sys.stderr)
        return 2
    doc = (module.__doc__ or "").strip().splitlines()
    parser = argparse.ArgumentParser(prog=f"xpcnn {command}", description=doc[0] if doc else None)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
            "info": cmd_info}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line: a command-line user has no use for the source line."""
    print(f"warning: {message}", file=file or sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning  # this process is the command's (restored on return, for in-process callers)
    try:
        if argv and argv[0] in DELEGATED:
            return delegate(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.version:

            print(f"xpcnn {__version__}")
            return 0
        if args.command is None:
            parser.print_help()
            return 2
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe is seen here, not as Python exits
        return code
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except XpcnnError as e:
        message = str(e)
        for words, flag in FLAG_WORDING.items():
            message = message.replace(words, flag)
        print(f"error: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # a reader that stopped early (xpcnn predict ... | head): quiet, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, MemoryError) as e:  # a full disk, a vanished file, an input too large for memory
        print(f"error: {e or 'out of memory'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
