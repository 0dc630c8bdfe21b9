"""Saving and loading whole models, above the model and the file format.

``save(model, path)`` writes a model file (``Sequential.save``); ``load(path, backend=...)``
reads a model file, a checkpoint file, or the newest valid checkpoint of a directory, and
returns a built :class:`~xpcnn.model.Sequential` on any backend. The architecture is rebuilt
only from registered layer types and every array is checked against it before use; nothing
in a file is ever executed (no pickle). Any defect raises :class:`xpcnn.errors.ModelFileError`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import fileformat
from .backend import Backend, current_backend, resolve_target
from .checkpoint import model_arrays
from .errors import ModelFileError, XpcnnError
from .model import Sequential


def save(model: Sequential, path: str | os.PathLike) -> Path:
    """Save ``model`` (architecture, dtype, weights, buffers) to ``path`` as safetensors, atomically."""
    if not isinstance(model, Sequential):
        raise ModelFileError(f"model: expected an xpcnn Sequential, got {type(model).__name__}")
    model.save(path)
    return Path(path)


def architecture(config: dict[str, Any], where: str) -> Sequential:
    """An unbuilt Sequential from a config read from a file: registered layer types only."""
    try:
        return Sequential.from_config({"layers": config["layers"]})
    except (XpcnnError, ValueError, TypeError) as e:
        raise ModelFileError(f"{where}: config: cannot rebuild the architecture ({e})") from None


def decode(data: bytes, where: str = "<bytes>") -> tuple[Sequential, dict[str, Any], list[np.ndarray],
                                                         list[np.ndarray | None]]:
    """(unbuilt model, header fields, weights, buffers) from model or checkpoint file bytes, all
    checked; buffers absent from a version-1 file are None (they keep their initial values)."""
    tensors, metadata = fileformat.parse(data, where)
    fields = fileformat.check_metadata(metadata, where)
    if fileformat.content_digest(tensors) != metadata["content_sha256"]:
        raise ModelFileError(f"{where}: content checksum mismatch: the tensor data is corrupted")
    if fields["kind"] != "checkpoint" and any(k.startswith(("optimizer/", "callbacks/")) for k in tensors):
        stray = sorted(k for k in tensors if k.startswith(("optimizer/", "callbacks/")))
        raise ModelFileError(f"{where}: checkpoint tensors in a model file: {stray[:3]}")
    model = architecture(fields["config"], where)
    weights, buffers = model_arrays(model, tensors, fields, where, allow_missing_buffers=True)
    names, outputs = fields.get("class_names"), model.output_shape(tuple(fields["input_shape"]))
    if names is not None and outputs != (len(names),):
        raise ModelFileError(f"{where}: metadata class_names: {len(names)} names for a model whose output has shape "
                             f"{outputs}: expected one name per output")
    return model, fields, weights, buffers


def build_from(model: Sequential, fields: dict[str, Any], weights, buffers, backend) -> Sequential:
    """Build ``model`` on ``backend`` (default: the selected one) and install the arrays."""
    target: Backend = current_backend() if backend is None else resolve_target(backend)
    model.build(fields["input_shape"], dtype=fields["dtype"], backend=target)
    model.class_names = fields.get("class_names")
    model.set_weights(weights)
    if buffers:
        current = model.get_buffers()
        model.set_buffers([b if b is not None else c for b, c in zip(buffers, current)])
    return model


def load(path: str | os.PathLike, backend: str | Backend | None = None) -> Sequential:
    """A built Sequential from a model file (or a checkpoint file, or the newest valid checkpoint
    in a checkpoint directory), on ``backend`` (a name such as "numpy", "torch", "jax", "cupy:1";
    default: the selected backend). Weights are exact; the file's dtype is kept.

    Raises :class:`xpcnn.errors.ModelFileError` for anything that is not a valid xpcnn model
    file (random bytes, truncated, wrong shapes, a pickle, bad metadata); nothing in the file is
    ever executed.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ModelFileError(f"path: expected a file or directory path, got {type(path).__name__}")
    if os.path.isdir(path):
        for _, file in reversed(fileformat.list_checkpoints(path)):
            try:
                decoded = decode(fileformat.read_bytes(file), os.fspath(file))
            except ModelFileError as e:
                warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
                continue
            return build_from(*decoded, backend)
        raise ModelFileError(f"{os.fspath(path)}: a directory with no valid checkpoint in it")
    where = os.fspath(path)
    return build_from(*decode(fileformat.read_bytes(path), where), backend)
