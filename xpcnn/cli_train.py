"""``xpcnn train``: the command that trains a network of :mod:`xpcnn.zoo` on MNIST or an image
folder, with its checks of paths and options (made before any training), resuming, schedules,
plots and the per-network defaults. :mod:`xpcnn.cli` parses the command line and calls
:func:`cmd_train`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from . import optim, plot, zoo
from ._allocator import keep_freed_memory
from .backend import (
    get_backend,
    load_backend,
    set_backend,
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
from .distributed import mpi
from .errors import ArgumentError
from .fileformat import list_checkpoints
from .layers import RandomCrop, RandomFlip
from .model import Sequential
from .version import __version__

# Defaults per network: what ``train`` uses unless a flag says otherwise (a network of xpcnn.zoo
# not listed here gets the "default" row).
TRAIN_DEFAULTS = {
    "default": dict(optimizer="adam", lr=3e-3, batch_size=64, epochs=10, dtype="float32", lr_schedule="none"),
    "notebook": dict(optimizer="sgd", lr=0.05, batch_size=1, epochs=4, dtype="float64", lr_schedule="none"),
    "resnet8": dict(optimizer="adam", lr=3e-3, batch_size=32, epochs=12, dtype="float32", lr_schedule="cosine"),
}


class UsageError(Exception):
    """A bad command line: printed as ``error: ...`` with exit status 2."""


def backend_option(spec: str | None):
    """The backend named on the command line (None: the selected one), loaded now so that an
    unknown name is a usage error and an unavailable one an xpcnn error, before any work."""
    if spec is None:
        return None

    try:
        return load_backend(spec)
    except ArgumentError as e:
        raise UsageError(f"--backend: {e}") from None


# ---------------------------------------------------------------- train


def load_split(dataset: str, path: str | None, dtype: str):

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


def output_file(path: str, flag: str) -> None:
    """The output file ``path`` of ``flag`` can be written (checked before any work): not a
    directory, in a directory that exists and may be written in."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag}: {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"{flag}: the directory {path.parent} does not exist; create it first or write elsewhere")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag}: cannot write {path} (permission denied); choose another path")


def check_inputs(args) -> None:
    """--data and --data-path name what exists: a usage error before any work."""
    if args.data and not Path(args.data).expanduser().is_dir():
        raise UsageError(f"--data: {args.data} is not a folder (expected DIR/<class name>/<images>)")
    if args.data_path and not Path(args.data_path).expanduser().exists():
        raise UsageError(f"--data-path: {args.data_path} does not exist")


def _check_paths(args) -> None:
    """Every output path is checked before training, so a finished run is never lost to a typo."""
    check_inputs(args)
    if args.save:
        output_file(args.save, "--save")
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


def _folder(args, ckpt):
    """--data: ((training subset, None), (held-out subset, None)) of the image folder, and the unbuilt
    network for its classes with the --augment layers first. Resumed (``ckpt``: the checkpoint
    ``--resume`` continues), the split is that run's: its held-out images stay held out."""
    if not 0 < args.validation_split < 1:
        raise UsageError(f"--validation-split: expected a fraction in (0, 1), got {args.validation_split}")
    chosen = [a for a in args.augment.split(",") if a]
    if set(chosen) - {"flip", "crop"}:
        raise UsageError(f"--augment: expected a comma-separated list of flip, crop; got {args.augment!r}")
    seed = ckpt.fit_args.get("seed") if ckpt is not None else None
    subsets = [image_folder(args.data, image_size=args.image_size, color=args.color,
                            seed=(args.seed or 0) if seed is None else seed,
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
    ckpt = latest(args.checkpoint_dir) if args.resume else None  # read once: the split and the resume use it
    folder = _folder(args, ckpt) if args.data else None
    if folder is not None:
        model = folder[2]
    if backend_option(args.backend) is not None:
        set_backend(args.backend)
    quiet = _other_rank(args)
    if quiet:
        args.save = args.plot = None
    with _thread_limit(args.threads), contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        return _train(args, model, folder, ckpt)


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


def _resume_point(args, model, settings: dict, ckpt, shape):
    """The checkpoint ``--resume`` continues from (None: none yet), after saying what it keeps.

    A checkpoint holds the optimizer (class, learning rate, state), the shuffle state, the dtype
    and the batch size of its run; those win over the options, which are named when they differ.
    ``--epochs`` is the total to reach, and ``--lr-schedule`` sets each epoch's rate from the
    epoch number, so repeating the first command continues it exactly. ``ckpt``: the newest
    checkpoint of ``--checkpoint-dir``; ``shape``: an image folder's (C, H, W), or None."""

    if ckpt is None and list_checkpoints(args.checkpoint_dir):
        raise UsageError(f"--resume: no checkpoint in {args.checkpoint_dir} can be read (see the warnings above); "
                         "remove the damaged ones, or choose another --checkpoint-dir")
    if ckpt is None:
        print(f"--resume: no checkpoint in {args.checkpoint_dir} yet: starting from scratch")
        return None
    if shape is not None and tuple(ckpt.fields["input_shape"]) != tuple(shape):
        raise UsageError(f"--resume: the checkpoints in {args.checkpoint_dir} are of images of shape "
                         f"{tuple(ckpt.fields['input_shape'])}, the data gives {shape}; give that run's --image-size "
                         "and --color, or another --checkpoint-dir")
    layers = [{"type": type(layer).__name__, "config": layer.get_config()} for layer in model.layers]
    if layers != ckpt.config["layers"]:
        raise UsageError(f"--resume: the checkpoints in {args.checkpoint_dir} are of another network than --model "
                         f"{args.model}; give that run's --model, or another --checkpoint-dir")
    # The run's initial rate (a schedule sets each epoch's from it), not the scheduled rate it reached.
    lr = ckpt.fit_args.get("initial_lr") or ckpt.optimizer_record["hyper"]["lr"]
    kept = dict(optimizer=ckpt.optimizer_record["class"].lower(), lr=lr, dtype=ckpt.fields["dtype"],
                batch_size=ckpt.fit_args.get("batch_size", settings["batch_size"]), seed=ckpt.fit_args.get("seed"))
    ignored = []
    for key, value in kept.items():
        given = getattr(args, key, None)
        if given is not None and given != value:
            flag = f"--{key.replace('_', '-')}"
            ignored.append(f"{flag} {given:g}" if key == "lr" else f"{flag} {given}")
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


def _train(args, model, folder=None, ckpt=None) -> int:


    keep_freed_memory()  # this process is ours: reuse freed memory (XPCNN_MALLOC=default opts out)
    settings = _settings(args)
    start = time.perf_counter()
    # The resume point first: the checkpoint's dtype is the data's (an image folder's shape is known already)
    shape = folder[0][0].sample_shape if folder else None
    resume_from = _resume_point(args, model, settings, ckpt, shape) if args.resume else None
    (x_train, y_train), (x_test, y_test) = folder[:2] if folder else load_split(args.dataset, args.data_path,
                                                                                 settings["dtype"])
    if resume_from is None:
        model.build(x_train.sample_shape if folder else x_train.shape[1:], seed=settings["seed"],
                    dtype=settings["dtype"])
    optimizer = None if resume_from else _optimizer(settings["optimizer"], settings["lr"])
    callbacks = _schedule_callbacks(args, settings)
    verbose = args.verbose
    if args.model == "notebook" and verbose:
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
        history = model.fit(x_train, y_train, epochs=settings["epochs"], batch_size=settings["batch_size"],
                            optimizer=optimizer, validation_data=x_test if folder else (x_test, y_test),
                            seed=settings["seed"], verbose=verbose, callbacks=callbacks,
                            checkpoint_dir=args.checkpoint_dir, resume_from=resume_from, distributed=args.distributed)
    except KeyboardInterrupt:
        hint = f"; continue with --checkpoint-dir {args.checkpoint_dir} --resume" if args.checkpoint_dir else ""
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return 130
    fit_seconds = time.perf_counter() - fit_start
    stopper = next((cb for cb in callbacks if isinstance(cb, EarlyStopping)), None)
    if stopper is not None and stopper.stopped_epoch:
        print(f"early stopping after epoch {stopper.stopped_epoch + 1}: kept the weights of epoch "
              f"{stopper.best_epoch + 1} "
              f"(held-out loss {stopper.best:.4f})")
    result = model.evaluate(x_test, y_test, distributed=args.distributed)
    correct = round(result["accuracy"] * len(x_test))
    print(f"held-out accuracy: {100 * result['accuracy']:.2f}% ({correct}/{len(x_test)}), loss {result['loss']:.4f}")
    per_epoch = (f" ({fit_seconds / len(ran):.2f} s/epoch over {len(ran)} epoch(s))" if ran
                 else " (nothing left to train)")
    print(f"time: {fit_seconds:.1f} s training{per_epoch}, {time.perf_counter() - start:.1f} s in all")
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    if args.plot:

        paths = plot.save_all(history, model, args.plot)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0
