"""Feeding a model: validated (x, y) arrays or a dataset, moved to the model's backend batch by batch.

:func:`feed` wraps what ``fit`` / ``evaluate`` / ``predict`` receive: arrays of any backend
(:class:`ArrayFeed`, checked once, whole) or a dataset (:class:`DatasetFeed`, decoded in a thread
pool, each batch checked on the host). The one dtype rule lives here (:func:`as_model_dtype`).
Written against the model's interface (``input_shape``, ``output_shape()``, ``backend``, ``dtype``,
``class_names``), not its class.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validate import namespace
from ..backend import device_of, dtype_name, library_of, namespace_of, to_device
from ..errors import ArgumentTypeError, DataError, DTypeError, LabelError, ShapeError
from .protocol import Prefetcher, check_class_names, is_dataset


class ArrayFeed:
    """Validated (x, y) of any backend; ``batch(idx)`` moves one batch to the model's backend."""

    def __init__(self, model, x: Any, y: Any, names: tuple[str, str] = ("x", "y")) -> None:
        nx, ny = names
        x, y = as_array(x, nx), (None if y is None else as_array(y, ny))
        own = model.backend.asarray(np.zeros(1, dtype=model.dtype))  # of the model's library and device
        for name, a in ((nx, x), (ny, y)):  # host data move batch by batch; another library's never silently
            if a is not None and not isinstance(a, np.ndarray):
                namespace(**{name: a, "model_parameters": own})
        self.host = isinstance(x, np.ndarray)
        xp = namespace_of(x)
        float_kind(x, nx)
        expected = tuple(model.input_shape)
        if tuple(x.shape[1:]) != expected or len(x.shape) != len(expected) + 1:
            raise ShapeError(f"{nx}: expected shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
                             f"{shape_hint(x.shape, expected)}")
        n = int(x.shape[0])
        if n == 0:
            raise DataError(f"{nx}: empty (N = 0); nothing to train or evaluate on")
        found = non_finite(xp, x)
        if found:
            count, first = found
            raise DataError(f"{nx}: expected finite values, got {count} NaN/Inf among {math.prod(x.shape)} values "
                            f"(the first in sample {first // math.prod(x.shape[1:])}, flat index {first}); "
                            "clean the data first")
        if y is not None:
            ypx = namespace_of(y)
            if len(y.shape) != 1 or int(y.shape[0]) != n:
                raise LabelError(f"{ny}: expected integer labels of shape ({n},) to match {nx}, "
                                 f"got shape {tuple(y.shape)}")
            if not ypx.isdtype(y.dtype, "integral"):
                raise LabelError(f"{ny}: expected integer class labels, got dtype {y.dtype}")
            classes = model.output_shape()[-1]
            low, high = int(ypx.min(y)), int(ypx.max(y))
            if low < 0 or high >= classes:
                raise LabelError(f"{ny}: expected labels in [0, {classes - 1}] (the model has {classes} outputs), "
                                 f"got values from {low} to {high}")
        self.x, self.y, self.n = x, y, n
        self.backend, self.dtype = model.backend, model.dtype

    def batch(self, idx: np.ndarray, *, prefetch: bool = False) -> tuple[Any, Any]:
        """x[idx], y[idx] on the model's backend, x in the model's dtype (idx: host int64).
        ``prefetch``: host data start their copy without waiting (see :meth:`Backend.prefetch`);
        pass the pair through :meth:`ready` before computing with it."""
        if self.host:
            xb = self.x[idx]
            if xb.dtype != self.dtype:
                xb = xb.astype(self.dtype)
            if prefetch and self.backend.prefetches:
                return self.backend.prefetch(xb), None if self.y is None else self.backend.prefetch(self.y[idx])
            yb = None if self.y is None else to_device(self.y[idx], self.backend)
            return to_device(xb, self.backend), yb
        xb = to_device(take_rows(self.x, idx), self.backend)
        yb = None if self.y is None else to_device(take_rows(self.y, idx), self.backend)
        if dtype_name(xb.dtype) != self.dtype:
            xp = namespace_of(xb)
            xb = xp.astype(xb, getattr(xp, self.dtype))
        return xb, yb


    def ready(self, pair: tuple[Any, Any]) -> tuple[Any, Any]:
        return self.backend.ready(pair[0]), self.backend.ready(pair[1])

    def close(self) -> None:
        """Nothing to release (a dataset's threads are: :class:`DatasetFeed`)."""


class DatasetFeed:
    """A dataset (:mod:`xpcnn.datasets.protocol`) decoded in a thread pool (:class:`Prefetcher`).
    ``batch(idx, prefetch=True)`` starts decoding and returns a future that :meth:`ready` turns
    into (x, y) on the model's backend, x in its dtype, each batch checked on the host first."""

    def __init__(self, model, ds, name: str = "x", labels: bool = True) -> None:
        self.n, self.name, self.labels, self.y = len(ds), name, labels, None
        if self.n == 0:
            raise DataError(f"{name}: the dataset is empty (len 0); nothing to train or evaluate on")
        self.class_names = check_class_names(ds.class_names, f"{name}.class_names")
        self.classes = model.output_shape()[-1]
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise LabelError(f"{name}: the dataset has {len(self.class_names)} classes, the model {self.classes} "
                             "outputs")
        if labels and self.class_names and model.class_names and self.class_names != list(model.class_names):
            raise LabelError(f"{name}: the dataset's classes {self.class_names} are not the model's "
                             f"{list(model.class_names)} (set model.class_names = None to train on other classes)")
        self.loader, self.input_shape = Prefetcher(ds), tuple(model.input_shape)
        self.backend, self.dtype = model.backend, model.dtype

    def batch(self, idx: np.ndarray, *, prefetch: bool = False):
        pair = (self.loader.submit(idx), len(idx))
        return pair if prefetch else self.ready(pair)

    def ready(self, pair):
        (x, y), n = pair[0].result(), pair[1]
        name = self.name
        x = as_model_dtype(np, as_array(x, f"{name}.batch(...)[0]"), self.dtype, f"{name}.batch(...)[0]")
        if tuple(x.shape) != (n, *self.input_shape):
            raise ShapeError(f"{name}: batch(indices) of {n} indices gave x of shape {tuple(x.shape)}, expected "
                             f"({n}, {', '.join(map(str, self.input_shape))}) (the model's input)")
        if not np.isfinite(x).all():
            raise DataError(f"{name}: a batch holds NaN or Inf; clean the data first")
        if self.labels and (y is None or not np.issubdtype(np.asarray(y).dtype, np.integer)):
            raise LabelError(f"{name}: the dataset's batch gave no integer labels; fit and evaluate need labelled data")
        if self.labels and (np.shape(y) != (n,) or np.min(y) < 0 or np.max(y) >= self.classes):
            raise LabelError(f"{name}: expected labels of shape ({n},) in [0, {self.classes - 1}] (the model has "
                             f"{self.classes} outputs), got shape {np.shape(y)} from {np.min(y)} to {np.max(y)}")
        return to_device(x, self.backend), None if y is None else to_device(np.asarray(y, dtype=np.int64), self.backend)

    def close(self) -> None:
        self.loader.close()


def shape_hint(shape, expected) -> str:
    """What a batch of ``shape`` likely lacks for samples of ``expected`` (C, H, W), as a hint."""
    shape, expected = tuple(shape), tuple(expected)
    if shape == expected:
        return " (one sample: add the batch axis, x[None])"
    if len(shape) == len(expected) and shape[1:] == expected[1:] and expected[0] == 1:
        return " (add the channel axis: x[:, None], or xpcnn.datasets.preprocess(images) for uint8 pixels)"
    return ""


def feed(model, x, y, labels: bool = True):
    """:class:`DatasetFeed` for a dataset (``y`` must then be None), else :class:`ArrayFeed`."""
    if not is_dataset(x):
        if labels and y is None:
            raise LabelError("y: expected the labels (N,) of x, got None (only a dataset gives its own labels)")
        return ArrayFeed(model, x, y)
    if y is not None:
        raise ArgumentTypeError("y: expected None with a dataset (it gives its own labels)")
    return DatasetFeed(model, x, labels=labels)


def non_finite(xp, x: Any) -> tuple[int, int] | None:
    """(how many values of ``x`` are NaN/Inf, the flat index of the first), or None when all are
    finite: one reduction when they are (a host read), the rest only to name them."""
    if bool(xp.all(xp.isfinite(x))):
        return None
    bad = xp.reshape(~xp.isfinite(x), (-1,))
    return int(xp.sum(xp.astype(bad, xp.int64))), int(xp.argmax(xp.astype(bad, xp.int8)))


def as_model_dtype(xp, x: Any, dtype: str, name: str) -> Any:
    """``x`` in the model's float ``dtype``: the one dtype rule of every entry point (``fit``,
    ``evaluate``, ``predict``, ``__call__``, ``train_step``). Floating input of the other float
    dtype is cast; integers and bools are refused, never converted silently."""
    if dtype_name(x.dtype) == dtype:
        return x
    float_kind(x, name)
    return xp.astype(x, getattr(xp, dtype))


def float_kind(x: Any, name: str) -> str:
    """"float32" or "float64", else a DTypeError (uint8 pixels get pointed to preprocess)."""
    kind = dtype_name(x.dtype)
    if kind == "uint8":
        raise DTypeError(f"{name}: expected float images in [0, 1], got uint8 pixels; convert them with "
                         "xpcnn.datasets.preprocess(images) (x / 255; (N, H, W) gets the channel axis)")
    if kind not in ("float32", "float64"):
        raise DTypeError(f"{name}: expected a float32 or float64 array, got dtype {kind}")
    return kind


def as_array(a: Any, name: str) -> Any:
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    try:
        library_of(a)
    except DTypeError:
        raise DTypeError(f"{name}: expected an array (NumPy or a backend's), got {type(a).__name__}") from None
    return a


def take_rows(a: Any, idx: np.ndarray) -> Any:
    xp = namespace_of(a)
    return xp.take(a, xp.asarray(idx, device=device_of(a)), axis=0)


def validation_feed(model, validation_data) -> ArrayFeed | None:
    if validation_data is None:
        return None
    if is_dataset(validation_data):
        return DatasetFeed(model, validation_data, "validation_data")
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2 or validation_data[1] is None:
        raise ArgumentTypeError(f"validation_data: expected a pair (x_val, y_val) of arrays or a dataset, "
                                f"got {validation_data!r:.80}")
    return ArrayFeed(model, *validation_data, names=("validation_data[0]", "validation_data[1]"))


