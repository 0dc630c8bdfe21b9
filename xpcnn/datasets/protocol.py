"""The dataset protocol that ``fit``, ``evaluate`` and ``predict`` accept besides arrays.

A dataset is any object with

- ``len(ds)``: the number of samples N;
- ``ds.batch(indices) -> (x, y)``: for int64 ``indices`` (n,), host NumPy images x float32
  (n, C, H, W) in [0, 1] and int64 labels y (n,) (None for unlabelled data);
- ``ds.class_names``: a list of names (label i is ``class_names[i]``) or None;
- ``ds.sample_shape``: one sample's shape (C, H, W).

``fit`` moves each batch to the model's backend and casts it to the model's dtype;
:class:`Prefetcher` decodes the next batch in a thread pool while the current step runs.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from .._validate import positive_int
from ..errors import ArgumentError, ArgumentTypeError, DataError, LabelError, ShapeError


def is_dataset(obj) -> bool:
    """Whether ``obj`` follows the protocol (``__len__``, ``batch``, ``class_names``)."""
    return all(hasattr(obj, name) for name in ("__len__", "batch", "class_names"))


def indices_of(indices, n: int) -> np.ndarray:
    """``indices`` as int64 (k,), k >= 1, each in [0, n): what a dataset's ``batch`` accepts."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not idx.size or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n:
        raise ArgumentError(f"indices: expected a non-empty list of ints in [0, {n}), got {idx!r:.80}")
    return idx.astype(np.int64)


def check_class_names(names, where: str = "class_names"):
    """``names`` as a list of distinct strings, or None."""
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names) or len({*names}) < len(names):
        raise ArgumentError(f"{where}: expected a list of distinct strings or None, got {names!r:.200}")
    return list(names)


class ArrayDataset:
    """Images ``x`` (N, C, H, W) (float, or uint8 pixels scaled to float32 [0, 1] per batch) and
    integer labels ``y`` (N,) or None, held as given (host NumPy or a memmap)."""

    def __init__(self, x, y=None, class_names=None) -> None:
        if not isinstance(x, np.ndarray):
            raise ArgumentTypeError(f"x: expected a host NumPy array (N, C, H, W), got {type(x).__name__}")
        if x.ndim < 2 or len(x) == 0:
            raise ShapeError(f"x: expected a non-empty batch of samples (N, C, H, W), got shape {x.shape}")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"x: expected float images in [0, 1] or uint8 pixels, got dtype {x.dtype}")
        if y is not None:
            if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
                raise LabelError(f"y: expected integer labels of shape ({len(x)},), got {getattr(y, 'dtype', type(y))} "
                                 f"{getattr(y, 'shape', '')}")
        self.x, self.y, self.class_names = x, y, check_class_names(class_names)
        self.sample_shape = tuple(int(s) for s in x.shape[1:])

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices):
        """(x[indices] as float, y[indices] as int64 or None)."""
        idx = indices_of(indices, len(self))
        x = np.asarray(self.x[idx])
        x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x
        return x, None if self.y is None else np.asarray(self.y[idx], dtype=np.int64)


class NpyDataset(ArrayDataset):
    """An :class:`ArrayDataset` over ``.npy`` files opened as read-only memmaps (nothing is read
    until a batch asks for it; never unpickled): images ``x_path``, labels ``y_path`` or None."""

    def __init__(self, x_path, y_path=None, class_names=None) -> None:
        arrays = []
        for name, path in (("x_path", x_path), ("y_path", y_path)):
            if path is None:
                arrays.append(None)
                continue
            if not isinstance(path, (str, os.PathLike)):
                raise ArgumentTypeError(f"{name}: expected a .npy file path, got {type(path).__name__}")
            try:
                arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
            except (OSError, ValueError) as e:
                raise DataError(f"{name}: cannot read {os.fspath(path)} as a .npy array ({e})") from None
        super().__init__(*arrays, class_names=class_names)


class Prefetcher:
    """A dataset decoded in a thread pool. :meth:`batch` splits the indices over ``workers``
    threads and concatenates their parts in order; :meth:`submit` starts a batch in the
    background and returns a ``concurrent.futures.Future`` of it, so the next batch decodes while
    the current step runs. :meth:`close` (or leaving a ``with`` block) stops the threads,
    cancelling what has not started."""

    def __init__(self, dataset, workers: int = 2) -> None:
        if not is_dataset(dataset):
            raise ArgumentTypeError(f"dataset: expected an object with __len__, batch and class_names, "
                                    f"got {type(dataset).__name__}")
        self.dataset, self.workers = dataset, positive_int(workers, "workers", error=ArgumentError)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="xpcnn-decode")
        self.ahead = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xpcnn-prefetch")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def class_names(self):
        return self.dataset.class_names

    def batch(self, indices):
        parts = [p for p in np.array_split(np.asarray(indices, dtype=np.int64), self.workers) if len(p)]
        done = list(self.pool.map(self.dataset.batch, parts))
        x = np.concatenate([d[0] for d in done])
        return x, None if done[0][1] is None else np.concatenate([d[1] for d in done])

    def submit(self, indices) -> concurrent.futures.Future:
        return self.ahead.submit(self.batch, indices)

    def close(self) -> None:
        for pool in (self.ahead, self.pool):
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
