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
import contextlib
import importlib
import importlib.util
import io
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import optim, plot, zoo
from ._allocator import keep_freed_memory
from .backend import (
    available_backends,
    current_backend,
    get_backend,
    load_backend,
    set_backend,
    to_device,
    to_numpy,
)
from .callbacks import (
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    NotebookLogger,
    cosine_schedule,
    step_schedule,
)
from .checkpoint import latest
from .datasets import image_folder, load_data, preprocess
from .datasets.folder import SUFFIXES
from .datasets.folder import read_image as read_color_image
from .distributed import mpi
from .errors import ArgumentError, BackendUnavailableError, DataError, ShapeError, XpcnnError
from .fileformat import list_checkpoints
from .layers import RandomCrop, RandomFlip
from .model import Sequential
from .saving import load
from .version import __version__

# Defaults per network: what ``train`` uses unless a flag says otherwise (a network of xpcnn.zoo
# not listed here gets the "default" row).
TRAIN_DEFAULTS = {
    "default": dict(optimizer="adam", lr=3e-3, batch_size=64, epochs=10, dtype="float32", lr_schedule="none"),
    "notebook": dict(optimizer="sgd", lr=0.05, batch_size=1, epochs=4, dtype="float64", lr_schedule="none"),
    "resnet8": dict(optimizer="adam", lr=3e-3, batch_size=64, epochs=8, dtype="float32", lr_schedule="cosine"),
}
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
    parser = argparse.ArgumentParser(prog="xpcnn", description="xpcnn: a CNN library on the Python Array API (NumPy, CuPy, torch, ...).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict,export,info,parity,bench}")

    train = sub.add_parser("train", help="train a CNN on MNIST and print the held-out accuracy")
    train.add_argument("--model", default="default", metavar="NAME",
                       help="a network of xpcnn.zoo: 'default' (Conv16-Conv32, Adam; the default), 'notebook' "
                            "(the notebook's, per-image SGD, printing its log lines), 'resnet8' (residual, BatchNorm)")
    train.add_argument("--backend", help="numpy (default), cupy, torch, jax, array_api_strict, auto; 'name:device' too")
    train.add_argument("--epochs", type=_positive_int, help="epochs (default: 10; notebook 4, resnet8 8)")
    train.add_argument("--batch-size", type=_positive_int, help="mini-batch size (default: 64; notebook 1)")
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
    train.add_argument("--plot", metavar="DIR", help="write training curves and first-layer kernels as PNG here (needs matplotlib)")
    train.add_argument("--lr-schedule", choices=("none", "cosine", "step"),
                       help="learning rate per epoch: cosine (from --lr down towards 0 over the epochs), step (x0.1 "
                            "at 1/2 and 3/4 of the epochs), none (default; resnet8: cosine)")
    train.add_argument("--early-stopping", type=_positive_int, metavar="N",
                       help="stop when the held-out loss has not improved for N epochs, and keep the best epoch's weights")
    train.add_argument("--checkpoint-dir", metavar="DIR",
                       help="save a checkpoint after every epoch here (newest 3 kept); must hold none yet, unless --resume")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in --checkpoint-dir, if any: its optimizer (and learning "
                            "rate), shuffle state, dtype and batch size are kept; --epochs is the total to reach")
    train.add_argument("--threads", type=_positive_int,
                       help="limit NumPy's BLAS / OpenMP threads (threadpoolctl) and torch's; 1 is often fastest for this "
                            "small network, and much faster on a busy machine")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 quiet; 1 a line per epoch, with a progress bar within the epoch on a terminal (default); "
                            "2 a line per epoch only")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI ranks: mpiexec -n K python -m xpcnn train --distributed; rank 0 "
                            "alone prints, checkpoints, saves and plots (docs/distributed.md; pip install -e '.[mpi]')")

    evaluate = sub.add_parser("evaluate", help="accuracy and loss of a saved model on the MNIST test split")
    evaluate.add_argument("model", help="model file (or checkpoint directory)")
    evaluate.add_argument("--backend", help="backend to run on (default: the selected one, numpy)")
    evaluate.add_argument("--dataset", choices=("mnist5k", "mnist"), default="mnist5k")
    evaluate.add_argument("--data-path")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256)

    predict = sub.add_parser("predict", help="classify an image file (needs Pillow)")
    predict.add_argument("model", help="model file (or checkpoint directory)")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files (PNG, JPEG, ...) or folders of them, resized to the model's input; one line "
                              "each: the class (its name when the model has class names) and its probability")
    predict.add_argument("--backend")
    predict.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                         help="MNIST digits are white on black; 'auto' inverts images whose background is light")

    export = sub.add_parser("export", help="write a saved model as an ONNX graph (needs the onnx extra)")
    export.add_argument("model", help="model file (or checkpoint directory)")
    export.add_argument("onnx", metavar="MODEL.onnx", help="the ONNX file to write (docs/export.md)")
    export.add_argument("--output", choices=("logits", "probabilities"), default="logits",
                        help="what the graph returns (default logits)")
    export.add_argument("--dtype", choices=("float32", "float64"),
                        help="the graph's float type (default the model's; onnxruntime has no float64 convolution)")

    sub.add_parser("info", help="version, backends with availability or the reason, devices")
    for name in DELEGATED:
        sub.add_parser(name, help=f"see 'xpcnn {name} --help'", add_help=False)
    return parser


class UsageError(Exception):
    """A bad command line: printed as ``error: ...`` with exit status 2."""


def _backend(spec: str | None):
    """The backend named on the command line (None: the selected one), loaded now so that an
    unknown name is a usage error and an unavailable one an xpcnn error, before any work."""
    if spec is None:
        return None

    try:
        return load_backend(spec)
    except ArgumentError as e:
        raise UsageError(f"--backend: {e}") from None


# ---------------------------------------------------------------- train


def _load_split(dataset: str, path: str | None, dtype: str):

    (x_train, y_train), (x_test, y_test) = load_data(dataset, path)
    return (preprocess(x_train, dtype), y_train), (preprocess(x_test, dtype), y_test)


def _optimizer(name: str, lr: float):

    return optim.OPTIMIZERS[name](lr)


def _thread_limit(threads: int | None):
    """A context limiting NumPy's BLAS / OpenMP pools (threadpoolctl) and, when the torch backend
    is loaded, torch's intra-op pool to ``threads``. None: no limit."""
    stack = contextlib.ExitStack()
    if threads is None:
        return stack
    torch = sys.modules.get("torch")
    if torch is not None:
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(threads)
    stack.enter_context(threadpool_limits(threads))
    return stack


def _writable_dir(path: Path, flag: str) -> None:
    """``path`` is a writable directory or can be created as one: the nearest existing of it
    and its ancestors is a directory we may write in."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = f"{existing} is a file" + ("" if existing == path else f", so {path} cannot be created")
        raise UsageError(f"{flag}: {what}; give a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write in {existing} (permission denied); choose another directory")


def _check_paths(args) -> None:
    """Every output path is checked before training, so a finished run is never lost to a typo."""
    if args.save:
        path = Path(args.save)
        if path.is_dir():
            raise UsageError(f"--save: {path} is a directory; give a file name, e.g. --save {path / 'model.safetensors'}")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise UsageError(f"--save: the directory {parent} does not exist; create it first or save elsewhere")
        if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise UsageError(f"--save: cannot write {path} (permission denied); choose another path")
    if args.plot:
        _writable_dir(Path(args.plot), "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'xpcnn[plot]'")
    if args.checkpoint_dir:

        path = Path(args.checkpoint_dir)
        _writable_dir(path, "--checkpoint-dir")
        existing = list_checkpoints(path)
        if existing and not args.resume:
            raise UsageError(f"--checkpoint-dir: {path} already holds checkpoints (latest: epoch {existing[-1][0]}); "
                             "add --resume to continue that run, or choose an empty directory")
    elif args.resume:
        raise UsageError("--resume needs --checkpoint-dir DIR (where the checkpoints are)")


def _network(name: str):
    """The unbuilt network ``name`` from xpcnn.zoo; an unknown name is a usage error."""

    if name not in zoo.NETWORKS:
        raise UsageError(f"--model: unknown network {name!r}; valid names are {', '.join(zoo.NETWORKS)}")
    return zoo.get(name)


def _folder(args):
    """--data: ((training subset, None), (held-out subset, None)) of the image folder, and the unbuilt
    network for its classes with the --augment layers first."""
    if not 0 < args.validation_split < 1:
        raise UsageError(f"--validation-split: expected a fraction in (0, 1), got {args.validation_split}")
    chosen = [a for a in args.augment.split(",") if a]
    if set(chosen) - {"flip", "crop"}:
        raise UsageError(f"--augment: expected a comma-separated list of flip, crop; got {args.augment!r}")
    subsets = [image_folder(args.data, image_size=args.image_size, color=args.color, seed=args.seed or 0,
                            validation_split=args.validation_split, subset=s) for s in ("training", "validation")]
    size = subsets[0].sample_shape[1:]
    augment = {"flip": RandomFlip("horizontal"), "crop": RandomCrop(size, padding=max(1, min(size) // 8))}
    net = zoo.NETWORKS[args.model](len(subsets[0].class_names))
    return (subsets[0], None), (subsets[1], None), Sequential([*(augment[a] for a in chosen), *net.layers])


def cmd_train(args) -> int:

    _check_paths(args)
    model = _network(args.model)
    if not args.data and (args.image_size or args.augment):
        raise UsageError("--image-size and --augment apply to an image folder: add --data DIR")
    folder = _folder(args) if args.data else None
    if folder is not None:
        model = folder[2]
    if _backend(args.backend) is not None:
        set_backend(args.backend)
    quiet = _other_rank(args)
    if quiet:
        args.save = args.plot = None
    with _thread_limit(args.threads), contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        return _train(args, model, folder)


def _other_rank(args) -> bool:
    """With --distributed under mpiexec: True on every rank but rank 0."""
    if not args.distributed:
        return False

    return mpi.rank() != 0


def _settings(args) -> dict:
    """The network's defaults, overridden by the options given."""
    settings = dict(TRAIN_DEFAULTS.get(args.model, TRAIN_DEFAULTS["default"]), seed=0)
    for key in settings:
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    return settings


def _resume_point(args, model, settings: dict):
    """The checkpoint ``--resume`` continues from (None: none yet), after saying what it keeps.

    A checkpoint holds the optimizer (class, learning rate, state), the shuffle state, the dtype
    and the batch size of its run; those win over the options, which are named when they differ.
    ``--epochs`` is the total to reach, and ``--lr-schedule`` sets each epoch's rate from the
    epoch number, so repeating the first command continues it exactly."""

    ckpt = latest(args.checkpoint_dir)
    if ckpt is None:
        print(f"--resume: no checkpoint in {args.checkpoint_dir} yet: starting from scratch")
        return None
    layers = [{"type": type(layer).__name__, "config": layer.get_config()} for layer in model.layers]
    if layers != ckpt.config["layers"]:
        raise UsageError(f"--resume: the checkpoints in {args.checkpoint_dir} are of another network than --model "
                         f"{args.model}; give that run's --model, or another --checkpoint-dir")
    kept = dict(optimizer=ckpt.optimizer_record["class"].lower(), lr=ckpt.optimizer_record["hyper"]["lr"],
                dtype=ckpt.fields["dtype"], batch_size=ckpt.fit_args.get("batch_size", settings["batch_size"]),
                seed=ckpt.fit_args.get("seed"))
    ignored = []
    for key, value in kept.items():
        given = getattr(args, key, None)
        if given is not None and given != value:
            ignored.append(f"--{key.replace('_', '-')} {given:g}" if key == "lr" else f"--{key.replace('_', '-')} {given}")
    settings.update(kept)
    print(f"--resume: continuing after epoch {ckpt.epoch} from {ckpt.path}; kept from the checkpoint: optimizer "
          f"{kept['optimizer']} (lr {kept['lr']:g}) and its state, the shuffle state, dtype {kept['dtype']}, "
          f"batch size {kept['batch_size']}" + (f"; not applied: {', '.join(ignored)}" if ignored else ""))
    return args.checkpoint_dir


def _schedule_callbacks(args, settings: dict) -> list:

    callbacks = []
    epochs, lr = settings["epochs"], settings["lr"]
    if settings["lr_schedule"] == "cosine":
        callbacks.append(LearningRateScheduler(cosine_schedule(lr, epochs)))
    elif settings["lr_schedule"] == "step":
        milestones = sorted({m for m in (epochs // 2, 3 * epochs // 4) if m > 0})
        callbacks.append(LearningRateScheduler(step_schedule(lr, milestones, gamma=0.1)))
    if args.early_stopping:
        callbacks.append(EarlyStopping("val_loss", patience=args.early_stopping, restore_best_weights=True))
    return callbacks


def _train(args, model, folder=None) -> int:


    keep_freed_memory()  # this process is ours: reuse freed memory (XPCNN_MALLOC=default opts out)
    settings = _settings(args)
    start = time.perf_counter()
    resume_from = _resume_point(args, model, settings) if args.resume else None
    (x_train, y_train), (x_test, y_test) = folder[:2] if folder else _load_split(args.dataset, args.data_path,
                                                                                 settings["dtype"])
    if resume_from is None:
        shape = x_train.sample_shape if folder else x_train.shape[1:]
        model.build(shape, seed=settings["seed"], dtype=settings["dtype"])
    optimizer = None if resume_from else _optimizer(settings["optimizer"], settings["lr"])
    callbacks = _schedule_callbacks(args, settings)
    verbose = args.verbose
    if args.model == "notebook":
        callbacks.append(NotebookLogger())  # the notebook's own lines are the progress within an epoch
        verbose = 2 if verbose else 0
    schedule = "" if settings["lr_schedule"] == "none" else f" ({settings['lr_schedule']} schedule)"
    training = f"{settings['optimizer']} lr {settings['lr']:g}{schedule}, seed {settings['seed']}"
    print(f"xpcnn {__version__}: {args.model} network on {get_backend()} ({settings['dtype']}), "
          f"{args.data or args.dataset}: "
          f"{len(x_train)} training / {len(x_test)} held-out images; {training}, batch {settings['batch_size']}, "
          f"{settings['epochs']} epoch(s)", flush=True)
    ran = []
    callbacks.append(LambdaCallback(on_epoch_end=lambda epoch, logs: ran.append(epoch)))
    fit_start = time.perf_counter()
    try:
        history = model.fit(
            x_train, y_train, epochs=settings["epochs"], batch_size=settings["batch_size"], optimizer=optimizer,
            validation_data=x_test if folder else (x_test, y_test), seed=settings["seed"], verbose=verbose,
            callbacks=callbacks,
            checkpoint_dir=args.checkpoint_dir, resume_from=resume_from, distributed=args.distributed,
        )
    except KeyboardInterrupt:
        hint = f"; continue with --checkpoint-dir {args.checkpoint_dir} --resume" if args.checkpoint_dir else ""
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return 130
    fit_seconds = time.perf_counter() - fit_start
    stopper = next((cb for cb in callbacks if isinstance(cb, EarlyStopping)), None)
    if stopper is not None and stopper.stopped_epoch:
        print(f"early stopping after epoch {stopper.stopped_epoch + 1}: kept the weights of epoch {stopper.best_epoch + 1} "
              f"(held-out loss {stopper.best:.4f})")
    result = model.evaluate(x_test, y_test, distributed=args.distributed)
    correct = round(result["accuracy"] * len(x_test))
    print(f"held-out accuracy: {100 * result['accuracy']:.2f}% ({correct}/{len(x_test)}), loss {result['loss']:.4f}")
    per_epoch = f" ({fit_seconds / len(ran):.2f} s/epoch over {len(ran)} epoch(s))" if ran else " (nothing left to train)"
    print(f"time: {fit_seconds:.1f} s training{per_epoch}, {time.perf_counter() - start:.1f} s in all")
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    if args.plot:

        paths = plot.save_all(history, model, args.plot)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------- evaluate / predict


def cmd_evaluate(args) -> int:

    model = load(args.model, backend=_backend(args.backend))
    _, (x_test, y_test) = _load_split(args.dataset, args.data_path, model.dtype)
    if tuple(x_test.shape[1:]) != tuple(model.input_shape):
        want, got = model.input_shape, tuple(x_test.shape[1:])
        raise DataError(f"model: {args.model} expects {'x'.join(map(str, want[1:]))} images with {want[0]} channel(s); "
                        f"the {args.dataset} test split is {'x'.join(map(str, got[1:]))} with {got[0]}: evaluate it "
                        "on data of its own shape (the model's input shape is fixed when it is built)")
    result = model.evaluate(x_test, y_test, batch_size=args.batch_size)
    correct = round(result["accuracy"] * len(x_test))
    print(f"{args.model}: accuracy {100 * result['accuracy']:.2f}% ({correct}/{len(x_test)}) on the {args.dataset} test split, "
          f"loss {result['loss']:.4f} ({model.backend}, {model.dtype})")
    return 0


def read_image(path: str, shape: tuple[int, ...], invert: str = "auto"):
    """An image file as uint8 (1, H, W) for a model of input ``shape`` (1, H, W): grayscale,
    resized, inverted to white-on-black when asked (``auto``: when its border is light)."""


    if len(shape) != 3 or shape[0] != 1:
        raise ShapeError(f"model: predict reads grayscale images, so the model input must be (1, H, W), got {shape}")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("predict needs Pillow to read images: pip install pillow") from None
    try:
        with Image.open(path) as img:
            gray = img.convert("L")
            if gray.size != (shape[2], shape[1]):
                gray = gray.resize((shape[2], shape[1]), Image.BILINEAR)
            pixels = np.asarray(gray, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"image: cannot read {path} ({e})") from None
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if invert == "yes" or (invert == "auto" and border.mean() > 127):
        pixels = 255 - pixels
    return pixels[None]


def cmd_predict(args) -> int:



    model = _export().OnnxModel(args.model) if args.model.endswith(".onnx") else \
        load(args.model, backend=_backend(args.backend))
    color = "rgb" if model.input_shape[0] == 3 else "gray"
    for item in map(Path, args.images):
        for path in sorted(f for f in item.rglob("*") if f.suffix.lower() in SUFFIXES) if item.is_dir() else [item]:
            pixels = read_color_image(path, color, model.input_shape[1:]) if model.class_names \
                else read_image(path, model.input_shape, args.invert)
            x = to_device(pixels[None].astype(model.dtype) / np.dtype(model.dtype).type(255), model.backend)
            probs = to_numpy(model.predict(x))[0]
            order, names = np.argsort(-probs), model.class_names or [str(k) for k in range(len(probs))]
            print(f"{path}: {names[order[0]]} (probability {probs[order[0]]:.3f}); next: "
                  + ", ".join(f"{names[k]} ({probs[k]:.3f})" for k in order[1:3]))
    return 0


def _export():
    """xpcnn.export, or an error saying which package to install."""
    try:
        return importlib.import_module("xpcnn.export")
    except ImportError as e:
        raise DataError(f"ONNX export needs {e.name or 'onnx'}: pip install 'xpcnn[onnx]'") from None


def cmd_export(args) -> int:
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
    # array_api_strict.Device('device1') -> device1
    listed = ", ".join(re.sub(r"^[\w.]+\('(.*)'\)$", r"\1", name) for name in names)
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
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except XpcnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a disk that filled up, a file that vanished: the message says which
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
