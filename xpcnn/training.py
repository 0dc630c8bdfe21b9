"""Training: the one step function, and :func:`fit` / :func:`evaluate` / :func:`predict` around it.

:func:`train_step` (``Sequential.train_step``) and :func:`fit` run the same :func:`_step` code:
forward in training mode, fused softmax cross-entropy and its gradient, backward, then one
host read of (NaN-guard sum, loss, correct) before the optimizer update. ``train_step``
checks its batch's layout first and its values (NaN/Inf, labels in range) on the device, read
with the loss (no accuracy); ``fit`` validates the whole data set once and then runs the step
unchecked.

Data stay where the caller put them (host NumPy, usually) and move to the model's backend one
batch at a time with :func:`xpcnn.to_device`. Shuffles come from a host
``numpy.random.Generator(seed)``, so every backend sees the same batches.

Input: float images ``(N, *model.input_shape)``, e.g. ``(N, 1, 28, 28)`` in [0, 1], and integer
labels ``(N,)``. uint8 images are refused, not silently scaled: pass them through
:func:`xpcnn.datasets.preprocess` first (x / 255 and a channel axis), which is exactly what a
saved model then expects at evaluation time. Float data of the other float dtype are cast to
the model's dtype batch by batch.

This module is written against the model's interface (``forward``, ``backward``, ``check_input``,
``layers``, ``build``...), not its class, so the model can delegate to it without a circle.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import checkpoint, jit
from . import functional as F
from ._validate import check_array, namespace, positive_int
from .backend import fewest_operations_for, namespace_of, to_numpy
from .callbacks import Callback, History, ModelCheckpoint, ProgressBar
from .datasets.batches import iterate_batches
from .datasets.feed import ArrayFeed, DatasetFeed, as_array, feed, float_kind, validation_feed
from .datasets.protocol import is_dataset
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    ModelFileError,
    NonFiniteError,
    NotBuiltError,
    ShapeError,
    XpcnnError,
)
from .functional.loss import check_label_layout, check_labels, cross_entropy_counted_kernel, cross_entropy_kernel
from .layers import Layer
from .optim import Adam, Optimizer, check_gradients, concat_flat

DEFAULT_LR = 1e-3
# Data-parallel training lives a floor above (xpcnn.distributed.mpi); it registers its hooks here
# when xpcnn is imported, so this module never imports it.
DISTRIBUTED: dict[str, Any] = {}


def _distributable(fn):
    """``fit`` / ``evaluate`` under the distributed hooks' error handling, when they are there."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        hooks = DISTRIBUTED.get("mpi")
        return fn(*args, **kwargs) if hooks is None else hooks.abort_on_local_error(fn)(*args, **kwargs)

    return wrapper


def _communicator(distributed: Any):
    """The MPI communicator for ``distributed=True`` on several ranks, else None."""
    if not isinstance(distributed, (bool, np.bool_)):
        raise ArgumentTypeError(f"distributed: expected True or False, got {distributed!r:.80}")
    hooks = DISTRIBUTED.get("mpi")
    return hooks.communicator(distributed) if hooks is not None and distributed else None


def default_optimizer() -> Optimizer:
    """What ``fit(optimizer=None)`` uses on a model that has none yet: Adam(lr=1e-3), the
    PyTorch / Keras default."""
    return Adam(DEFAULT_LR)


def _label_smoothing(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ArgumentError(f"label_smoothing: expected a number in [0, 1], got {value!r}")
    return float(value)


# ---------------------------------------------------------------- the step


def _step(model, xp, xb, yb, label_smoothing: float, accuracy: bool = True, extra=(), count_labels: bool = False):
    """Forward (training mode), loss and gradient, backward. Returns device arrays
    ``(guard, loss, correct, *extra, in_range)`` stacked (no ``correct`` without ``accuracy``,
    no ``in_range`` without ``count_labels``): ``guard`` is non-finite when the loss or any
    gradient is; ``extra``, 0-d arrays of the logits' dtype, ride along in the same read;
    ``in_range`` counts the labels in [0, K). Nothing is read back to the host here."""
    logits = model.forward(xb, True)
    # The labels' layout was checked by the caller; their values by fit (once) or by in_range.
    if count_labels:
        loss, grad, in_range = cross_entropy_counted_kernel(xp, logits, yb, label_smoothing)
    else:
        loss, grad = cross_entropy_kernel(xp, logits, yb, label_smoothing)
    model.backward(grad)
    slots = model.named_parameters()
    try:
        grads = [layer.grads[name] for _, layer, name in slots]
    except KeyError:
        check_gradients(slots, after_backward=True)
        raise
    guard, flat = nan_guard(xp, loss, grads)
    # The optimizer's flat update (xpcnn.optim, GPU form) reuses the concatenation.
    model.flat_grads = None if flat is None else (grads, flat)
    values = [guard, loss]
    if accuracy:
        values.append(xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, logits.dtype)))
    values.extend(extra)
    if count_labels:
        values.append(in_range)
    return _gather(xp, values)


def _gather(xp, values):
    """The arrays ``values`` (of one shape) stacked into one array, for a single host read."""
    return xp.stack(values)


def nan_guard(xp, loss, grads):
    """(guard, flat gradients or None): ``guard`` is a 0-d array that is non-finite when the
    loss or any gradient holds NaN/Inf. On a GPU (:func:`xpcnn.backend.fewest_operations_for`)
    one reduction over every gradient, flattened and concatenated with the loss: 2
    operations, and the concatenation is returned for the optimizer's flat update. On a CPU
    a sum per gradient, added up: no copy of the gradients (the concatenation copies each)."""
    if not grads:
        return loss, None
    if fewest_operations_for(loss):
        flat = concat_flat(xp, [loss, *grads])
        return xp.sum(flat), flat[1:]
    guard = loss
    for g in grads:
        guard = guard + xp.sum(g)
    return guard, None


def _first_non_finite(xp, arrays) -> str | None:
    for name, a in arrays:
        if not bool(xp.all(xp.isfinite(a))):
            return name
    return None


def diagnose(model, xb, loss_value: float) -> str | None:
    """Where the non-finite values start, or None when everything is finite after all (a
    sum that overflowed): parameters, then each layer's output, then each gradient."""
    xp = namespace_of(xb)
    for key, layer, name in model.named_parameters():
        if _first_non_finite(xp, [(name, layer.params[name])]):
            return f"layer {key.rpartition('.')[0]} ({type(layer).__name__}) parameter '{name}' holds NaN/Inf"
    if not math.isfinite(loss_value) and not xb.shape[0]:  # a distributed batch's empty share
        return "the loss of the other ranks' shares of this batch (this rank's share was empty)"
    if not math.isfinite(loss_value):
        out = xb
        for i, layer in enumerate(model.layers):
            out = layer.forward(out, training=False)
            if _first_non_finite(xp, [("output", out)]):
                return f"layer {i} ({type(layer).__name__}) output is the first non-finite activation"
        largest = float(xp.max(xp.abs(out)))
        return ("the loss itself overflowed (every layer output is finite; the largest logit magnitude is "
                f"{largest:.3g})")
    for key, layer, name in model.named_parameters():
        if _first_non_finite(xp, [(name, layer.grads[name])]):
            return (f"layer {key.rpartition('.')[0]} ({type(layer).__name__}) gradient of '{name}' is the first "
                    "non-finite gradient")
    return None


def _non_finite(model, xb, loss_value: float, epoch: int, step: int, updated: bool) -> NonFiniteError | None:
    where = diagnose(model, xb, loss_value) if not updated else "found when the values were read"
    if where is None:
        return None
    state = ("The weights hold this step's update (values are read every sync_every steps); restore the last checkpoint"
             if updated else "The weights were not updated by this step and the last checkpoint is intact")
    err = NonFiniteError(f"training stopped at epoch {epoch + 1}, step {step + 1}: the loss is {loss_value}; {where}. "
                         f"{state}; lower the learning rate, check the data, or use float64")
    err.epoch, err.step, err.where = epoch + 1, step + 1, where
    return err


def _check_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise ArgumentTypeError("optimizer: expected an optimizer instance such as xpcnn.optim.SGD(lr=0.01), "
                                f"got {optimizer!r:.80}")


def _checked_layout(model, x, y):
    """The namespace of a (batch, labels) pair after checking their kinds, libraries, shapes and
    dtypes against the model (no host read)."""
    _, x = model.check_input(x, values=False)
    check_array(y, "y")
    xp = namespace(x=x, y=y)
    check_label_layout(xp, y, int(x.shape[0]), "y")
    return xp, x


def _checked_batch(model, x, y):
    """The namespace of a (batch, labels) pair after checking both against the model, values
    included (NaN/Inf in x, labels out of range: host reads)."""
    _, x = model.check_input(x)
    check_array(y, "y")
    xp = namespace(x=x, y=y)
    check_labels(xp, y, int(x.shape[0]), model.output_shape()[-1], name="y")
    return xp, x


def loss_and_grad(model, x, y, *, label_smoothing: float = 0.0):
    """Forward in training mode, mean softmax cross-entropy and backward on one checked batch
    (fills every ``layer.grads``); returns the loss as a 0-d array. No update."""
    xp, x = _checked_batch(model, x, y)
    values, model.flat_grads = _step(model, xp, x, y, _label_smoothing(label_smoothing), accuracy=False), None
    return values[1]  # no flat gradients kept: the caller may change them in place (clipping) before a step


def train_step(model, x, y, optimizer: Optimizer, *, label_smoothing: float = 0.0) -> float:
    """One optimizer step on the batch-mean softmax cross-entropy of (x, y) in training mode:
    checks the batch and labels, runs :func:`_step` (the step of :func:`fit`), stops with
    :class:`NonFiniteError` before a non-finite update, then updates. Returns the loss.

    One host read per step: the checks of the values (NaN/Inf in x, labels out of range) are
    computed on the device and read with the loss. When one fails, the error is raised before
    the update and the model is left as it was (BatchNorm statistics and dropout counters too)."""
    _check_optimizer(optimizer)
    label_smoothing = _label_smoothing(label_smoothing)
    xp, x = _checked_layout(model, x, y)
    states = _states(model)
    # sum(x) is non-finite exactly when x holds NaN/Inf (or, rarely, when a finite sum
    # overflows: then the checks below find nothing and the step goes on).
    # NumPy would warn about the NaN/Inf that bad input makes inside the step; this function
    # reports them itself (DataError, LabelError, NonFiniteError). errstate is local to this block.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        values = _step(model, xp, x, y, label_smoothing, accuracy=False, extra=(xp.sum(x),), count_labels=True)
    guard, loss, x_sum, in_range = to_numpy(values).tolist()
    if in_range != x.shape[0] or not (math.isfinite(x_sum) and math.isfinite(guard)):
        try:
            _checked_batch(model, x, y)
            err = None if math.isfinite(guard) else _non_finite(model, x, loss, 0, 0, updated=False)
            if err is not None:
                raise err
        except XpcnnError:
            _restore_states(model, states)
            raise
    optimizer.step(model)
    return loss


def _states(model) -> list:
    """What a training forward changes besides caches and gradients: each layer's buffers (new
    arrays, so keeping the dict keeps the old ones) and state (dropout counters). Leaf layers
    only: a container's buffers and state are its sublayers'."""
    return [(layer, dict(layer.buffers), layer.get_state()) for _, layer in model.leaves()
            if layer.buffers or type(layer).get_state is not Layer.get_state]


def _restore_states(model, states) -> None:
    for layer, buffers, state in states:
        layer.buffers.update(buffers)
        layer.set_state(state)


# ---------------------------------------------------------------- fit


def _check_checkpoint_dir(checkpoint_dir, resume_from) -> None:
    for name, value in (("checkpoint_dir", checkpoint_dir), ("resume_from", resume_from)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ArgumentTypeError(f"{name}: expected a directory path (str or os.PathLike), "
                                    f"got {type(value).__name__}")
    if checkpoint_dir is None:
        return
    if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
        raise ArgumentError(f"checkpoint_dir: {os.fspath(checkpoint_dir)} exists and is not a directory")
    same = resume_from is not None and os.path.abspath(checkpoint_dir) == os.path.abspath(resume_from)
    existing = checkpoint.list_checkpoints(checkpoint_dir)
    if existing and not same:
        raise ArgumentError(
            f"checkpoint_dir: {os.fspath(checkpoint_dir)} already holds checkpoints (latest: epoch {existing[-1][0]}); "
            "pass resume_from=<the same directory> to continue that run, or use an empty directory"
        )


def _starts_fresh(checkpoint_dir, resume_from) -> bool:
    """A resumable run's first start: ``resume_from`` is ``checkpoint_dir`` and holds no
    checkpoint yet, so the same call both starts and continues a run."""
    return (checkpoint_dir is not None and resume_from is not None and not checkpoint.list_checkpoints(resume_from)
            and os.path.abspath(checkpoint_dir) == os.path.abspath(resume_from))


def _resume(model, resume_from, optimizer: Optimizer | None):
    """Load the newest valid checkpoint into ``model``: (optimizer, rng, epoch, history, checkpoint)."""
    ckpt = checkpoint.latest(resume_from)
    if ckpt is None:
        raise ModelFileError(f"resume_from: no valid checkpoint in {os.fspath(resume_from)}")
    optimizer = ckpt.restore(model, optimizer)
    return optimizer, ckpt.make_rng(), ckpt.epoch, ckpt.history, ckpt


@_distributable
def fit(model, x, y, *, epochs: int = 1, batch_size: int = 32, optimizer: Optimizer | None = None,
        validation_data=None, shuffle: bool = True, seed: int = 0, callbacks: Iterable[Callback] | None = None,
        verbose: int = 1, checkpoint_dir=None, resume_from=None, label_smoothing: float = 0.0,
        sync_every: int = 1, compile: bool | None = None, distributed: bool = False) -> History:
    """Train ``model`` on images ``x`` (N, C, H, W) float in [0, 1] and integer labels ``y`` (N,)
    by mini-batch gradient descent on the mean softmax cross-entropy, in training mode. ``x`` may
    be a dataset (:mod:`xpcnn.datasets.protocol`; ``y`` None): its batches are decoded in a
    thread pool, checked and moved one at a time, and ``model.class_names`` becomes its names.

    epochs: train until this many epochs are done (>= 1; counting those of a resumed checkpoint,
        so resuming a run that already has ``epochs`` epochs returns its history unchanged).
    batch_size: samples per step (the last batch of an epoch may be smaller).
    optimizer: an :mod:`xpcnn.optim` optimizer; None reuses the one of the model's previous
        ``fit``, or else creates ``Adam(lr=1e-3)``. It is kept as ``model.optimizer``.
    validation_data: (x_val, y_val) or a dataset, evaluated after every epoch (``val_loss``, ``val_accuracy``).
    shuffle, seed: each epoch visits the samples in ``rng.permutation(N)`` order, ``rng =
        numpy.random.default_rng(seed)`` drawn once per fit on the host (same on every backend).
        An unbuilt model is built for ``x``'s sample shape with this seed and x's float dtype.
    callbacks: extra :class:`xpcnn.callbacks.Callback` objects.
    verbose: 0 silent; 1 progress bar on a terminal, one line per epoch otherwise; 2 one line
        per epoch.
    checkpoint_dir: save a checkpoint after every epoch there (atomic, newest 3 kept). Must be
        empty unless it is also ``resume_from``.
    resume_from: a checkpoint directory: continue from its newest valid checkpoint (weights,
        buffers, optimizer state, dropout counters, shuffle state, epoch, history; ``seed`` is
        then unused). With the same data and batch size the result is bit-identical (NumPy) to
        an uninterrupted run. When it is also ``checkpoint_dir`` and holds no checkpoint yet,
        training starts from scratch: one call that starts a run and, run again, continues it.
    label_smoothing: as ``torch.nn.functional.cross_entropy``'s.
    sync_every: read the loss, accuracy and NaN guard back to the host every this many steps
        (one read for all of them). 1 (default) checks every step before its update; with k > 1
        the device never waits on the host in between, and a non-finite step is still named
        exactly, but the weights then hold the updates up to the read.
    compile: run the whole step (forward, loss, backward, update) as one compiled function
        (:mod:`xpcnn.jit`). None (default): on the jax backend (every built-in layer
        compiles, Dropout included), eager elsewhere. True where it cannot compile is an error; False is eager.
    distributed: data-parallel training over MPI ranks (``mpiexec -n K``); see docs/distributed.md.

    Training stops with :class:`xpcnn.errors.NonFiniteError` (naming epoch, step and the first
    layer with NaN/Inf) when the loss or a gradient becomes non-finite.
    Returns a :class:`xpcnn.callbacks.History`.
    """
    epochs = positive_int(epochs, "epochs", error=ArgumentError)
    batch_size = positive_int(batch_size, "batch_size", error=ArgumentError)
    sync_every = positive_int(sync_every, "sync_every", error=ArgumentError)
    label_smoothing = _label_smoothing(label_smoothing)
    if optimizer is not None:
        _check_optimizer(optimizer)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ArgumentTypeError(f"seed: expected a non-negative int, got {seed!r}")
    if seed < 0:
        raise ArgumentError(f"seed: expected a non-negative int, got {seed!r}")
    if not isinstance(shuffle, bool):
        raise ArgumentTypeError(f"shuffle: expected True or False, got {shuffle!r:.80}")
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ArgumentError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
    if callbacks is not None and (isinstance(callbacks, (Callback, str, bytes)) or not hasattr(callbacks, "__iter__")):
        raise ArgumentTypeError("callbacks: expected a list of xpcnn.callbacks.Callback objects, "
                                f"got {callbacks!r:.80}")
    callbacks = list(callbacks or [])
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise ArgumentTypeError(f"callbacks[{i}]: expected an xpcnn.callbacks.Callback, got {type(cb).__name__}")
    if compile not in (None, True, False):
        raise ArgumentTypeError(f"compile: expected True, False or None, got {compile!r:.80}")
    comm = _communicator(distributed)
    if comm is not None and compile:
        raise ArgumentError("compile: not available with distributed=True yet (the allreduce sits inside the step)")
    _check_checkpoint_dir(checkpoint_dir, resume_from)
    if _starts_fresh(checkpoint_dir, resume_from):
        resume_from = None

    ckpt = None
    if resume_from is not None:
        optimizer, rng, initial_epoch, past, ckpt = _resume(model, resume_from, optimizer)
        if verbose:
            print(f"resumed from {ckpt.path}: epoch {initial_epoch} of {epochs} done, continuing with epoch "
                  f"{initial_epoch + 1}" if initial_epoch < epochs
                  else f"resumed from {ckpt.path}: all {epochs} epochs done")
    else:
        if not model.built and is_dataset(x):
            model.build(tuple(x.sample_shape), seed=seed, dtype="float32")
        elif not model.built:
            x_arr = as_array(x, "x")
            if len(x_arr.shape) < 2:
                raise ShapeError(f"x: expected a batch of images (N, C, H, W), got shape {tuple(x_arr.shape)}")
            model.build(tuple(x_arr.shape[1:]), seed=seed, dtype=float_kind(x_arr, "x"))
        optimizer = optimizer or model.optimizer or default_optimizer()
        rng, initial_epoch, past = np.random.default_rng(seed), 0, {}
    model.optimizer = optimizer
    compiled = _compiled_step(model, optimizer, compile, label_smoothing, comm)

    data = feed(model, x, y)
    if isinstance(data, DatasetFeed):
        if comm is not None:
            raise ArgumentError("distributed: not available with a dataset yet; pass arrays")
        model.class_names = data.class_names
    val = validation_feed(model, validation_data)
    history = History(past, initial_epoch)
    steps = -(-data.n // batch_size)
    if comm is not None:
        DISTRIBUTED["mpi"].start_fit(comm, model, optimizer, data.y, rng, batch_size=batch_size, epochs=epochs,
                                     shuffle=bool(shuffle),
                      initial_epoch=initial_epoch, label_smoothing=label_smoothing)
        if comm.rank:  # rank 0 alone prints and writes checkpoints
            verbose, checkpoint_dir = 0, None
    trainer = SimpleNamespace(model=model, optimizer=optimizer, rng=rng, history=history, stop_training=False,
                              params=dict(
        epochs=epochs, initial_epoch=initial_epoch, steps=steps, samples=data.n, batch_size=batch_size,
        shuffle=bool(shuffle), seed=int(seed), verbose=verbose,
        initial_lr=ckpt.fit_args.get("initial_lr") if ckpt else getattr(optimizer, "lr", None)))
    # The caller's callbacks first (Keras's order): what they add to an epoch's logs ("lr") reaches
    # the history, the checkpoint and the progress line; checkpoints last, once everything else
    # (a ModelCheckpoint of the caller's too) has recorded the epoch.
    everything: list[Callback] = sorted([*callbacks, history], key=lambda cb: isinstance(cb, ModelCheckpoint))
    if checkpoint_dir is not None:
        everything.append(ModelCheckpoint(checkpoint_dir))
    if verbose:
        everything.append(ProgressBar(verbose))
    trainer.callbacks = everything
    for cb in everything:
        cb.set_trainer(trainer)

    for cb in everything:
        cb.on_train_begin({})
    stopped = ckpt is not None and checkpoint.restore_callbacks(ckpt, everything)  # a callback stopped the run
    try:
        for epoch in range(initial_epoch, initial_epoch if stopped else epochs):
            for cb in everything:
                cb.on_epoch_begin(epoch, {})
            with model.backend.activate():  # CuPy launches on the current device: the model's
                totals = _run_epoch(model, optimizer, data, rng, epoch, batch_size, shuffle, label_smoothing,
                                    sync_every, everything, comm, compiled)
            logs = {"loss": totals[0] / data.n, "accuracy": totals[1] / data.n}
            if val is not None:
                with model.backend.activate():
                    result = _evaluate(model, val, 256, comm)
                logs.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
            for cb in everything:
                cb.on_epoch_end(epoch, logs)
            if trainer.stop_training:
                break
    finally:
        for source in (data, val):
            if source is not None:
                source.close()
        for cb in everything:
            cb.on_train_end({})
    return history


def _compiled_step(model, optimizer, compile, label_smoothing, comm) -> jit.CompiledStep | None:
    """The compiled step ``fit`` runs, or None for the eager one (see fit's ``compile``)."""
    if compile is False or comm is not None:
        return None
    reason = jit.unsupported(model)
    if reason is None:
        return jit.make_step(model, optimizer, label_smoothing=label_smoothing)
    if compile:
        raise ArgumentError(f"compile: {reason}; pass compile=False")
    return None


def _run_epoch(model, optimizer, data, rng, epoch, batch_size, shuffle, label_smoothing, sync_every, callbacks,
               comm=None, compiled=None):
    """One pass over the data; returns (summed loss * batch size, correct). The host reads the
    step values every ``sync_every`` steps, all pending steps in one transfer. A ``compiled``
    step updates inside the compiled function (and discards a non-finite step's update there)."""
    xp = None
    total_loss, total_correct = 0.0, 0
    # (step, stacked values, batch size, what explains a non-finite step: the x batch, or the
    # compiled step's finite flags)
    pending: list[tuple[int, Any, int, Any]] = []

    def read_pending():
        nonlocal total_loss, total_correct
        values = to_numpy(_gather(xp, [v for _, v, _, _ in pending])).tolist()
        for (step, _, size, xb), (guard, loss, correct) in zip(pending, values):
            if not math.isfinite(guard):
                err = compiled.error(epoch, step, loss, xb, updated=sync_every > 1) if compiled \
                    else _non_finite(model, xb, loss, epoch, step, updated=sync_every > 1)
                if err is not None:
                    raise err
            if sync_every == 1 and compiled is None:
                optimizer.step(model)
            total_loss += loss * size
            total_correct += int(correct)
            logs = {"loss": loss, "correct": int(correct), "size": size}
            for cb in callbacks:
                cb.on_batch_end(step, logs)
        pending.clear()

    def fetch(idx):
        return data.batch(idx if comm is None else comm.shard(idx), prefetch=True)

    batches = enumerate(iterate_batches(data.n, batch_size, shuffle=shuffle, rng=rng))
    upcoming = next(batches, None)
    fetched = fetch(upcoming[1]) if upcoming is not None else None
    while upcoming is not None:
        step, idx = upcoming
        xb, yb = data.ready(fetched)
        xp = xp or namespace_of(xb)
        if compiled is not None:
            values = compiled(xb, yb)
            pending.append((step, values, len(idx), compiled.last_flags))
        else:
            values = _step(model, xp, xb, yb, label_smoothing) if comm is None \
                else comm.step(_step, model, xp, xb, yb, len(idx), label_smoothing)
            if sync_every > 1:
                optimizer.step(model)
            pending.append((step, values, len(idx), xb if sync_every == 1 else None))
        # The next batch's copy starts while this step's compute runs; the order is unchanged.
        upcoming = next(batches, None)
        if upcoming is not None:
            fetched = fetch(upcoming[1])
        if len(pending) >= sync_every:
            read_pending()
    if pending:
        read_pending()
    return total_loss, total_correct


# ---------------------------------------------------------------- evaluate and predict


def _evaluate(model, data: ArrayFeed, batch_size: int, comm=None) -> dict[str, float]:
    total_loss, total_correct = 0.0, 0
    start, stop = (0, data.n) if comm is None else comm.share(data.n)  # each rank its slice
    for idx in iterate_batches(stop - start, batch_size, shuffle=False):
        idx = idx + start
        xb, yb = data.batch(idx)
        xp = namespace_of(xb)
        logits = model.infer(xb)
        loss, _ = cross_entropy_kernel(xp, logits, yb)  # labels were validated once, by ArrayFeed
        correct = xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, logits.dtype))
        loss_value, correct_value = to_numpy(xp.stack([loss, correct])).tolist()
        total_loss += loss_value * len(idx)
        total_correct += int(correct_value)
    if comm is not None:
        total_loss, total_correct = comm.sum_floats([total_loss, total_correct])
    return {"loss": total_loss / data.n, "accuracy": total_correct / data.n}


@_distributable
def evaluate(model, x, y, *, batch_size: int = 256, distributed: bool = False) -> dict[str, float]:
    """Mean softmax cross-entropy and accuracy of ``model`` on (x, y) or a dataset x in inference mode, batch by
    batch: ``{"loss": float, "accuracy": float}``. Same input rules as :func:`fit`: host data
    are moved to the model's backend one batch at a time. ``distributed``: under ``mpiexec -n K``
    each rank evaluates a contiguous K-th of (x, y) and every rank returns the reduced result."""
    batch_size = positive_int(batch_size, "batch_size", error=ArgumentError)
    if not model.built:
        raise NotBuiltError("model: not built; build it or fit it before evaluate")
    comm = _communicator(distributed)
    data = feed(model, x, y)
    if comm is not None:
        DISTRIBUTED["mpi"].start_evaluate(comm, model, data.y, batch_size)
    try:
        return _evaluate(model, data, batch_size, comm)
    finally:
        data.close()


def predict(model, x, *, batch_size: int = 256):
    """Softmax probabilities (N, K) of ``model`` for x (N, C, H, W) or a dataset in inference mode, on the
    model's backend, ``batch_size`` images per forward. Host (NumPy) data are moved one batch at a
    time (and cast to the model's float dtype); arrays of another backend are refused as in
    :meth:`Sequential.forward`."""
    batch_size = positive_int(batch_size, "batch_size", error=ArgumentError)
    model.require_built()
    if not is_dataset(x):
        check_array(x, "x")
    if not is_dataset(x) and (not isinstance(x, np.ndarray) or model.backend.is_host):
        _, x = model.check_input(x)
        return F.softmax(model.infer(x, batch_size), axis=1)
    data = feed(model, x, None, labels=False)
    parts = []
    try:
        for idx in iterate_batches(data.n, batch_size, shuffle=False):
            xb, _ = data.batch(idx)
            parts.append(F.softmax(model.infer(xb), axis=1))
    finally:
        data.close()
    return parts[0] if len(parts) == 1 else namespace_of(parts[0]).concat(parts, axis=0)
