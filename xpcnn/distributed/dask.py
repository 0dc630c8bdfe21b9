"""Inference and evaluation over Dask arrays: data sets larger than memory, or spread over a cluster.

    import dask.array as da, xpcnn.dask
    x = xpcnn.dask.from_npy("images.npy", chunk=4096)     # (N, C, H, W) float, read lazily
    probs = xpcnn.dask.predict(model, x)                   # dask array (N, K), nothing computed yet
    xpcnn.dask.evaluate(model, x, y)                       # {"loss": ..., "accuracy": ...}

Every task runs ``model.predict`` / ``model.evaluate`` on one chunk of images (chunks run along
the batch axis), so the results are those of the model on the same data, up to the order in
which per-chunk sums are added.

The model travels once: it is serialised to bytes in the safetensors model format (never a
pickle of the model object) and placed in the task graph as ONE key that every chunk task
depends on. On a ``dask.distributed`` cluster a worker fetches that key once and each worker
process builds the model from it once (a per-process cache keyed by the bytes' SHA-256), not
once per chunk. On Dask's default (threaded) scheduler the chunks share the one model: inference
only reads the parameters.

Images chunked along an image axis (C, H or W) are rechunked to whole images first (one image
always fits in memory; the rechunk costs one shuffle of the data, so chunk along the batch axis at
the source when you can). Probabilities come back as NumPy chunks whatever backend the workers
compute on (``backend=``; default: the worker's selected backend, ``XPCNN_BACKEND`` or numpy).

Dask is imported only when one of these functions runs; ``pip install -e '.[dask]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
from typing import Any

import numpy as np

from .. import saving
from .._validate import positive_int
from ..backend import to_device, to_numpy
from ..datasets.feed import float_kind, shape_hint
from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    BackendUnavailableError,
    DTypeError,
    LabelError,
    NotBuiltError,
    ShapeError,
)

INSTALL = "pip install -e '.[dask]' (dask[array] and dask[distributed])"
DEFAULT_BATCH_SIZE = 256
_CACHE_SIZE = 4


def _dask_array():
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise BackendUnavailableError(f"xpcnn.dask needs Dask, which is not installed; {INSTALL}") from None
    return dask, da


# ---------------------------------------------------------------- the model on the workers


def _model_bytes(model) -> bytes:
    return model.to_bytes()


def _model_from_bytes(blob: bytes, backend: str | None):
    model, fields, weights, buffers = saving.decode(blob, "<model sent to the Dask workers>")
    return saving.build_from(model, fields, weights, buffers, backend)


_models: dict[tuple[str, str | None], Any] = {}
_loads = 0
_lock = threading.Lock()
_tracing = threading.Lock()  # JAX traces a new shape into the shared model's layers: one chunk at a time


def _running(model):
    """A lock for a model whose backend compiles (chunks on threads share it), else nothing."""
    return _tracing if model.backend.compiles else contextlib.nullcontext()


def _cached_model(blob: bytes, digest: str, backend: str | None):
    """The model of ``blob`` (whose :func:`_model_key` is ``digest``) on ``backend``, built once
    per process and kept (the newest few)."""
    global _loads
    key = (digest, backend)
    with _lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = _model_from_bytes(blob, backend)
            _loads += 1
            while len(_models) > _CACHE_SIZE:
                del _models[next(iter(_models))]
    return model


def model_cache_info() -> dict[str, int]:
    """In this process: ``models`` built from received bytes and still cached, and ``loads``,
    how many times one was built (one per model per worker process when the cache works)."""
    return {"models": len(_models), "loads": _loads}


def _shipped(dask, model) -> tuple[Any, str]:
    """(a Delayed holding the model's bytes -- one key of the graph --, their SHA-256)."""
    if not callable(getattr(model, "to_bytes", None)) or not hasattr(model, "built"):
        raise ArgumentTypeError(f"model: expected an xpcnn Sequential, got {type(model).__name__}")
    if not model.built:
        raise NotBuiltError("model: not built; build it or fit it before predicting with Dask")
    digest = _model_key(model)
    return dask.delayed(_model_bytes(model), name=f"xpcnn-model-{digest}", traverse=False), digest


def _model_key(model) -> str:
    """SHA-256 of the architecture, dtype, weights and buffers (the file bytes themselves are
    not canonical: safetensors does not fix the order of its metadata)."""
    h = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True).encode())
    for key, _, _ in model.named_parameters() + model.named_buffers():
        h.update(key.encode())
    for w in model.get_weights() + model.get_buffers():
        host = np.ascontiguousarray(to_numpy(w))
        h.update(f"{host.dtype.str}{host.shape}".encode())
        h.update(host.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- inputs


def _check_backend(backend: Any) -> str | None:
    if backend is not None and not isinstance(backend, str):
        raise ArgumentError("backend: expected a backend name such as 'numpy' or 'cupy:0' (loaded on each worker), "
                            f"or None, got {backend!r}")
    return backend


def _images(da, model, x, name: str = "x"):
    """``x`` as a dask array of float images (N, *model.input_shape) with whole images per chunk."""
    if not isinstance(x, da.Array):
        raise DTypeError(f"{name}: expected a dask.array (e.g. xpcnn.dask.from_npy(path) or "
                         "dask.array.from_array(x, chunks=(1024, -1, -1, -1))), "
                         f"got {type(x).__name__}; for an in-memory array call model.predict / model.evaluate")
    expected = tuple(model.input_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ShapeError(f"{name}: expected shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
                         f"{shape_hint(x.shape, expected)}")
    if any(math.isnan(s) for s in x.shape) or any(math.isnan(c) for c in x.chunks[0]):
        raise ShapeError(f"{name}: expected known chunk sizes along the batch axis, got unknown ones; "
                         f"call {name}.compute_chunk_sizes() first")
    float_kind(x, name)  # the one dtype rule (uint8 pixels are pointed to preprocess)
    if any(len(c) > 1 for c in x.chunks[1:]):
        # Whole images per chunk: a chunk task needs every pixel of its images.
        x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    return x


def _labels(da, y, x):
    """``y`` as a dask array of integer labels (N,) chunked like ``x``'s batch axis."""
    n = x.shape[0]
    if not isinstance(y, (da.Array, np.ndarray)):
        raise DTypeError(f"y: expected a dask.array or NumPy array of integer labels, got {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != n:
        raise LabelError(f"y: expected integer labels of shape ({n},) to match x, got shape {tuple(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise LabelError(f"y: expected integer class labels, got dtype {y.dtype}")
    if isinstance(y, np.ndarray):
        return da.from_array(y, chunks=(x.chunks[0],))
    return y.rechunk((x.chunks[0],)) if y.chunks[0] != x.chunks[0] else y


# ---------------------------------------------------------------- per-chunk work (runs on the workers)


def _predict_chunk(images: np.ndarray, blob: bytes, digest: str, backend: str | None, batch_size: int) -> np.ndarray:
    model = _cached_model(blob, digest, backend)
    images = np.asarray(images, dtype=model.dtype)
    with _running(model):
        out = [to_numpy(model.predict(to_device(images[i:i + batch_size], model.backend)))
               for i in range(0, images.shape[0], batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape()[-1]), dtype=model.dtype)


def _evaluate_chunk(images: np.ndarray, labels: np.ndarray, blob: bytes, digest: str, backend: str | None,
                    batch_size: int) -> np.ndarray:
    """[[loss * n, correct]] (float64) of one chunk of n images."""
    model = _cached_model(blob, digest, backend)
    n = images.shape[0]
    if n == 0:
        return np.zeros((1, 2))
    with _running(model):
        result = model.evaluate(np.asarray(images, dtype=model.dtype), np.asarray(labels), batch_size=batch_size)
    return np.array([[result["loss"] * n, round(result["accuracy"] * n)]], dtype=np.float64)


# ---------------------------------------------------------------- public


def predict(model, x, *, batch_size: int = DEFAULT_BATCH_SIZE, backend: str | None = None):
    """Softmax probabilities of ``model`` for a dask array of images ``x`` (N, C, H, W), float32
    or float64 in [0, 1]: a lazy dask array (N, K) in the model's dtype, chunked like ``x``
    along the batch axis. Nothing runs until you compute it.

    batch_size: images per ``model.predict`` call inside a chunk (bounds the activations' memory).
    backend: where the workers compute ("numpy", "cupy:0", "torch:cuda", ...); None: each
        worker's selected backend. The chunks of the result are NumPy arrays either way.
    """
    dask, da = _dask_array()
    batch_size, backend = positive_int(batch_size, "batch_size", error=ArgumentError), _check_backend(backend)
    shipped, digest = _shipped(dask, model)
    x = _images(da, model, x)
    classes = model.output_shape()[-1]
    image_axes = "abcdefgh"[:x.ndim - 1]
    return da.blockwise(_predict_chunk, "nk", x, "n" + image_axes, shipped, None, digest, None, backend, None,
                        batch_size, None, new_axes={"k": classes}, concatenate=True, dtype=np.dtype(model.dtype),
                        meta=np.empty((0, 0), dtype=model.dtype), name=f"xpcnn-predict-{digest[:16]}")


def evaluate(model, x, y, *, batch_size: int = DEFAULT_BATCH_SIZE, backend: str | None = None) -> dict[str, float]:
    """``{"loss": mean softmax cross-entropy, "accuracy": fraction correct}`` of ``model`` on a
    dask array of images ``x`` (N, C, H, W) and integer labels ``y`` (N,) (a dask array, or a
    NumPy array, which is chunked like ``x``): the same dict as ``model.evaluate(x, y)``.

    Computes now, on the current Dask scheduler (a ``dask.distributed.Client`` when one is
    active). Each chunk returns its loss sum and correct count; their totals divided by N give
    the result. ``batch_size`` and ``backend`` as in :func:`predict`.
    """
    dask, da = _dask_array()
    batch_size, backend = positive_int(batch_size, "batch_size", error=ArgumentError), _check_backend(backend)
    shipped, digest = _shipped(dask, model)
    x = _images(da, model, x)
    y = _labels(da, y, x)
    n = int(x.shape[0])
    if n == 0:
        raise ShapeError("x: empty (N = 0); nothing to evaluate")
    image_axes = "abcdefgh"[:x.ndim - 1]
    parts = da.blockwise(_evaluate_chunk, "ns", x, "n" + image_axes, y, "n",
                         shipped, None, digest, None, backend, None, batch_size, None,
                         new_axes={"s": 2}, adjust_chunks={"n": 1}, concatenate=True, dtype=np.float64,
                         meta=np.empty((0, 0), dtype=np.float64), name=f"xpcnn-evaluate-{digest[:16]}")
    loss_sum, correct = parts.sum(axis=0).compute().tolist()
    return {"loss": loss_sum / n, "accuracy": int(round(correct)) / n}


class _NpyFile:
    """A picklable stand-in for a ``.npy`` file: only the path travels; each ``[...]`` maps the
    file read-only and copies out the slice asked for (so no task holds the whole file)."""

    def __init__(self, path: str) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise ArgumentTypeError(f"path: expected a path to a .npy file, got {type(path).__name__}")
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self.path):
            raise ArgumentError(f"path: expected an existing .npy file, got {self.path} (no such file)")
        try:
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:  # object arrays (which would need pickle), not a .npy file
            raise DTypeError(f"path: {self.path}: expected a numeric .npy file ({e})") from None
        if not isinstance(mapped, np.memmap):
            raise DTypeError(f"path: {self.path}: expected one .npy array, got {type(mapped).__name__}")
        self.shape, self.dtype, self.ndim = tuple(mapped.shape), mapped.dtype, mapped.ndim
        del mapped
        stat = os.stat(self.path)
        self.token = (self.path, stat.st_size, stat.st_mtime_ns, self.shape, self.dtype.str)

    def __dask_tokenize__(self):
        return self.token

    def __getitem__(self, key):
        return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[key])


def from_npy(path, *, chunk: int = 4096):
    """A ``.npy`` file as a dask array, read lazily: ``chunk`` samples (along the first axis)
    per task, each task memory-maps the file and copies out only its slice, so the file may be
    larger than memory and only its path is sent to the workers (a ``numpy.memmap`` given to
    ``dask.array.from_array`` would be pickled with its data)."""
    _, da = _dask_array()
    chunk = positive_int(chunk, "chunk", error=ArgumentError)
    source = _NpyFile(path)
    chunks = (chunk,) + tuple(-1 for _ in source.shape[1:])
    name = "xpcnn-npy-" + hashlib.sha256(repr(source.token).encode()).hexdigest()[:16]
    return da.from_array(source, chunks=chunks, name=name, meta=np.empty((0,) * source.ndim, dtype=source.dtype),
                         fancy=False, asarray=False)
