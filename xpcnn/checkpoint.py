"""Training checkpoints: everything needed to continue a fit exactly where it stopped.

One safetensors file per finished epoch, ``<dir>/ckpt-epoch000003.safetensors``, written
atomically (temporary file, flush, fsync, ``os.replace``, directory fsync) so a crash or a
SIGKILL at any instant leaves every existing checkpoint intact; the newest ``keep`` (3) are
kept. Each holds, besides the model (see :mod:`xpcnn.io`, so ``xpcnn.load`` reads it too):

* tensors ``optimizer/<param key>/<state name>``: the optimizer's state arrays (Adam's m, v,
  SGD's momentum buffer), exactly;
* metadata ``epoch`` (epochs finished), ``optimizer`` (class, hyper-parameters, step count,
  which state arrays exist), ``rng`` (the shuffle generator's ``bit_generator.state``),
  ``history`` (per-epoch metrics so far) and ``fit`` (seed, batch size, shuffle; informative).

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

from . import io
from .backend import to_numpy
from .errors import ModelFileError
from .optim import OPTIMIZERS, Optimizer

KEEP = 3
_NAME = re.compile(r"^ckpt-epoch(\d{6})\.safetensors$")
_STALE_TMP = re.compile(r"^\.ckpt-epoch\d{6}\.safetensors\..+\.tmp$")
_OPTIMIZER_CLASSES = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def checkpoint_name(epoch: int) -> str:
    return f"ckpt-epoch{epoch:06d}.safetensors"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint file in ``directory``, oldest first (unvalidated)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), directory / name) for name in os.listdir(directory) if (m := _NAME.match(name))]
    return sorted(found)


# ---------------------------------------------------------------- writing


def optimizer_record(optimizer: Optimizer, model) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON-able description, host state arrays keyed ``optimizer/<key>/<name>``) of ``optimizer``."""
    state = optimizer.state_dict()
    tensors, names = {}, {}
    for key, slots in state["state"].items():
        names[key] = sorted(slots)
        for name, array in slots.items():
            if not hasattr(array, "shape"):
                raise TypeError(f"optimizer state {key}/{name}: expected an array, got {type(array).__name__}")
            tensors[f"optimizer/{key}/{name}"] = np.ascontiguousarray(to_numpy(array))
    record = {"class": type(optimizer).__name__, "hyper": state["hyper"], "steps": int(state["steps"]), "state": names}
    return record, tensors


def save(directory: str | os.PathLike, *, model, optimizer: Optimizer, rng: np.random.Generator, epoch: int,
         history: dict[str, list[float]] | None = None, fit_args: dict[str, Any] | None = None,
         keep: int = KEEP) -> Path:
    """Write the checkpoint of ``epoch`` finished epochs into ``directory``; prune to ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(directory):
        if _STALE_TMP.match(name):  # left by a writer that was killed mid-write
            with io._suppress_oserror():
                os.unlink(directory / name)
    record, tensors = optimizer_record(optimizer, model)
    metadata = {
        "epoch": str(int(epoch)),
        "optimizer": json.dumps(record),
        "rng": json.dumps(rng.bit_generator.state),
        "history": json.dumps(history or {}),
        "fit": json.dumps(fit_args or {}),
    }
    data = io.encode(model, kind="checkpoint", tensors=tensors, metadata=metadata)
    path = io.write_atomic(directory / checkpoint_name(epoch), data)
    for _, old in list_checkpoints(directory)[:-keep]:
        with io._suppress_oserror():
            os.unlink(old)
    return path


# ---------------------------------------------------------------- reading


@dataclasses.dataclass
class Checkpoint:
    """A validated checkpoint read into host memory."""

    path: Path
    epoch: int
    fields: dict[str, Any]
    weights: list[np.ndarray]
    optimizer_record: dict[str, Any]
    optimizer_tensors: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    history: dict[str, list[float]]
    fit_args: dict[str, Any]
    architecture: Any  # an unbuilt Sequential

    @property
    def config(self) -> dict[str, Any]:
        return self.fields["config"]

    def model(self, backend=None):
        """A new built Sequential with the checkpoint's weights on ``backend``."""
        from .model import Sequential

        fresh = Sequential.from_config({"layers": self.config["layers"]})
        return io.build_from(fresh, self.fields, self.weights, backend)

    def make_rng(self) -> np.random.Generator:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = self.rng_state
        return rng

    def make_optimizer(self) -> Optimizer:
        """A new optimizer of the saved class and hyper-parameters (state not loaded yet)."""
        cls = _OPTIMIZER_CLASSES[self.optimizer_record["class"]]
        return cls(**self.optimizer_record["hyper"])

    def restore_optimizer(self, optimizer: Optimizer, model) -> None:
        """Load the saved step count and state arrays into ``optimizer``, on ``model``'s backend."""
        saved = self.optimizer_record["class"]
        if type(optimizer).__name__ != saved:
            raise ModelFileError(
                f"optimizer: the checkpoint {self.path} holds {saved} state, got a {type(optimizer).__name__}; "
                "pass optimizer=None to use the saved one"
            )
        state = {
            key: {name: model.backend.asarray(self.optimizer_tensors[f"optimizer/{key}/{name}"], dtype=model.dtype) for name in names}
            for key, names in self.optimizer_record["state"].items()
        }
        optimizer.load_state_dict({"steps": self.optimizer_record["steps"], "state": state})


def _fail(where: str, what: str) -> ModelFileError:
    return ModelFileError(f"{where}: checkpoint {what}")


def _check_optimizer(record: Any, tensors: dict[str, np.ndarray], shapes: dict[str, tuple], dtype: str, where: str) -> None:
    if not isinstance(record, dict) or set(record) != {"class", "hyper", "steps", "state"}:
        raise _fail(where, "optimizer: expected class, hyper, steps and state")
    if record["class"] not in _OPTIMIZER_CLASSES:
        raise _fail(where, f"optimizer: unknown class {record['class']!r:.80}; known: {', '.join(_OPTIMIZER_CLASSES)}")
    if not isinstance(record["hyper"], dict):
        raise _fail(where, "optimizer hyper: expected an object")
    try:
        _OPTIMIZER_CLASSES[record["class"]](**record["hyper"])
    except (TypeError, ValueError) as e:
        raise _fail(where, f"optimizer hyper: {e}") from None
    steps = record["steps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps < 2**62:
        raise _fail(where, f"optimizer steps: expected a non-negative int, got {steps!r:.80}")
    state = record["state"]
    if not isinstance(state, dict):
        raise _fail(where, "optimizer state: expected an object")
    listed = set()
    for key, names in state.items():
        if key not in shapes:
            raise _fail(where, f"optimizer state: {key!r:.80} is not a parameter of the model")
        if not isinstance(names, list) or not all(isinstance(n, str) and "/" not in n for n in names):
            raise _fail(where, f"optimizer state {key}: expected a list of names")
        for name in names:
            tensor_key = f"optimizer/{key}/{name}"
            listed.add(tensor_key)
            if tensor_key not in tensors:
                raise _fail(where, f"optimizer state: tensor {tensor_key} is missing")
            a = tensors[tensor_key]
            if a.shape != shapes[key] or a.dtype != np.dtype(dtype):
                raise _fail(where, f"optimizer state {tensor_key}: expected {dtype} {shapes[key]}, got {a.dtype} {a.shape}")
            if not np.isfinite(a).all():
                raise _fail(where, f"optimizer state {tensor_key}: contains NaN or Inf")
    if set(tensors) != listed:
        raise _fail(where, f"optimizer: unexpected tensors {sorted(set(tensors) - listed)[:3]}")


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
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            raise _fail(where, f"history {key!r:.40}: expected at most {epoch} finite numbers")
    return history


def read(path: str | os.PathLike) -> Checkpoint:
    """Read and validate one checkpoint file; :class:`ModelFileError` if anything is wrong."""
    where = os.fspath(path)
    tensors, metadata = io.parse(io.read_bytes(path), where)
    model, fields, weights, extra = io.decode_parsed(tensors, metadata, where, kinds=("checkpoint",))
    epoch_text = metadata.get("epoch", "")
    if not epoch_text.isdigit() or len(epoch_text) > 9 or int(epoch_text) < 1:
        raise _fail(where, f"epoch: expected a positive int, got {epoch_text!r:.40}")
    epoch = int(epoch_text)
    shapes = io.expected_shapes(model, fields["input_shape"], where)
    record = io._parse_json(metadata.get("optimizer", ""), "metadata optimizer", where)
    _check_optimizer(record, extra, shapes, fields["dtype"], where)
    rng_state = _check_rng(io._parse_json(metadata.get("rng", ""), "metadata rng", where), where)
    history = _check_history(io._parse_json(metadata.get("history", "{}"), "metadata history", where), epoch, where)
    fit_args = io._parse_json(metadata.get("fit", "{}"), "metadata fit", where)
    if not isinstance(fit_args, dict):
        raise _fail(where, "fit: expected an object")
    return Checkpoint(Path(path), epoch, fields, weights, record, extra, rng_state, history, fit_args, model)


def latest(directory: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint in ``directory`` that reads back valid (older ones are tried, with a
    warning, when a newer one is damaged); None when there is none."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return read(path)
        except ModelFileError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None
