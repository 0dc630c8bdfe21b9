"""The training loop: :func:`fit` and :func:`evaluate` (``Sequential.fit`` / ``.evaluate``).

Data stay where the caller put them (host NumPy, usually) and move to the model's backend one
batch at a time with :func:`xpcnn.to_device`. Shuffles come from a host
``numpy.random.Generator(seed)``, so every backend sees the same batches.

Input: float images ``(N, *model.input_shape)``, e.g. ``(N, 1, 28, 28)`` in [0, 1], and integer
labels ``(N,)``. uint8 images are refused, not silently scaled: pass them through
:func:`xpcnn.datasets.preprocess` first (x / 255 and a channel axis), which is exactly what a
saved model then expects at evaluation time. Float data of the other float dtype are cast to
the model's dtype batch by batch.
"""

from __future__ import annotations

import math
import numbers
import os
from types import SimpleNamespace
from typing import Any, Iterable

import numpy as np

from . import functional as F
from .backend import device_of, dtype_name, library_of, namespace_of, to_device, to_numpy
from .callbacks import Callback, History, ModelCheckpoint, ProgressBar
from .datasets.batches import iterate_batches
from .errors import DataError, DTypeError, LabelError, ModelFileError, NonFiniteError, NotBuiltError, ShapeError
from .optim import Adam, Optimizer

DEFAULT_LR = 1e-3


def default_optimizer() -> Optimizer:
    """What ``fit(optimizer=None)`` uses on a model that has none yet: Adam(lr=1e-3), the
    PyTorch / Keras default."""
    return Adam(DEFAULT_LR)


# ---------------------------------------------------------------- data


def _positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ShapeError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


class _Data:
    """Validated (x, y) of any backend; ``batch(idx)`` moves one batch to the model's backend."""

    def __init__(self, model, x: Any, y: Any, names: tuple[str, str] = ("x", "y")) -> None:
        nx, ny = names
        x, y = _as_array(x, nx), _as_array(y, ny)
        self.host = isinstance(x, np.ndarray)
        xp = namespace_of(x)
        _float_kind(x, nx)
        expected = tuple(model.input_shape)
        if tuple(x.shape[1:]) != expected or len(x.shape) != len(expected) + 1:
            hint = " (add the channel axis: xpcnn.datasets.preprocess)" if tuple(x.shape[1:]) == expected[1:] else ""
            raise ShapeError(f"{nx}: expected shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}{hint}")
        n = int(x.shape[0])
        if n == 0:
            raise DataError(f"{nx}: empty (N = 0); nothing to train or evaluate on")
        if not bool(xp.all(xp.isfinite(x))):
            raise DataError(f"{nx}: contains NaN or Inf; clean the data first")
        ypx = namespace_of(y)
        if len(y.shape) != 1 or int(y.shape[0]) != n:
            raise LabelError(f"{ny}: expected integer labels of shape ({n},) to match {nx}, got shape {tuple(y.shape)}")
        if not ypx.isdtype(y.dtype, "integral"):
            raise LabelError(f"{ny}: expected integer class labels, got dtype {y.dtype}")
        classes = model.output_shape[-1]
        low, high = int(ypx.min(y)), int(ypx.max(y))
        if low < 0 or high >= classes:
            raise LabelError(f"{ny}: expected labels in [0, {classes - 1}] (the model has {classes} outputs), got values from {low} to {high}")
        self.x, self.y, self.n = x, y, n
        self.backend, self.dtype = model.backend, model.dtype

    def batch(self, idx: np.ndarray) -> tuple[Any, Any]:
        """x[idx], y[idx] on the model's backend, x in the model's dtype (idx: host int64)."""
        if self.host:
            xb = self.x[idx]
            if xb.dtype != self.dtype:
                xb = xb.astype(self.dtype)
            return to_device(xb, self.backend), to_device(self.y[idx], self.backend)
        xb, yb = _take(self.x, idx), _take(self.y, idx)
        xb, yb = to_device(xb, self.backend), to_device(yb, self.backend)
        if dtype_name(xb.dtype) != self.dtype:
            xp = namespace_of(xb)
            xb = xp.astype(xb, getattr(xp, self.dtype))
        return xb, yb


def _float_kind(x: Any, name: str) -> str:
    """"float32" or "float64", else a DTypeError (uint8 pixels get pointed to preprocess)."""
    kind = dtype_name(x.dtype)
    if kind == "uint8":
        raise DTypeError(
            f"{name}: expected float images in [0, 1], got uint8 pixels; convert them with "
            "xpcnn.datasets.preprocess(images) (x / 255, adds the channel axis)"
        )
    if kind not in ("float32", "float64"):
        raise DTypeError(f"{name}: expected a float32 or float64 array, got dtype {kind}")
    return kind


def _as_array(a: Any, name: str) -> Any:
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    try:
        library_of(a)
    except DTypeError:
        raise DTypeError(f"{name}: expected an array (NumPy or a backend's), got {type(a).__name__}") from None
    return a


def _take(a: Any, idx: np.ndarray) -> Any:
    xp = namespace_of(a)
    return xp.take(a, xp.asarray(idx, device=device_of(a)), axis=0)


def _validation(model, validation_data) -> _Data | None:
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError(f"validation_data: expected a pair (x_val, y_val), got {type(validation_data).__name__}")
    return _Data(model, *validation_data, names=("validation_data[0]", "validation_data[1]"))


# ---------------------------------------------------------------- one step and its guard


def _first_non_finite(xp, arrays) -> str | None:
    for name, a in arrays:
        if not bool(xp.all(xp.isfinite(a))):
            return name
    return None


def _diagnose(model, xb, loss_value: float) -> str | None:
    """Where the non-finite values start, or None when everything is finite after all (a
    sum that overflowed): parameters, then each layer's output, then each gradient."""
    xp = namespace_of(xb)
    for i, layer in enumerate(model.layers):
        bad = _first_non_finite(xp, layer.params.items())
        if bad:
            return f"layer {i} ({type(layer).__name__}) parameter '{bad}' holds NaN/Inf"
    if not math.isfinite(loss_value):
        out = xb
        for i, layer in enumerate(model.layers):
            out = layer.forward(out)
            if _first_non_finite(xp, [("output", out)]):
                return f"layer {i} ({type(layer).__name__}) output is the first non-finite activation"
        largest = float(xp.max(xp.abs(out)))
        return f"the loss itself overflowed (every layer output is finite; the largest logit magnitude is {largest:.3g})"
    for i, layer in enumerate(model.layers):
        bad = _first_non_finite(xp, layer.grads.items())
        if bad:
            return f"layer {i} ({type(layer).__name__}) gradient of '{bad}' is the first non-finite gradient"
    return None


def _train_step(model, optimizer: Optimizer, xb, yb, epoch: int, step: int) -> tuple[float, int]:
    """Forward, loss, backward, NaN guard, update. Returns (loss, correct predictions)."""
    logits = model.forward(xb)
    loss, grad = F.cross_entropy_with_grad(logits, yb)
    model.backward(grad)
    xp = namespace_of(logits)
    # One host sync per step: NaN/Inf anywhere in the loss or a gradient makes this sum non-finite.
    check = loss
    for layer in model.layers:
        for g in layer.grads.values():
            check = check + xp.sum(g)
    correct = xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, logits.dtype))
    check_value, loss_value, correct_value = to_numpy(xp.stack([check, loss, correct])).tolist()
    if not math.isfinite(check_value):
        where = _diagnose(model, xb, loss_value)
        if where is not None:
            err = NonFiniteError(
                f"training stopped at epoch {epoch + 1}, step {step + 1}: the loss is {loss_value}; {where}. "
                "The weights were not updated by this step and the last checkpoint is intact; "
                "lower the learning rate, check the data, or use float64"
            )
            err.epoch, err.step, err.where = epoch + 1, step + 1, where
            raise err
    optimizer.step(model)
    return loss_value, int(correct_value)


# ---------------------------------------------------------------- fit


def _check_checkpoint_dir(checkpoint_dir, resume_from) -> None:
    from .checkpoint import list_checkpoints

    if checkpoint_dir is None:
        return
    if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
        raise ValueError(f"checkpoint_dir: {os.fspath(checkpoint_dir)} exists and is not a directory")
    same = resume_from is not None and os.path.abspath(checkpoint_dir) == os.path.abspath(resume_from)
    existing = list_checkpoints(checkpoint_dir)
    if existing and not same:
        raise ValueError(
            f"checkpoint_dir: {os.fspath(checkpoint_dir)} already holds checkpoints (latest: epoch {existing[-1][0]}); "
            "pass resume_from=<the same directory> to continue that run, or use an empty directory"
        )


def _resume(model, resume_from, optimizer: Optimizer | None):
    """Load the newest valid checkpoint into ``model``: (optimizer, rng, epoch, history)."""
    from .checkpoint import latest

    ckpt = latest(resume_from)
    if ckpt is None:
        raise ModelFileError(f"resume_from: no valid checkpoint in {os.fspath(resume_from)}")
    if model.built:
        mine = {"layers": model.get_config()["layers"], "input_shape": list(model.input_shape), "dtype": model.dtype}
        saved = {"layers": ckpt.config["layers"], "input_shape": list(ckpt.fields["input_shape"]), "dtype": ckpt.fields["dtype"]}
        if mine != saved:
            raise ModelFileError(f"resume_from: {ckpt.path} was written by a different model (architecture, input shape or dtype)")
    else:
        saved_layers = ckpt.config["layers"]
        mine = [{"type": type(layer).__name__, "config": layer.get_config()} for layer in model.layers]
        if mine != saved_layers:
            raise ModelFileError(f"resume_from: {ckpt.path} was written by a different architecture")
        model.build(ckpt.fields["input_shape"], dtype=ckpt.fields["dtype"])
    model.set_weights(ckpt.weights)
    if optimizer is None:
        optimizer = ckpt.make_optimizer()
    ckpt.restore_optimizer(optimizer, model)
    return optimizer, ckpt.make_rng(), ckpt.epoch, ckpt.history


def fit(model, x, y, *, epochs: int = 1, batch_size: int = 32, optimizer: Optimizer | None = None,
        validation_data=None, shuffle: bool = True, seed: int = 0, callbacks: Iterable[Callback] | None = None,
        verbose: int = 1, checkpoint_dir=None, resume_from=None) -> History:
    """Train ``model`` on images ``x`` (N, C, H, W) float in [0, 1] and integer labels ``y`` (N,)
    by mini-batch gradient descent on the mean softmax cross-entropy.

    epochs: train until this many epochs are done (counting those of a resumed checkpoint).
    batch_size: samples per step (the last batch of an epoch may be smaller).
    optimizer: an :mod:`xpcnn.optim` optimizer; None reuses the one of the model's previous
        ``fit``, or else creates ``Adam(lr=1e-3)``. It is kept as ``model.optimizer``.
    validation_data: (x_val, y_val) evaluated after every epoch (``val_loss``, ``val_accuracy``).
    shuffle, seed: each epoch visits the samples in ``rng.permutation(N)`` order, ``rng =
        numpy.random.default_rng(seed)`` drawn once per fit on the host (same on every backend).
        An unbuilt model is built for ``x``'s sample shape with this seed and x's float dtype.
    callbacks: extra :class:`xpcnn.callbacks.Callback` objects.
    verbose: 0 silent; 1 progress bar on a terminal, one line per epoch otherwise; 2 one line
        per epoch.
    checkpoint_dir: save a checkpoint after every epoch there (atomic, newest 3 kept). Must be
        empty unless it is also ``resume_from``.
    resume_from: a checkpoint directory: continue from its newest valid checkpoint (weights,
        optimizer state, shuffle state, epoch, history; ``seed`` is then unused). With the same
        data and batch size the result is bit-identical (NumPy) to an uninterrupted run.

    Training stops with :class:`xpcnn.errors.NonFiniteError` (naming epoch, step and the first
    layer with NaN/Inf) when the loss or a gradient becomes non-finite, before the bad update.
    Returns a :class:`xpcnn.callbacks.History`.
    """
    epochs = _positive_int(epochs, "epochs", minimum=0)
    batch_size = _positive_int(batch_size, "batch_size")
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected an xpcnn.optim optimizer such as optim.Adam(1e-3), got {type(optimizer).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    callbacks = list(callbacks or [])
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks[{i}]: expected an xpcnn.callbacks.Callback, got {type(cb).__name__}")
    _check_checkpoint_dir(checkpoint_dir, resume_from)

    if resume_from is not None:
        optimizer, rng, initial_epoch, past = _resume(model, resume_from, optimizer)
    else:
        if not model.built:
            x_arr = _as_array(x, "x")
            model.build(tuple(x_arr.shape[1:]), seed=seed, dtype=_float_kind(x_arr, "x"))
        optimizer = optimizer or getattr(model, "optimizer", None) or default_optimizer()
        rng, initial_epoch, past = np.random.default_rng(seed), 0, {}
    model.optimizer = optimizer

    data = _Data(model, x, y)
    val = _validation(model, validation_data)
    history = History(past, initial_epoch)
    steps = -(-data.n // batch_size)
    trainer = SimpleNamespace(model=model, optimizer=optimizer, rng=rng, history=history, params=dict(
        epochs=epochs, initial_epoch=initial_epoch, steps=steps, samples=data.n, batch_size=batch_size,
        shuffle=bool(shuffle), seed=int(seed), verbose=verbose))
    everything: list[Callback] = [history]
    if checkpoint_dir is not None:
        everything.append(ModelCheckpoint(checkpoint_dir))
    if verbose:
        everything.append(ProgressBar(verbose))
    everything += callbacks
    for cb in everything:
        cb.set_trainer(trainer)

    for cb in everything:
        cb.on_train_begin({})
    try:
        for epoch in range(initial_epoch, epochs):
            for cb in everything:
                cb.on_epoch_begin(epoch, {})
            total_loss, total_correct = 0.0, 0
            for step, idx in enumerate(iterate_batches(data.n, batch_size, shuffle=shuffle, rng=rng)):
                xb, yb = data.batch(idx)
                loss, correct = _train_step(model, optimizer, xb, yb, epoch, step)
                total_loss += loss * len(idx)
                total_correct += correct
                logs = {"loss": loss, "correct": correct, "size": len(idx)}
                for cb in everything:
                    cb.on_batch_end(step, logs)
            logs = {"loss": total_loss / data.n, "accuracy": total_correct / data.n}
            if val is not None:
                result = _evaluate(model, val, 256)
                logs.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
            for cb in everything:
                cb.on_epoch_end(epoch, logs)
    finally:
        for cb in everything:
            cb.on_train_end({})
    return history


# ---------------------------------------------------------------- evaluate


def _evaluate(model, data: _Data, batch_size: int) -> dict[str, float]:
    total_loss, total_correct = 0.0, 0
    for idx in iterate_batches(data.n, batch_size, shuffle=False):
        xb, yb = data.batch(idx)
        logits = model.forward(xb)
        xp = namespace_of(logits)
        loss = F.cross_entropy(logits, yb)
        correct = xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, logits.dtype))
        loss_value, correct_value = to_numpy(xp.stack([loss, correct])).tolist()
        total_loss += loss_value * len(idx)
        total_correct += int(correct_value)
    return {"loss": total_loss / data.n, "accuracy": total_correct / data.n}


def evaluate(model, x, y, *, batch_size: int = 256) -> dict[str, float]:
    """Mean softmax cross-entropy and accuracy of ``model`` on (x, y), batch by batch:
    ``{"loss": float, "accuracy": float}``. Same input rules as :func:`fit`."""
    batch_size = _positive_int(batch_size, "batch_size")
    if not model.built:
        raise NotBuiltError("model: not built; build it or fit it before evaluate")
    return _evaluate(model, _Data(model, x, y), batch_size)
