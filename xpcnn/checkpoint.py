"""Training checkpoints: everything needed to continue a fit exactly where it stopped.

One safetensors file per finished epoch, ``<dir>/ckpt-epoch000003.safetensors``, written
atomically (temporary file, flush, fsync, ``os.replace``, directory fsync) so a crash or a
SIGKILL at any instant leaves every existing checkpoint intact; the newest ``keep`` (3) are
kept. Each holds, besides the model (see :mod:`xpcnn.fileformat`, so ``xpcnn.load`` reads it too):

* tensors ``optimizer/<param key>/<state name>``: the optimizer's state arrays (Adam's m, v,
  SGD's momentum buffer), exactly;
* metadata ``epoch`` (epochs finished), ``optimizer`` (class, hyper-parameters, step count,
  which state arrays exist), ``rng`` (the shuffle generator's ``bit_generator.state``),
  ``history`` (per-epoch metrics so far), ``layers`` (dropout counters) and ``fit`` (seed,
  batch size, shuffle; informative).

Reading checks the file on its own (format, checksum, optimizer record, rng state);
:meth:`Checkpoint.restore` then checks it against the model it is given and restores into it.
This module knows no model class: it works on the model it is handed.

Resuming from the newest valid checkpoint with the same data and batch size replays the
remaining epochs bit for bit (on NumPy): same weights, same optimizer moments, same shuffles.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import fileformat
from .backend import to_numpy
from .errors import ArgumentTypeError, ModelFileError, XpcnnError
from .fileformat import checkpoint_name as checkpoint_name  # re-exported: part of this module's API
from .fileformat import list_checkpoints as list_checkpoints
from .optim import OPTIMIZERS, Optimizer

KEEP = 3
_STALE_TMP = re.compile(r"^\.ckpt-epoch\d{6}\.safetensors\..+\.tmp$")
_OPTIMIZER_CLASSES = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def optimizer_class(name: str) -> type:
    """The built-in optimizer class saved as ``name``."""
    if name not in _OPTIMIZER_CLASSES:
        raise ModelFileError(f"optimizer: unknown class {name!r}; expected one of {', '.join(_OPTIMIZER_CLASSES)}")
    return _OPTIMIZER_CLASSES[name]


# ---------------------------------------------------------------- writing


def optimizer_record(optimizer: Optimizer, model) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON-able description, host state arrays keyed ``optimizer/<key>/<name>``) of ``optimizer``."""
    state = optimizer.state_dict()
    tensors, names = {}, {}
    for key, slots in state["state"].items():
        names[key] = sorted(slots)
        for name, array in slots.items():
            if not hasattr(array, "shape"):
                raise ArgumentTypeError(f"optimizer state {key}/{name}: expected an array, got {type(array).__name__}")
            tensors[f"optimizer/{key}/{name}"] = np.ascontiguousarray(to_numpy(array))
    record = {"class": type(optimizer).__name__, "hyper": state["hyper"], "steps": int(state["steps"]), "state": names}
    return record, tensors


def save(directory: str | os.PathLike, *, model, optimizer: Optimizer, rng: np.random.Generator, epoch: int,
         history: dict[str, list[float]] | None = None, fit_args: dict[str, Any] | None = None,
         keep: int = KEEP, callback_states=()) -> Path:
    """Write the checkpoint of ``epoch`` finished epochs into ``directory``; prune to ``keep``.
    ``callback_states``: (class name, :meth:`~xpcnn.callbacks.Callback.get_state`) pairs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(directory):
        if _STALE_TMP.match(name):  # left by a writer that was killed mid-write
            with fileformat.suppress_oserror():
                os.unlink(directory / name)
    record, tensors = optimizer_record(optimizer, model)
    calls = []
    for i, (name, state) in enumerate(callback_states):
        if not isinstance(state, dict) or not isinstance(state.get("arrays", []), (list, tuple, type(None))):
            raise ArgumentTypeError(f"callbacks: {name}.get_state(): expected a dict, its 'arrays' a list or None")
        arrays = [np.array(to_numpy(a), order="C") for a in state.get("arrays") or []]
        if not all(np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() for a in arrays):
            raise ArgumentTypeError(f"callbacks: {name}.get_state(): 'arrays' must hold finite floating-point arrays")
        tensors.update({f"callbacks/{i}/{j}": a for j, a in enumerate(arrays)})
        calls.append({"class": name, "state": {k: v for k, v in state.items() if k != "arrays"},
                      "arrays": None if state.get("arrays") is None else len(arrays)})
    try:  # NumPy scalars become Python numbers; anything else that JSON cannot hold is named
        callbacks_json = json.dumps(calls, allow_nan=False, default=np.generic.item)
    except (TypeError, ValueError) as e:
        raise ArgumentTypeError(f"callbacks: get_state() must return JSON values besides 'arrays' ({e})") from None
    metadata = {"callbacks": callbacks_json, "epoch": str(int(epoch)), "optimizer": json.dumps(record),
                "rng": json.dumps(rng.bit_generator.state), "history": json.dumps(history or {}),
                "fit": json.dumps(fit_args or {}), "layers": json.dumps(model.layer_states())}
    data = model.to_bytes(kind="checkpoint", tensors=tensors, metadata=metadata)
    path = fileformat.write_atomic(directory / checkpoint_name(epoch), data)
    for _, old in list_checkpoints(directory)[:-keep]:
        with fileformat.suppress_oserror():
            os.unlink(old)
    return path


# ---------------------------------------------------------------- reading


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read into host memory and checked as a file (not yet against a model)."""

    path: Path
    epoch: int
    fields: dict[str, Any]
    tensors: dict[str, np.ndarray]
    optimizer_record: dict[str, Any]
    optimizer_tensors: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    history: dict[str, list[float]]
    fit_args: dict[str, Any]
    layer_states: dict[str, Any]
    callback_states: list = dataclasses.field(default_factory=list)  # (class name, state) pairs

    @property
    def config(self) -> dict[str, Any]:
        return self.fields["config"]

    def make_rng(self) -> np.random.Generator:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = self.rng_state
        return rng

    def make_optimizer(self) -> Optimizer:
        """A new optimizer of the saved class and hyper-parameters (state not loaded yet)."""
        cls = optimizer_class(self.optimizer_record["class"])
        return cls(**self.optimizer_record["hyper"])

    def restore(self, model, optimizer: Optimizer | None = None) -> Optimizer:
        """Restore weights, buffers, layer states and the optimizer into ``model`` (built as the
        checkpoint says when it is not built yet); returns the optimizer (a new one of the saved
        class when ``optimizer`` is None). The model must have the checkpoint's architecture."""
        where = os.fspath(self.path)
        saved = {"layers": self.config["layers"], "input_shape": list(self.fields["input_shape"]),
                 "dtype": self.fields["dtype"]}
        if model.built:
            mine = {"layers": model.get_config()["layers"], "input_shape": list(model.input_shape),
                    "dtype": model.dtype}
            if mine != saved:
                raise ModelFileError(f"resume_from: {where} was written by a different model (architecture, input "
                                     "shape or dtype)")
        else:
            mine = [{"type": type(layer).__name__, "config": layer.get_config()} for layer in model.layers]
            if mine != saved["layers"]:
                raise ModelFileError(f"resume_from: {where} was written by a different architecture")
            model.build(self.fields["input_shape"], dtype=self.fields["dtype"])
        weights, buffers = model_arrays(model, self.tensors, self.fields, where, allow_missing_buffers=False)
        param_shapes = {key: tuple(layer.params[name].shape) for key, layer, name in model.named_parameters()}
        _check_optimizer(self.optimizer_record, self.optimizer_tensors, param_shapes, self.fields["dtype"], where)
        # Everything that can refuse the checkpoint comes first: a refused one leaves the model as it was.
        if optimizer is None:
            optimizer = self.make_optimizer()
        if type(optimizer).__name__ != self.optimizer_record["class"]:
            raise ModelFileError(f"optimizer: the checkpoint {self.path} holds {self.optimizer_record['class']} state, "
                                 f"got a {type(optimizer).__name__}; pass optimizer=None to use the saved one")
        tensors = self.optimizer_tensors
        state = {key: {name: model.backend.asarray(tensors[f"optimizer/{key}/{name}"], dtype=model.dtype)
                       for name in names} for key, names in self.optimizer_record["state"].items()}
        states = model.layer_states()
        try:
            model.set_layer_states(self.layer_states)
        except XpcnnError as e:
            model.set_layer_states(states)
            raise ModelFileError(f"{where}: checkpoint layers: {e}") from None
        optimizer.load_state_dict({"steps": self.optimizer_record["steps"], "state": state})
        model.set_weights(weights)
        model.set_buffers(buffers)
        return optimizer


def model_arrays(model, tensors: dict[str, np.ndarray], fields: dict[str, Any], where: str, *,
                 allow_missing_buffers: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(weights, buffers) for ``model`` from file ``tensors``, checked against the shapes the
    model's architecture gives for the file's input shape: names, shapes, dtype, finiteness.
    Buffers missing from a version-1 file (written before layers had buffers) may keep their
    initial values when ``allow_missing_buffers``."""
    try:
        param_shapes, buffer_shapes = model.state_shapes(fields["input_shape"])
    except (XpcnnError, ValueError, TypeError) as e:
        raise ModelFileError(f"{where}: the architecture does not fit input_shape {list(fields['input_shape'])} "
                             f"({e})") from None
    own = {k: v for k, v in tensors.items() if not k.startswith(("optimizer/", "callbacks/"))}
    expected = {**param_shapes, **buffer_shapes}
    missing = sorted(set(expected) - set(own))
    if allow_missing_buffers and fields.get("version", 2) < 2:
        missing = [k for k in missing if k not in buffer_shapes]
    unexpected = sorted(set(own) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{where}: parameters do not match the architecture: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    want = np.dtype(fields["dtype"])
    for key, shape in expected.items():
        if key not in own:
            continue
        a = own[key]
        if a.shape != shape:
            raise ModelFileError(f"{where}: parameter {key}: expected shape {shape} for this architecture, got "
                                 f"{a.shape}")
        if a.dtype != want:
            raise ModelFileError(f"{where}: parameter {key}: expected dtype {want} (metadata dtype), got {a.dtype}")
        if not np.isfinite(a).all():
            raise ModelFileError(f"{where}: parameter {key}: contains NaN or Inf")
    weights = [own[k] for k in param_shapes]
    buffers = [own[k] if k in own else None for k in buffer_shapes]
    return weights, buffers


def _fail(where: str, what: str) -> ModelFileError:
    return ModelFileError(f"{where}: checkpoint {what}")


def _check_record(record: Any, tensors: dict[str, np.ndarray], where: str) -> None:
    """The optimizer record on its own: known class, valid hyper-parameters, step count, and
    exactly the listed state tensors, all finite."""
    if not isinstance(record, dict) or set(record) != {"class", "hyper", "steps", "state"}:
        raise _fail(where, "optimizer: expected class, hyper, steps and state")
    if record["class"] not in _OPTIMIZER_CLASSES:
        raise _fail(where, f"optimizer: unknown class {record['class']!r:.80}; known: {', '.join(_OPTIMIZER_CLASSES)}")
    if not isinstance(record["hyper"], dict):
        raise _fail(where, "optimizer hyper: expected an object")
    try:
        rule = _OPTIMIZER_CLASSES[record["class"]](**record["hyper"])
    except (TypeError, ValueError, OverflowError) as e:
        raise _fail(where, f"optimizer hyper: {e}") from None
    slots = set(rule.initial_state(np.zeros(1)))  # the state this rule keeps per parameter
    steps = record["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps < 2**62:
        raise _fail(where, f"optimizer steps: expected a non-negative int, got {steps!r:.80}")
    state = record["state"]
    if not isinstance(state, dict):
        raise _fail(where, "optimizer state: expected an object")
    listed = set()
    for key, names in state.items():
        if not isinstance(names, list) or not all(isinstance(n, str) and "/" not in n for n in names):
            raise _fail(where, f"optimizer state {key!r:.80}: expected a list of names")
        if not set(names) <= slots:
            raise _fail(where, f"optimizer state {key!r:.80}: {names!r:.80} is not the state of {record['class']} "
                               f"({sorted(slots)})")
        for name in names:
            tensor_key = f"optimizer/{key}/{name}"
            listed.add(tensor_key)
            if tensor_key not in tensors:
                raise _fail(where, f"optimizer state: tensor {tensor_key} is missing")
            if not np.isfinite(tensors[tensor_key]).all():
                raise _fail(where, f"optimizer state {tensor_key}: contains NaN or Inf")
    if set(tensors) != listed:
        raise _fail(where, f"optimizer: unexpected tensors {sorted(set(tensors) - listed)[:3]}")


def _check_optimizer(record: dict[str, Any], tensors: dict[str, np.ndarray], shapes: dict[str, tuple], dtype: str,
                     where: str) -> None:
    """The optimizer state against the model's parameters: keys, shapes and dtype."""
    for key, names in record["state"].items():
        if key not in shapes:
            raise _fail(where, f"optimizer state: {key!r:.80} is not a parameter of the model")
        for name in names:
            a = tensors[f"optimizer/{key}/{name}"]
            if a.shape != shapes[key] or a.dtype != np.dtype(dtype):
                raise _fail(where, f"optimizer state optimizer/{key}/{name}: expected {dtype} {shapes[key]}, got "
                                   f"{a.dtype} {a.shape}")


def _check_rng(state: Any, where: str) -> dict[str, Any]:
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise _fail(where, "rng: expected a PCG64 bit_generator state")
    try:
        np.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise _fail(where, f"rng: invalid PCG64 state ({e})") from None
    return state


def _check_history(history: Any, epoch: int, where: str) -> dict[str, list[float]]:
    if not isinstance(history, dict):
        raise _fail(where, "history: expected an object")
    for key, values in history.items():
        if (not isinstance(values, list) or len(values) > epoch
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e308
                           and math.isfinite(v) for v in values)):
            raise _fail(where, f"history {key!r:.40}: expected at most {epoch} finite numbers")
    return history


def read(path: str | os.PathLike) -> Checkpoint:
    """Read and check one checkpoint file; :class:`ModelFileError` if anything is wrong."""
    where = os.fspath(path)
    tensors, metadata = fileformat.parse(fileformat.read_bytes(path), where)
    fields = fileformat.check_metadata(metadata, where)
    if fields["kind"] != "checkpoint":
        raise ModelFileError(f"{where}: expected a checkpoint file, got kind {fields['kind']!r}")
    if fileformat.content_digest(tensors) != metadata["content_sha256"]:
        raise ModelFileError(f"{where}: content checksum mismatch: the tensor data is corrupted")
    epoch_text = metadata.get("epoch", "")
    if not (epoch_text.isascii() and epoch_text.isdigit()) or len(epoch_text) > 9 or int(epoch_text) < 1:
        raise _fail(where, f"epoch: expected a positive int, got {epoch_text!r:.40}")
    epoch = int(epoch_text)
    extra = {k: v for k, v in tensors.items() if k.startswith("optimizer/")}
    record = fileformat.parse_json(metadata.get("optimizer", ""), "metadata optimizer", where)
    _check_record(record, extra, where)
    rng_state = _check_rng(fileformat.parse_json(metadata.get("rng", ""), "metadata rng", where), where)
    history_record = fileformat.parse_json(metadata.get("history", "{}"), "metadata history", where)
    history = _check_history(history_record, epoch, where)
    fit_args = fileformat.parse_json(metadata.get("fit", "{}"), "metadata fit", where)
    layer_states = fileformat.parse_json(metadata.get("layers", "{}"), "metadata layers", where)
    if not isinstance(fit_args, dict) or not all(
            key not in fit_args or fit_args[key] is None or type(fit_args[key]) in types and 0 <= fit_args[key] < 2**63
            for key, types in (("initial_lr", (int, float)), ("batch_size", (int,)), ("seed", (int,)))):
        raise _fail(where, "fit: expected an object; initial_lr, batch_size and seed numbers >= 0")
    if not isinstance(layer_states, dict):
        raise _fail(where, "layers: expected an object")
    calls = fileformat.parse_json(metadata.get("callbacks", "[]"), "metadata callbacks", where)
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("class"), str)
                                              and isinstance(c.get("state"), dict) for c in calls):
        raise _fail(where, "callbacks: expected a list of {class, state, arrays}")
    states = []
    for i, call in enumerate(calls):
        count = call.get("arrays")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 10**6):
            raise _fail(where, f"callbacks: {call['class']}: arrays: expected a count, got {count!r:.40}")
        arrays = None if count is None else [tensors.get(f"callbacks/{i}/{j}") for j in range(count)]
        if arrays is not None and any(a is None or not np.isfinite(a).all() for a in arrays):
            raise _fail(where, f"callbacks: {call['class']}: missing or non-finite arrays")
        states.append((call["class"], {**call["state"], "arrays": arrays}))
    return Checkpoint(Path(path), epoch, fields, tensors, record, extra, rng_state, history, fit_args, layer_states,
                      states)


def restore_callbacks(ckpt: Checkpoint, callbacks) -> bool:
    """Give each callback with state (:meth:`~xpcnn.callbacks.Callback.get_state`) the state the
    checkpoint kept for the callback of its class at its place among them (one the checkpoint
    has none for starts afresh); True when one of them had stopped the run."""
    saved, stopped = list(ckpt.callback_states), False
    for cb in callbacks:
        if cb.get_state() is None or not saved or saved[0][0] != type(cb).__name__:
            continue
        state = saved.pop(0)[1]
        try:
            cb.set_state(state)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise _fail(os.fspath(ckpt.path), f"callbacks: {type(cb).__name__}: its state does not fit ({e})") from None
        stopped = stopped or state.get("stopped") is True
    return stopped


def latest(directory: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint in ``directory`` that reads back valid (older ones are tried, with a
    warning, when a newer one is damaged); None when there is none."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return read(path)
        except ModelFileError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None
