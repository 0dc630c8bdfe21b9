"""Every public entry point refuses bad arguments with an xpcnn error that names the argument.

The entry points are discovered, not listed by hand: the callables and classes in
``xpcnn.__all__``, everything public in the modules it names (``layers``, ``optim``, ``init``,
``functional``, ``datasets``), the public modules users import by name (``callbacks``,
``interop``, ``dask``, ``testing``, ``notebook`` — those present), and the public methods of
``Sequential``. ``test_every_entry_point_has_bad_input_cases`` fails when one of them has no case
below (or a case names one that no longer exists), so a new entry point needs its bad inputs
registered here. Entry points without parameters have no bad input and need no case.

Each case is (entry point, the argument it gets wrong, a call with that argument wrong); the
test asserts an :class:`xpcnn.errors.XpcnnError` (which is also a ValueError / TypeError /
RuntimeError) whose message names the argument (for a file or a config entry, naming the file
or the entry's location also identifies it). tests/test_validation.py checks the messages
of the core ops and layers in detail; this walk checks that nothing public is left out.
"""

from __future__ import annotations

import importlib
import inspect
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F
from xpcnn import layers, optim
from xpcnn.errors import XpcnnError

MODULES_BY_NAME = ("callbacks", "interop", "dask", "testing", "notebook", "export")


# --- discovery -------------------------------------------------------------------------------------


def _public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__]


def _add(found: dict[str, object], qualified: str, obj: object) -> None:
    if inspect.ismodule(obj):
        for name in _public_names(obj):
            _add(found, f"{qualified}.{name}", getattr(obj, name))
    elif inspect.isclass(obj) and issubclass(obj, BaseException):
        return  # the errors themselves
    elif callable(obj):
        found[qualified] = obj


def discover() -> dict[str, object]:
    """Qualified name -> public callable (function, class, or Sequential method)."""
    found: dict[str, object] = {}
    for name in xpcnn.__all__:
        _add(found, f"xpcnn.{name}", getattr(xpcnn, name))
    for name in MODULES_BY_NAME:
        try:
            module = importlib.import_module(f"xpcnn.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"xpcnn.{name}":
                raise  # the module exists but cannot be imported: that is a failure, not absence
            continue
        _add(found, f"xpcnn.{name}", module)
    for name, obj in vars(xpcnn.Sequential).items():
        # forward / backward are the layer contract and infer their inference form, run on checked batches;
        # __call__ and predict check.
        if (not name.startswith("_") or name == "__call__") and name not in ("forward", "infer", "backward"):
            found[f"xpcnn.Sequential.{name}"] = obj.fget if isinstance(obj, property) else obj
    return found


def takes_arguments(obj: object) -> bool:
    """Whether callers pass it anything (``self`` / ``cls`` of methods do not count)."""
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    try:
        parameters = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return True
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    return bool(parameters)


# --- the cases -------------------------------------------------------------------------------------

CASES: dict[str, list[tuple[str, Callable[[], object], str | None]]] = {}
# Records xpcnn returns and never takes back: there is no input of the user's to check.
RETURNED_ONLY = {"xpcnn.testing.ParityResult", "xpcnn.testing.GradcheckResult", "xpcnn.functional.WindowArgmax",
                 "xpcnn.layers.Param", "xpcnn.layers.Buffer"}


def case(entry: str, argument: str, call: Callable[[], object], *, or_shows: str | None = None) -> None:
    """Register a bad call of ``entry``; its message must name ``argument`` (or show ``or_shows``:
    the path of a file, the location of a config entry)."""
    CASES.setdefault(entry, []).append((argument, call, or_shows))


X = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
Y = np.array([1, 2])
W = np.random.default_rng(1).random((3, 1, 3, 3)).astype(np.float32)
Z = np.zeros((2, 3), np.float32)
LABELS = np.array([0, 2])
G_POOL = np.zeros((2, 1, 4, 4), np.float32)  # the gradient of a 2x2 pool of X
MISSING_DIR = Path("/nonexistent-xpcnn-dir")


def model():
    """A small built float32 model on NumPy (a fresh one per call: cases must not share state)."""
    net = xpcnn.Sequential([layers.Conv2D(2, 3), layers.ReLU(), layers.Flatten(), layers.Dense(3)])
    return net.build((1, 8, 8), seed=0)


def after_forward(m):
    m(X)
    return m


def rng():
    return np.random.default_rng(0)


_files = tempfile.TemporaryDirectory(prefix="xpcnn-walk-")


def saved_model() -> Path:
    path = Path(_files.name) / "model.safetensors"
    if not path.exists():
        model().save(path)
    return path


# xpcnn.*
case("xpcnn.Sequential", "layers", lambda: xpcnn.Sequential("not layers"))
case("xpcnn.Sequential", "layers", lambda: xpcnn.Sequential([layers.ReLU(), 3]))
case("xpcnn.Sequential", "layers", lambda: xpcnn.Sequential([]))
case("xpcnn.load", "path", lambda: xpcnn.load(MISSING_DIR / "m.safetensors"), or_shows=str(MISSING_DIR))
case("xpcnn.load", "path", lambda: xpcnn.load(3))
case("xpcnn.load", "backend", lambda: xpcnn.load(saved_model(), backend="no-such-backend"))
case("xpcnn.set_backend", "backend", lambda: xpcnn.set_backend("no-such-backend"))
case("xpcnn.set_backend", "backend", lambda: xpcnn.set_backend(3))
case("xpcnn.use_backend", "backend", lambda: xpcnn.use_backend("no-such-backend").__enter__())
case("xpcnn.fewest_operations", "enabled", lambda: xpcnn.fewest_operations("yes").__enter__())
case("xpcnn.namespace_of", "arrays", lambda: xpcnn.namespace_of(X, [1.0, 2.0]))
# set_backend, use_backend, to_device and Sequential.to take a backend spec: "backend" names it
case("xpcnn.to_device", "backend", lambda: xpcnn.to_device(X, "no-such-backend"))
case("xpcnn.to_device", "x", lambda: xpcnn.to_device([1.0], "numpy"))
case("xpcnn.to_numpy", "x", lambda: xpcnn.to_numpy("not an array"))

# Sequential methods
case("xpcnn.Sequential.build", "input_shape", lambda: xpcnn.Sequential([layers.Flatten()]).build((1, -8, 8)))
case("xpcnn.Sequential.build", "seed", lambda: xpcnn.Sequential([layers.Flatten()]).build((1, 8, 8), seed=-1))
case("xpcnn.Sequential.build", "dtype", lambda: xpcnn.Sequential([layers.Flatten()]).build((1, 8, 8), dtype="int32"))
case("xpcnn.Sequential.build", "backend", lambda: xpcnn.Sequential([layers.Flatten()]).build((1, 8, 8), backend="nope"))
case("xpcnn.Sequential.set_weights", "weights", lambda: model().set_weights(model().get_weights()[:1]))
case("xpcnn.Sequential.set_weights", "weights", lambda: model().set_weights(None))
case("xpcnn.Sequential.set_buffers", "buffers", lambda: model().set_buffers([np.zeros(3)]))
case("xpcnn.Sequential.set_buffers", "buffers", lambda: model().set_buffers(None))
case("xpcnn.Sequential.set_layer_states", "states", lambda: model().set_layer_states("not a dict"))
case("xpcnn.Sequential.set_layer_states", "states", lambda: model().set_layer_states({"99": {}}))
case("xpcnn.Sequential.to", "backend", lambda: model().to("no-such-backend"))
case("xpcnn.Sequential.to", "backend", lambda: model().to(3.5))
case("xpcnn.Sequential.state_shapes", "input_shape", lambda: model().state_shapes((1, 0, 8)))
case("xpcnn.Sequential.to_bytes", "kind", lambda: model().to_bytes(kind="no-such-kind"))
case("xpcnn.Sequential.to_bytes", "metadata", lambda: model().to_bytes(metadata={"k": 3}))
case("xpcnn.Sequential.to_bytes", "tensors", lambda: model().to_bytes(tensors="not a dict"))
case("xpcnn.Sequential.save", "path", lambda: model().save(MISSING_DIR / "m.safetensors"), or_shows=str(MISSING_DIR))
case("xpcnn.Sequential.save", "path", lambda: model().save(3))
case("xpcnn.Sequential.check_input", "x", lambda: model().check_input(X.tolist()))
case("xpcnn.Sequential.check_input", "x", lambda: model().check_input(X[:, :, :7]))
case("xpcnn.Sequential.__call__", "x", lambda: model()(X.astype(np.int64)))
case("xpcnn.Sequential.__call__", "training", lambda: model()(X, training="yes"))
case("xpcnn.Sequential.__call__", "x", lambda: model()(X[0]))
case("xpcnn.Sequential.output_shape", "input_shape", lambda: model().output_shape((1, 2, 2)))
case("xpcnn.Sequential.predict_classes", "x", lambda: model().predict_classes(X[:, :, :7]))
case("xpcnn.Sequential.reset_weights", "seed", lambda: model().reset_weights(seed=-2))
case("xpcnn.Sequential.summary", "print_fn", lambda: model().summary(print_fn=3))
case("xpcnn.layers.Container", "branches", lambda: layers.Container([layers.ReLU()]))
case("xpcnn.Sequential.train_step", "x", lambda: model().train_step(X.tolist(), Y, optim.SGD(0.1)))
case("xpcnn.Sequential.train_step", "y", lambda: model().train_step(X, np.array([1, 7]), optim.SGD(0.1)))
case("xpcnn.Sequential.train_step", "optimizer", lambda: model().train_step(X, Y, "sgd"))
case("xpcnn.Sequential.train_step", "label_smoothing",
     lambda: model().train_step(X, Y, optim.SGD(0.1), label_smoothing=1.5))
case("xpcnn.Sequential.loss_and_grad", "x", lambda: model().loss_and_grad(X.tolist(), Y))
case("xpcnn.Sequential.loss_and_grad", "y", lambda: model().loss_and_grad(X, np.array([0, 3])))
case("xpcnn.Sequential.loss_and_grad", "label_smoothing", lambda: model().loss_and_grad(X, Y, label_smoothing=-1.0))
case("xpcnn.Sequential.predict", "x", lambda: model().predict(X[:, :, :, :7]))
case("xpcnn.Sequential.predict", "batch_size", lambda: model().predict(X, batch_size=0))
case("xpcnn.Sequential.fit", "x", lambda: model().fit("images", Y, verbose=0))
case("xpcnn.Sequential.fit", "y", lambda: model().fit(X, np.array([1, 2, 3]), verbose=0))
case("xpcnn.Sequential.fit", "epochs", lambda: model().fit(X, Y, epochs=-1, verbose=0))
case("xpcnn.Sequential.fit", "batch_size", lambda: model().fit(X, Y, batch_size=0, verbose=0))
case("xpcnn.Sequential.fit", "optimizer", lambda: model().fit(X, Y, optimizer="adam", verbose=0))
case("xpcnn.Sequential.fit", "validation_data", lambda: model().fit(X, Y, validation_data=X, verbose=0))
case("xpcnn.Sequential.fit", "validation_data", lambda: model().fit(X, Y, validation_data=(X, None), verbose=0))
case("xpcnn.Sequential.fit", "seed", lambda: model().fit(X, Y, seed="0", verbose=0))
case("xpcnn.Sequential.fit", "callbacks", lambda: model().fit(X, Y, callbacks=[print], verbose=0))
case("xpcnn.Sequential.fit", "verbose", lambda: model().fit(X, Y, verbose=-3))
case("xpcnn.Sequential.fit", "checkpoint_dir", lambda: model().fit(X, Y, checkpoint_dir=3, verbose=0))
case("xpcnn.Sequential.fit", "resume_from", lambda: model().fit(X, Y, resume_from=MISSING_DIR, verbose=0))
case("xpcnn.Sequential.fit", "label_smoothing", lambda: model().fit(X, Y, label_smoothing=-0.1, verbose=0))
case("xpcnn.Sequential.fit", "sync_every", lambda: model().fit(X, Y, sync_every=0, verbose=0))
case("xpcnn.Sequential.fit", "shuffle", lambda: model().fit(X, Y, shuffle="yes", verbose=0))
case("xpcnn.Sequential.fit", "compile", lambda: model().fit(X, Y, compile="yes", verbose=0))
case("xpcnn.Sequential.fit", "distributed", lambda: model().fit(X, Y, distributed="yes", verbose=0))
case("xpcnn.Sequential.evaluate", "x", lambda: model().evaluate(X.astype(np.int64), Y))
case("xpcnn.Sequential.evaluate", "y", lambda: model().evaluate(X, np.array([0.5, 1.5])))
case("xpcnn.Sequential.evaluate", "batch_size", lambda: model().evaluate(X, Y, batch_size=-2))
case("xpcnn.Sequential.evaluate", "distributed", lambda: model().evaluate(X, Y, distributed="yes"))
case("xpcnn.Sequential.from_config", "config", lambda: xpcnn.Sequential.from_config("not a config"))
case("xpcnn.Sequential.from_config", "config", lambda: xpcnn.Sequential.from_config({"layers": [{"class": "Nope"}]}))

# layers: every constructor
case("xpcnn.layers.Conv2D", "out_channels", lambda: layers.Conv2D(0, 3))
case("xpcnn.layers.Conv2D", "kernel_size", lambda: layers.Conv2D(4, "3"))
case("xpcnn.layers.Conv2D", "stride", lambda: layers.Conv2D(4, 3, stride=0))
case("xpcnn.layers.Conv2D", "padding", lambda: layers.Conv2D(4, 3, padding=-1))
case("xpcnn.layers.Conv2D", "dilation", lambda: layers.Conv2D(4, 3, dilation=0))
case("xpcnn.layers.Conv2D", "groups", lambda: layers.Conv2D(4, 3, groups=0))
case("xpcnn.layers.Conv2D", "groups", lambda: layers.Conv2D(4, 3, groups=3))
case("xpcnn.layers.Conv2D", "bias", lambda: layers.Conv2D(4, 3, bias="no"))
case("xpcnn.layers.Conv2D", "weight_init", lambda: layers.Conv2D(4, 3, weight_init="no-such-init"))
case("xpcnn.layers.Conv2D", "bias_init", lambda: layers.Conv2D(4, 3, bias_init=3))
case("xpcnn.layers.Conv2DTranspose", "out_channels", lambda: layers.Conv2DTranspose(-1, 3))
case("xpcnn.layers.Conv2DTranspose", "kernel_size", lambda: layers.Conv2DTranspose(4, 0))
case("xpcnn.layers.Conv2DTranspose", "output_padding", lambda: layers.Conv2DTranspose(4, 3, output_padding=-1))
case("xpcnn.layers.Conv2DTranspose", "output_padding",
     lambda: layers.Conv2DTranspose(4, 3, stride=2, output_padding=2))
case("xpcnn.layers.Conv2DTranspose", "weight_init", lambda: layers.Conv2DTranspose(4, 3, weight_init="nope"))
case("xpcnn.layers.AvgPool2D", "kernel_size", lambda: layers.AvgPool2D(0))
case("xpcnn.layers.AvgPool2D", "stride", lambda: layers.AvgPool2D(2, stride=2.5))
case("xpcnn.layers.AvgPool2D", "padding", lambda: layers.AvgPool2D(2, padding=-1))
case("xpcnn.layers.AvgPool2D", "ceil_mode", lambda: layers.AvgPool2D(2, ceil_mode="yes"))
case("xpcnn.layers.AvgPool2D", "count_include_pad", lambda: layers.AvgPool2D(2, count_include_pad=None))
case("xpcnn.layers.MaxPool2D", "kernel_size", lambda: layers.MaxPool2D(None))
case("xpcnn.layers.MaxPool2D", "padding", lambda: layers.MaxPool2D(2, padding=2))
case("xpcnn.layers.MaxPool2D", "ceil_mode", lambda: layers.MaxPool2D(2, ceil_mode=1.5))
case("xpcnn.layers.Dense", "units", lambda: layers.Dense(0))
case("xpcnn.layers.Dense", "units", lambda: layers.Dense(2.5))
case("xpcnn.layers.Dense", "bias", lambda: layers.Dense(3, bias=None))
case("xpcnn.layers.Dense", "weight_init", lambda: layers.Dense(3, weight_init="nope"))
case("xpcnn.layers.LeakyReLU", "negative_slope", lambda: layers.LeakyReLU("0.1"))
case("xpcnn.layers.LeakyReLU", "negative_slope", lambda: layers.LeakyReLU(float("nan")))
case("xpcnn.layers.GELU", "approximate", lambda: layers.GELU("erf"))
case("xpcnn.layers.BatchNorm2D", "momentum", lambda: layers.BatchNorm2D(momentum=1.5))
case("xpcnn.layers.BatchNorm2D", "eps", lambda: layers.BatchNorm2D(eps=-1e-5))
case("xpcnn.layers.BatchNorm1D", "momentum", lambda: layers.BatchNorm1D(momentum=-0.1))
case("xpcnn.layers.BatchNorm1D", "eps", lambda: layers.BatchNorm1D(eps="small"))
case("xpcnn.layers.Dropout", "p", lambda: layers.Dropout(1.5))
case("xpcnn.layers.Dropout", "p", lambda: layers.Dropout("half"))
case("xpcnn.layers.Dropout", "seed", lambda: layers.Dropout(0.5, seed=-1))
case("xpcnn.layers.RandomFlip", "mode", lambda: layers.RandomFlip("diagonal"))
case("xpcnn.layers.RandomFlip", "seed", lambda: layers.RandomFlip(seed=1.5))
case("xpcnn.layers.RandomCrop", "size", lambda: layers.RandomCrop(0))
case("xpcnn.layers.RandomCrop", "padding", lambda: layers.RandomCrop(4, padding=-1))
case("xpcnn.layers.RandomTranslation", "height_factor", lambda: layers.RandomTranslation(1.5, 0.1))
case("xpcnn.layers.RandomTranslation", "width_factor", lambda: layers.RandomTranslation(0.1, "a"))
case("xpcnn.layers.Normalize", "mean", lambda: layers.Normalize([], 1.0))
case("xpcnn.layers.Normalize", "std", lambda: layers.Normalize(0.0, -1.0))
case("xpcnn.layers.Residual", "block", lambda: layers.Residual("not a layer"))
case("xpcnn.layers.Residual", "block", lambda: layers.Residual([]))
case("xpcnn.layers.Residual", "shortcut", lambda: layers.Residual([layers.ReLU()], shortcut=3))
case("xpcnn.layers.register", "cls", lambda: layers.register(int))
case("xpcnn.layers.register", "cls", lambda: layers.register("Conv2D"))
case("xpcnn.layers.layer_from_config", "spec", lambda: layers.layer_from_config({"class": "Nope"}, "model.json"),
     or_shows="model.json")
case("xpcnn.layers.layer_from_config", "spec", lambda: layers.layer_from_config(3, "model.json"), or_shows="model.json")
case("xpcnn.layers.layers_from_config", "specs", lambda: layers.layers_from_config("not a list", "model.json"),
     or_shows="model.json")

# layers: forward on every built layer refuses what is not an array (each layer with a small input)
LAYER_SETUPS = {
    "Conv2D": (lambda: layers.Conv2D(2, 3), (1, 8, 8)),
    "Conv2DTranspose": (lambda: layers.Conv2DTranspose(2, 3), (1, 8, 8)),
    "AvgPool2D": (lambda: layers.AvgPool2D(2), (1, 8, 8)),
    "MaxPool2D": (lambda: layers.MaxPool2D(2), (1, 8, 8)),
    "GlobalAvgPool2D": (layers.GlobalAvgPool2D, (1, 8, 8)),
    "Dense": (lambda: layers.Dense(3), (4,)),
    "ReLU": (layers.ReLU, (4,)),
    "LeakyReLU": (layers.LeakyReLU, (4,)),
    "Tanh": (layers.Tanh, (4,)),
    "Sigmoid": (layers.Sigmoid, (4,)),
    "GELU": (layers.GELU, (4,)),
    "Flatten": (layers.Flatten, (1, 8, 8)),
    "BatchNorm2D": (layers.BatchNorm2D, (2, 8, 8)),
    "BatchNorm1D": (layers.BatchNorm1D, (4,)),
    "Dropout": (layers.Dropout, (4,)),
    "Residual": (lambda: layers.Residual([layers.Dense(4)]), (4,)),
    "RandomFlip": (layers.RandomFlip, (1, 8, 8)),
    "RandomCrop": (lambda: layers.RandomCrop(6, padding=1), (1, 8, 8)),
    "RandomTranslation": (lambda: layers.RandomTranslation(0.2, 0.2), (1, 8, 8)),
    "Normalize": (lambda: layers.Normalize(0.5, 0.2), (1, 8, 8)),
}


def built_layer(name: str):
    make, input_shape = LAYER_SETUPS[name]
    layer = make()
    xpcnn.Sequential([layer]).build(input_shape, seed=0)
    return layer


def layer_classes() -> list[str]:
    return sorted(name for name, obj in ENTRY_POINTS.items() if name.startswith("xpcnn.layers.")
                  and inspect.isclass(obj) and issubclass(obj, layers.Layer)
                  and obj not in (layers.Layer, layers.Container))  # the two bases


# optim
case("xpcnn.optim.Optimizer", "lr", lambda: optim.Optimizer(-1.0))
case("xpcnn.optim.SGD", "lr", lambda: optim.SGD(-0.1))
case("xpcnn.optim.SGD", "lr", lambda: optim.SGD("0.1"))
case("xpcnn.optim.SGD", "momentum", lambda: optim.SGD(0.1, momentum=-0.5))
case("xpcnn.optim.SGD", "nesterov", lambda: optim.SGD(0.1, nesterov="yes"))
case("xpcnn.optim.SGD", "nesterov", lambda: optim.SGD(0.1, momentum=0.9, nesterov="no"))  # not truthy-as-True
case("xpcnn.optim.SGD", "weight_decay", lambda: optim.SGD(0.1, weight_decay=float("inf")))
case("xpcnn.optim.Adam", "lr", lambda: optim.Adam(lr=None))
case("xpcnn.optim.Adam", "betas", lambda: optim.Adam(betas=(0.9,)))
case("xpcnn.optim.Adam", "eps", lambda: optim.Adam(eps=-1.0))
case("xpcnn.optim.Adam", "weight_decay", lambda: optim.Adam(weight_decay=-1.0))
case("xpcnn.optim.AdamW", "lr", lambda: optim.AdamW(lr=-1e-3))
case("xpcnn.optim.AdamW", "betas", lambda: optim.AdamW(betas=(1.0, 0.999)))
case("xpcnn.optim.AdamW", "weight_decay", lambda: optim.AdamW(weight_decay="0.01"))

# init: the initialisers and the name lookup
for _name in ("zeros", "ones", "he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "torch_default",
              "notebook"):
    case(f"xpcnn.init.{_name}", "shape", lambda _n=_name: getattr(xpcnn.init, _n)(rng(), (3, -3), 3, 3))
for _name in ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "torch_default", "notebook"):
    case(f"xpcnn.init.{_name}", "rng", lambda _n=_name: getattr(xpcnn.init, _n)(None, (3, 3), 3, 3))
for _name in ("he_normal", "he_uniform", "torch_default", "notebook"):  # the ones dividing by fan_in
    case(f"xpcnn.init.{_name}", "fan_in", lambda _n=_name: getattr(xpcnn.init, _n)(rng(), (3, 3), 0, 3))
case("xpcnn.init.get", "weight_init", lambda: xpcnn.init.get("no-such-init", "weight_init"))
case("xpcnn.init.get", "weight_init", lambda: xpcnn.init.get(3, "weight_init"))

# functional
case("xpcnn.functional.conv2d", "x", lambda: F.conv2d(X[0], W))
case("xpcnn.functional.conv2d", "weight", lambda: F.conv2d(X, W.astype(np.float64)))
case("xpcnn.functional.conv2d", "stride", lambda: F.conv2d(X, W, stride=0))
case("xpcnn.functional.conv2d", "groups", lambda: F.conv2d(X, W, groups=2))
case("xpcnn.functional.conv2d_forward", "x", lambda: F.conv2d_forward(X.tolist(), W))
case("xpcnn.functional.conv2d_forward", "padding", lambda: F.conv2d_forward(X, W, padding=-1))
case("xpcnn.functional.conv2d_backward", "grad_y", lambda: F.conv2d_backward(np.zeros((2, 3, 5, 5), np.float32), X, W))
case("xpcnn.functional.conv2d_backward", "cols", lambda: F.conv2d_backward(np.zeros((2, 3, 6, 6), np.float32), X, W,
                                                                           cols="not columns"))
case("xpcnn.functional.avg_pool2d", "kernel_size", lambda: F.avg_pool2d(X, 0))
case("xpcnn.functional.avg_pool2d", "x", lambda: F.avg_pool2d(X.astype(np.int32), 2))
case("xpcnn.functional.avg_pool2d_backward", "grad_y", lambda: F.avg_pool2d_backward(G_POOL[:, :, :3, :3], X, 2))
case("xpcnn.functional.max_pool2d", "dilation", lambda: F.max_pool2d(X, 2, dilation=0))
case("xpcnn.functional.max_pool2d", "x", lambda: F.max_pool2d("x", 2))
case("xpcnn.functional.max_pool2d_forward", "kernel_size", lambda: F.max_pool2d_forward(X, (2, 0)))
case("xpcnn.functional.max_pool2d_backward", "grad_y", lambda: F.max_pool2d_backward(G_POOL[:, :, :3, :3], X, 2))
case("xpcnn.functional.max_pool2d_backward", "taps", lambda: F.max_pool2d_backward(G_POOL, X, 2, taps="not taps"))
case("xpcnn.functional.max_pool2d_backward", "taps", lambda: F.max_pool2d_backward(
    G_POOL, X, 2, y=G_POOL, taps=F.WindowArgmax(np.zeros((2, 1, 3, 3), np.int64))))
case("xpcnn.functional.max_pool2d_backward", "method", lambda: F.max_pool2d_backward(G_POOL, X, 2, method="scatter"))
case("xpcnn.functional.max_pool_method", "method", lambda: F.max_pool_method(X, "scatter"))
case("xpcnn.functional.relu", "x", lambda: F.relu(np.zeros(3, np.complex64)))
case("xpcnn.functional.relu_backward", "grad_y", lambda: F.relu_backward(np.zeros(4), np.zeros(3)))
case("xpcnn.functional.softmax", "axis", lambda: F.softmax(Z, axis=2))
case("xpcnn.functional.softmax", "z", lambda: F.softmax([1.0, 2.0]))
case("xpcnn.functional.softmax_backward", "grad_y", lambda: F.softmax_backward(np.zeros((2, 4)), Z))
case("xpcnn.functional.log_softmax", "z", lambda: F.log_softmax(np.zeros((2, 0))))
case("xpcnn.functional.log_softmax_backward", "axis", lambda: F.log_softmax_backward(Z, Z, axis="last"))
case("xpcnn.functional.linear", "x", lambda: F.linear(np.zeros((2, 4), np.float32), np.zeros((3, 5), np.float32)))
case("xpcnn.functional.linear", "bias", lambda: F.linear(Z, np.zeros((3, 5), np.float32), np.zeros(4, np.float32)))
case("xpcnn.functional.linear_backward", "grad_y",
     lambda: F.linear_backward(np.zeros((2, 4)), np.zeros((2, 3)), np.zeros((3, 5))))
case("xpcnn.functional.cross_entropy", "labels", lambda: F.cross_entropy(Z, np.array([0, 3])))
case("xpcnn.functional.cross_entropy", "logits", lambda: F.cross_entropy(np.zeros(3, np.float32), LABELS))
case("xpcnn.functional.cross_entropy_backward", "labels", lambda: F.cross_entropy_backward(Z, np.array([0.0, 1.0])))
case("xpcnn.functional.cross_entropy_with_grad", "labels", lambda: F.cross_entropy_with_grad(Z, np.array([-1, 0])))
case("xpcnn.functional.one_hot", "num_classes", lambda: F.one_hot(LABELS, 0, np.float32))
case("xpcnn.functional.one_hot", "labels", lambda: F.one_hot(np.zeros(2), 3, np.float32))

case("xpcnn.functional.conv_transpose2d", "x", lambda: F.conv_transpose2d(X.tolist(), W.transpose(1, 0, 2, 3)))
case("xpcnn.functional.conv_transpose2d", "output_padding",
     lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), stride=2, output_padding=2))
case("xpcnn.functional.conv_transpose2d_backward", "grad_y",
     lambda: F.conv_transpose2d_backward(G_POOL, X, W.transpose(1, 0, 2, 3)))
case("xpcnn.functional.conv_transpose2d_backward", "input_grad",
     lambda: F.conv_transpose2d_backward(np.zeros((2, 3, 10, 10), np.float32), X, W.transpose(1, 0, 2, 3),
                                         input_grad="no"))
case("xpcnn.functional.global_avg_pool2d", "x", lambda: F.global_avg_pool2d(Z))
case("xpcnn.functional.global_avg_pool2d_backward", "grad_y", lambda: F.global_avg_pool2d_backward(np.zeros((2, 5)), X))
for _name in ("tanh", "sigmoid", "gelu", "leaky_relu"):
    case(f"xpcnn.functional.{_name}", "x", lambda _n=_name: getattr(F, _n)(np.zeros(3, np.int64)))
    case(f"xpcnn.functional.{_name}_backward", "grad_y",
         lambda _n=_name: getattr(F, f"{_n}_backward")(np.zeros(4, np.float32), np.zeros(3, np.float32)))
case("xpcnn.functional.leaky_relu", "negative_slope", lambda: F.leaky_relu(Z, negative_slope="0.1"))
case("xpcnn.functional.leaky_relu_backward", "negative_slope", lambda: F.leaky_relu_backward(Z, Z, negative_slope=None))
C2 = np.ones(2, np.float32)  # per-channel parameters and statistics for 2 channels
case("xpcnn.functional.batch_norm", "x", lambda: F.batch_norm(np.zeros(4, np.float32), C2, C2, C2, C2, training=True))
case("xpcnn.functional.batch_norm", "weight", lambda: F.batch_norm(Z[:, :2], C2[:1], C2, C2, C2, training=True))
case("xpcnn.functional.batch_norm", "momentum",
     lambda: F.batch_norm(Z[:, :2], C2, C2, C2, C2, training=True, momentum=2.0))
case("xpcnn.functional.batch_norm", "eps", lambda: F.batch_norm(Z[:, :2], C2, C2, C2, C2, training=False, eps=-1.0))
case("xpcnn.functional.batch_norm", "training", lambda: F.batch_norm(Z[:, :2], C2, C2, C2, C2, training="yes"))
case("xpcnn.functional.batch_norm_backward", "grad_y",
     lambda: F.batch_norm_backward(np.zeros((2, 3), np.float32), Z[:, :2], C2, None, training=True))
case("xpcnn.functional.batch_norm_backward", "saved",
     lambda: F.batch_norm_backward(Z[:, :2], Z[:, :2], C2, "not saved", training=True))
case("xpcnn.functional.dropout_mask", "p", lambda: F.dropout_mask(Z, 1.5, seed=0, counter=0))
case("xpcnn.functional.dropout_mask", "seed", lambda: F.dropout_mask(Z, 0.5, seed=-1, counter=0))
case("xpcnn.functional.dropout_mask", "counter", lambda: F.dropout_mask(Z, 0.5, seed=0, counter="0"))
case("xpcnn.functional.dropout_mask", "like", lambda: F.dropout_mask([1.0, 2.0], 0.5, seed=0, counter=0))
case("xpcnn.functional.dropout", "mask", lambda: F.dropout(Z, np.ones((2, 4), np.float32)))
case("xpcnn.functional.dropout", "x", lambda: F.dropout("x", Z))
case("xpcnn.functional.dropout_backward", "mask", lambda: F.dropout_backward(Z, Z.astype(np.float64)))

# datasets
for _name in ("load_data", "load_mnist"):
    case(f"xpcnn.datasets.{_name}", "source", lambda _n=_name: getattr(xpcnn.datasets, _n)("cifar100"))
    case(f"xpcnn.datasets.{_name}", "path", lambda _n=_name: getattr(xpcnn.datasets, _n)("cifar10"))
    case(f"xpcnn.datasets.{_name}", "path", lambda _n=_name: getattr(xpcnn.datasets, _n)("cifar10", MISSING_DIR))
    case(f"xpcnn.datasets.{_name}", "path", lambda _n=_name: getattr(xpcnn.datasets, _n)("mnist", MISSING_DIR))
    case(f"xpcnn.datasets.{_name}", "path", lambda _n=_name: getattr(xpcnn.datasets, _n)("mnist5k", 3))
PIXELS = np.zeros((2, 4, 4), np.uint8)
for _name in ("preprocess", "to_float_images"):
    case(f"xpcnn.datasets.{_name}", "images", lambda _n=_name: getattr(xpcnn.datasets, _n)(PIXELS[:, None, None]))
    case(f"xpcnn.datasets.{_name}", "images", lambda _n=_name: getattr(xpcnn.datasets, _n)(PIXELS.astype(float)))
    case(f"xpcnn.datasets.{_name}", "dtype", lambda _n=_name: getattr(xpcnn.datasets, _n)(PIXELS, "int8"))
case("xpcnn.datasets.image_folder", "path", lambda: xpcnn.datasets.image_folder(MISSING_DIR))
case("xpcnn.datasets.image_folder", "path", lambda: xpcnn.datasets.image_folder(3))
case("xpcnn.datasets.image_folder", "image_size", lambda: xpcnn.datasets.image_folder(_files.name, image_size=(0, 3)))
case("xpcnn.datasets.image_folder", "color", lambda: xpcnn.datasets.image_folder(_files.name, color="cmyk"))
case("xpcnn.datasets.image_folder", "on_error", lambda: xpcnn.datasets.image_folder(_files.name, on_error="ignore"))
case("xpcnn.datasets.image_folder", "subset", lambda: xpcnn.datasets.image_folder(_files.name, subset="training"))
case("xpcnn.datasets.image_folder", "seed", lambda: xpcnn.datasets.image_folder(_files.name, seed=-1))
case("xpcnn.datasets.image_folder", "validation_split",
     lambda: xpcnn.datasets.image_folder(_files.name, validation_split=1.5, subset="training"))
case("xpcnn.datasets.ArrayDataset", "x", lambda: xpcnn.datasets.ArrayDataset([[1.0]]))
case("xpcnn.datasets.ArrayDataset", "y", lambda: xpcnn.datasets.ArrayDataset(X, np.zeros(3, np.int64)))
case("xpcnn.datasets.ArrayDataset", "class_names", lambda: xpcnn.datasets.ArrayDataset(X, class_names="ab"))
case("xpcnn.datasets.ArrayDataset", "class_names", lambda: xpcnn.datasets.ArrayDataset(X, class_names=3))
case("xpcnn.datasets.NpyDataset", "x_path", lambda: xpcnn.datasets.NpyDataset(3))
case("xpcnn.datasets.NpyDataset", "x_path", lambda: xpcnn.datasets.NpyDataset(MISSING_DIR / "x.npy"))
case("xpcnn.datasets.Prefetcher", "dataset", lambda: xpcnn.datasets.Prefetcher(X))
case("xpcnn.datasets.Prefetcher", "workers", lambda: xpcnn.datasets.Prefetcher(xpcnn.datasets.ArrayDataset(X), 0))
case("xpcnn.datasets.check_batch_size", "batch_size", lambda: xpcnn.datasets.check_batch_size(0))
case("xpcnn.datasets.iterate_batches", "n", lambda: xpcnn.datasets.iterate_batches(-1, 2, shuffle=False))
case("xpcnn.datasets.iterate_batches", "shuffle", lambda: xpcnn.datasets.iterate_batches(6, 2, shuffle="no"))
case("xpcnn.datasets.iterate_batches", "batch_size", lambda: xpcnn.datasets.iterate_batches(10, 2.0, shuffle=False))
case("xpcnn.datasets.iterate_batches", "rng", lambda: xpcnn.datasets.iterate_batches(10, 2, rng=0))

# callbacks
cb = importlib.import_module("xpcnn.callbacks")
case("xpcnn.callbacks.History", "history", lambda: cb.History(history="not a dict"))
case("xpcnn.callbacks.History", "initial_epoch", lambda: cb.History(initial_epoch=-1))
case("xpcnn.callbacks.format_metrics", "logs", lambda: cb.format_metrics(None))
case("xpcnn.callbacks.ProgressBar", "verbose", lambda: cb.ProgressBar(verbose=5))
case("xpcnn.callbacks.ProgressBar", "file", lambda: cb.ProgressBar(file="stdout"))
case("xpcnn.callbacks.NotebookLogger", "every", lambda: cb.NotebookLogger(every=0))
case("xpcnn.callbacks.NotebookLogger", "print_fn", lambda: cb.NotebookLogger(print_fn="print"))
case("xpcnn.callbacks.ModelCheckpoint", "directory", lambda: cb.ModelCheckpoint(3))
case("xpcnn.callbacks.ModelCheckpoint", "keep", lambda: cb.ModelCheckpoint("runs/ckpt", keep=0))
case("xpcnn.callbacks.LearningRateScheduler", "schedule", lambda: cb.LearningRateScheduler(0.1))
case("xpcnn.callbacks.LearningRateScheduler", "verbose", lambda: cb.LearningRateScheduler(max, verbose="x"))
case("xpcnn.callbacks.cosine_schedule", "initial_lr", lambda: cb.cosine_schedule(-0.1, 10))
case("xpcnn.callbacks.cosine_schedule", "epochs", lambda: cb.cosine_schedule(0.1, 0))
case("xpcnn.callbacks.cosine_schedule", "min_lr", lambda: cb.cosine_schedule(0.1, 10, min_lr=0.2))
case("xpcnn.callbacks.step_schedule", "initial_lr", lambda: cb.step_schedule("0.1", [5]))
case("xpcnn.callbacks.step_schedule", "milestones", lambda: cb.step_schedule(0.1, [-5]))
case("xpcnn.callbacks.step_schedule", "milestones", lambda: cb.step_schedule(0.1, 5))
case("xpcnn.callbacks.step_schedule", "gamma", lambda: cb.step_schedule(0.1, [5], gamma=0))
case("xpcnn.callbacks.EarlyStopping", "monitor", lambda: cb.EarlyStopping(monitor=3))
case("xpcnn.callbacks.EarlyStopping", "patience", lambda: cb.EarlyStopping(patience=-1))
case("xpcnn.callbacks.EarlyStopping", "min_delta", lambda: cb.EarlyStopping(min_delta=-0.1))
case("xpcnn.callbacks.EarlyStopping", "mode", lambda: cb.EarlyStopping(mode="up"))
case("xpcnn.callbacks.EarlyStopping", "baseline", lambda: cb.EarlyStopping(baseline="low"))
case("xpcnn.callbacks.EarlyStopping", "restore_best_weights", lambda: cb.EarlyStopping(restore_best_weights="yes"))
case("xpcnn.callbacks.EarlyStopping", "start_from_epoch", lambda: cb.EarlyStopping(start_from_epoch=-2))
case("xpcnn.callbacks.EarlyStopping", "verbose", lambda: cb.EarlyStopping(verbose=None))
case("xpcnn.callbacks.LambdaCallback", "on_epoch_end", lambda: cb.LambdaCallback(on_epoch_end="print"))
case("xpcnn.callbacks.LambdaCallback", "on_epoch_ended", lambda: cb.LambdaCallback(on_epoch_ended=print))

# xpcnn.zoo
for _name in ("default_cnn", "notebook_cnn", "resnet8"):
    case(f"xpcnn.zoo.{_name}", "num_classes", lambda _n=_name: getattr(xpcnn.zoo, _n)(0))
    case(f"xpcnn.zoo.{_name}", "num_classes", lambda _n=_name: getattr(xpcnn.zoo, _n)("10"))
case("xpcnn.zoo.get", "model", lambda: xpcnn.zoo.get("no-such-network"))

# xpcnn.dask
xdask = importlib.import_module("xpcnn.dask")
case("xpcnn.dask.predict", "x", lambda: xdask.predict(model(), X))
case("xpcnn.dask.predict", "batch_size", lambda: xdask.predict(model(), X, batch_size=0))
case("xpcnn.dask.predict", "model", lambda: xdask.predict("model", X))
case("xpcnn.dask.evaluate", "backend", lambda: xdask.evaluate(model(), X, Y, backend=3))
case("xpcnn.dask.evaluate", "model", lambda: xdask.evaluate(None, X, Y))
case("xpcnn.dask.from_npy", "path", lambda: xdask.from_npy(MISSING_DIR / "x.npy"),
     or_shows=str(MISSING_DIR / "x.npy"))
case("xpcnn.dask.from_npy", "chunk", lambda: xdask.from_npy(MISSING_DIR / "x.npy", chunk=0))

# xpcnn.interop (torch is a test dependency; without it these raise BackendUnavailableError)
interop = importlib.import_module("xpcnn.interop")


def torch_net():
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(72, 3))


case("xpcnn.interop.from_torch", "module", lambda: interop.from_torch("not a module", (1, 8, 8)))
case("xpcnn.interop.from_torch", "input_shape", lambda: interop.from_torch(torch_net(), (1, -8, 8)))
case("xpcnn.interop.from_torch", "dtype", lambda: interop.from_torch(torch_net(), (1, 8, 8), dtype="float16"))
case("xpcnn.interop.from_torch", "backend", lambda: interop.from_torch(torch_net(), (1, 8, 8), backend="nope"))
case("xpcnn.interop.from_torch", "seed", lambda: interop.from_torch(torch_net(), (1, 8, 8), seed=-1))
case("xpcnn.interop.to_torch", "model", lambda: interop.to_torch(torch_net()))
case("xpcnn.interop.to_torch", "model", lambda: interop.to_torch(xpcnn.Sequential([layers.Dense(3)])))
case("xpcnn.interop.torch_resnet8", "num_classes", lambda: interop.torch_resnet8(num_classes=0))
case("xpcnn.interop.torch_resnet8", "in_channels", lambda: interop.torch_resnet8(in_channels=-1))

# xpcnn.testing
testing = importlib.import_module("xpcnn.testing")
case("xpcnn.testing.Tolerance", "rtol", lambda: testing.Tolerance(rtol=-1.0))
case("xpcnn.testing.check_parity", "backends", lambda: testing.check_parity(F.relu, X, backends=[]))
case("xpcnn.testing.assert_parity", "backends", lambda: testing.assert_parity(F.relu, X, backends="numpy"))
case("xpcnn.testing.Tolerance", "relative_to", lambda: testing.Tolerance(rtol=1e-6, relative_to="row"))
case("xpcnn.testing.check_parity", "fn", lambda: testing.check_parity("relu", X))
case("xpcnn.testing.check_parity", "dtype", lambda: testing.check_parity(F.relu, X, dtype="int8"))
case("xpcnn.testing.check_parity", "backend", lambda: testing.check_parity(F.relu, X, backends=["no-such-backend"]))
case("xpcnn.testing.assert_parity", "dtype", lambda: testing.assert_parity(F.relu, X, dtype="float16"))
case("xpcnn.testing.assert_parity", "rtol", lambda: testing.assert_parity(F.relu, X, rtol=-1.0))
case("xpcnn.testing.gradcheck", "x", lambda: testing.gradcheck(F.relu, X))  # float32: finite differences need float64
case("xpcnn.testing.gradcheck", "eps",
     lambda: testing.gradcheck(F.relu, X.astype(np.float64), backward=F.relu_backward, eps=0.0))
case("xpcnn.testing.gradcheck", "backward", lambda: testing.gradcheck(F.relu, X.astype(np.float64)))
case("xpcnn.testing.gradcheck", "layer_or_fn", lambda: testing.gradcheck("relu", X.astype(np.float64)))
case("xpcnn.testing.is_gpu_backend", "spec", lambda: testing.is_gpu_backend(3))

# xpcnn.export: ONNX (the onnx extra, in the test extra too)
export = importlib.import_module("xpcnn.export")
case("xpcnn.export.onnx_model", "output",
     lambda: export.onnx_model(xpcnn.zoo.get("default").build((1, 28, 28)), output="x"))
case("xpcnn.export.onnx_model", "method",
     lambda: export.onnx_model(xpcnn.zoo.get("default").build((1, 28, 28)), method="jit"))
case("xpcnn.export.to_onnx", "model", lambda: export.to_onnx(xpcnn.zoo.get("default"), "unused.onnx"))
case("xpcnn.export.to_onnx", "model", lambda: export.to_onnx(3, "unused.onnx"))
case("xpcnn.export.from_onnx", "path", lambda: export.from_onnx(__file__), or_shows=__file__)
case("xpcnn.export.OnnxModel", "path", lambda: export.OnnxModel("no such file.onnx"), or_shows="no such file.onnx")

# xpcnn.notebook: the weight converters
nb = importlib.import_module("xpcnn.notebook")
case("xpcnn.notebook.to_xpcnn_weights", "kernels",
     lambda: nb.to_xpcnn_weights(np.zeros((16, 3)), np.zeros((2704, 10)), np.zeros(10)))
case("xpcnn.notebook.to_xpcnn_weights", "weight",
     lambda: nb.to_xpcnn_weights(np.zeros((16, 3, 3)), np.zeros((2703, 10)), np.zeros(10)))
case("xpcnn.notebook.from_xpcnn_weights", "weights", lambda: nb.from_xpcnn_weights([np.zeros((16, 1, 3, 3))]))
case("xpcnn.notebook.from_xpcnn_weights", "weights", lambda: nb.from_xpcnn_weights(None))


# --- the tests -------------------------------------------------------------------------------------

ENTRY_POINTS = discover()


def test_every_entry_point_has_bad_input_cases():
    needing = {name for name, obj in ENTRY_POINTS.items() if takes_arguments(obj)} - RETURNED_ONLY
    missing = sorted(needing - set(CASES))
    assert not missing, f"public entry points with arguments but no bad-input case in this file: {missing}"


def test_every_case_names_an_existing_entry_point():
    stale = sorted((set(CASES) | RETURNED_ONLY) - set(ENTRY_POINTS))
    assert not stale, f"cases for entry points that no longer exist (renamed?): {stale}"


def test_every_layer_class_has_a_forward_case():
    missing = sorted(set(name.removeprefix("xpcnn.layers.") for name in layer_classes()) - set(LAYER_SETUPS))
    assert not missing, f"layer classes with no entry in LAYER_SETUPS: {missing}"


@pytest.mark.parametrize("name", sorted(LAYER_SETUPS))
def test_layer_forward_refuses_what_is_not_an_array(name):
    layer = built_layer(name)
    for bad in ("not an array", [[1.0, 2.0, 3.0, 4.0]]):
        with pytest.raises(XpcnnError, match=r"(?<![\w.])x\b"):
            layer(bad)


def _case_params():
    for entry, cases in sorted(CASES.items()):
        for i, (argument, call, or_shows) in enumerate(cases):
            yield pytest.param(entry, argument, call, or_shows, id=f"{entry.removeprefix('xpcnn.')}-{argument}-{i}")


@pytest.mark.parametrize("entry, argument, call, or_shows", list(_case_params()))
def test_bad_argument_raises_an_xpcnn_error_naming_it(entry, argument, call, or_shows):
    with pytest.raises(XpcnnError) as info:
        call()
    assert isinstance(info.value, (ValueError, TypeError, RuntimeError)), type(info.value).__mro__
    message = str(info.value)
    named = re.search(rf"(?<![\w.]){re.escape(argument)}\b", message) or (or_shows is not None and or_shows in message)
    assert named, f"{entry}: the message does not name {argument!r}: {message}"
