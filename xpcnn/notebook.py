"""Moving weights between the teaching notebook's layout and xpcnn's.

The notebook (a per-pixel NumPy CNN: 16 3x3 kernels, 2x2 average pooling, a softmax layer) keeps
activations as (H, W, C): its pooling output is (13, 13, 16) and ``image.flatten()`` orders the
softmax weight rows as ``h*13*16 + w*16 + c``; its kernels are (16, 3, 3). xpcnn is NCHW with
conv weight (out, in, kh, kw) = (16, 1, 3, 3) and flattens in (C, H, W) order (PyTorch's), so its
Dense row is ``c*13*13 + h*13 + w``. :func:`to_xpcnn_weights` / :func:`from_xpcnn_weights`
convert between the two exactly (pure permutations, no arithmetic), for any square P x P pooling
output and any number of kernels.

The notebook's own algorithm, kept as the float64 oracle xpcnn is tested against, lives with
the tests (``tests/notebook_reference.py``); ``zoo.notebook_cnn()`` is its network in xpcnn.
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .errors import DTypeError, ShapeError

__all__ = ["to_xpcnn_weights", "from_xpcnn_weights"]


def _host(a, name: str) -> np.ndarray:
    """A NumPy float64 copy of an array of any backend."""
    try:
        return np.array(to_numpy(a), dtype=np.float64, copy=True)
    except TypeError:  # library_of's DTypeError for a non-array
        raise DTypeError(f"{name}: expected an array (NumPy or a backend's), got {type(a).__name__}") from None


def _pooled_side(rows: int, channels: int, name: str) -> int:
    side = int(round((rows // max(channels, 1)) ** 0.5))
    if side * side * channels != rows:
        raise ShapeError(f"{name}: expected {channels} * P * P rows (a square P x P pooling output of "
                         f"{channels} channels), got {rows}")
    return side


def to_xpcnn_weights(kernels, weight, bias) -> list[np.ndarray]:
    """Notebook layout -> xpcnn layout, float64 NumPy copies.

    kernels (C, k, k) -> conv (C, 1, k, k); weight rows ``h*P*C + w*C + c`` (the (H, W, C)
    flatten) -> rows ``c*P*P + h*P + w`` (the (C, H, W) flatten), shape (C*P*P, classes);
    bias (classes,) unchanged. Returns ``[conv, W, b]`` like ``Sequential.get_weights()`` of
    ``zoo.notebook_cnn()``.
    """
    kernels, weight, bias = _host(kernels, "kernels"), _host(weight, "weight"), _host(bias, "bias")
    if kernels.ndim != 3:
        raise ShapeError(f"kernels: expected (C, k, k), got shape {kernels.shape}")
    if weight.ndim != 2:
        raise ShapeError(f"weight: expected (rows, classes), got shape {weight.shape}")
    c = kernels.shape[0]
    p = _pooled_side(weight.shape[0], c, "weight")
    w = weight.reshape(p, p, c, -1).transpose(2, 0, 1, 3).reshape(c * p * p, -1)
    return [kernels[:, np.newaxis], np.ascontiguousarray(w), bias]


def from_xpcnn_weights(weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xpcnn layout ``[conv (C, 1, k, k), W (C*P*P, classes), b (classes,)]`` (e.g.
    ``model.get_weights()``, arrays of any backend) -> notebook ``(kernels, weight, bias)``,
    float64 NumPy copies. The exact inverse of :func:`to_xpcnn_weights`."""
    if not isinstance(weights, (list, tuple)):
        raise DTypeError(f"weights: expected a list [conv, W, b] such as model.get_weights(), "
                         f"got {type(weights).__name__}")
    if len(weights) != 3:
        raise ShapeError(f"weights: expected [conv, W, b] (3 arrays), got {len(weights)}")
    conv, W, b = (_host(a, name) for a, name in zip(weights, ("weights[0]", "weights[1]", "weights[2]")))
    if conv.ndim != 4 or conv.shape[1] != 1:
        raise ShapeError(f"weights[0]: expected a conv weight (C, 1, kh, kw), got shape {conv.shape}")
    if W.ndim != 2:
        raise ShapeError(f"weights[1]: expected a dense weight (rows, classes), got shape {W.shape}")
    c = conv.shape[0]
    p = _pooled_side(W.shape[0], c, "weights[1]")
    weight = W.reshape(c, p, p, -1).transpose(1, 2, 0, 3).reshape(p * p * c, -1)
    return conv[:, 0], np.ascontiguousarray(weight), b
