"""Argument checks shared by the functional ops: each error names the argument, what was
expected and what came, before the array library can fail somewhere deep inside."""

from __future__ import annotations

import operator
from typing import Any

from ..errors import DTypeError, ShapeError


def pair(value: Any, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; checks integers >= ``minimum``."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ShapeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    try:
        ints = tuple(operator.index(v) for v in items)
    except TypeError:
        raise ShapeError(f"{name}: expected an int or a pair of ints, got {value!r}") from None
    if any(isinstance(v, bool) for v in items) or min(ints) < minimum:
        raise ShapeError(f"{name}: expected integers >= {minimum}, got {value!r}")
    return ints  # type: ignore[return-value]


def check_ndim(x: Any, ndim: int, name: str, layout: str) -> None:
    if not hasattr(x, "shape") or len(x.shape) != ndim:
        got = f"shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__
        raise ShapeError(f"{name}: expected a {ndim}-d array {layout}, got {got}")


def check_float(xp: Any, name: str, x: Any) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        raise DTypeError(f"{name}: expected a real floating dtype (float32 or float64), got {x.dtype}")


def check_same_dtype(name_a: str, a: Any, name_b: str, b: Any) -> None:
    if a.dtype != b.dtype:
        raise DTypeError(
            f"{name_b}: dtype {b.dtype} differs from {name_a} dtype {a.dtype}; "
            "xpcnn never promotes silently (cast one of them, e.g. build the model with that dtype)"
        )


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, name: str) -> int:
    """PyTorch's floor((size + 2p - d(k-1) - 1) / s) + 1, refusing windows larger than the input."""
    span = dilation * (kernel - 1) + 1
    padded = size + 2 * padding
    if span > padded:
        raise ShapeError(
            f"{name}: kernel of extent {span} (kernel {kernel}, dilation {dilation}) is larger than the "
            f"padded input {padded} (size {size} + 2*padding {padding})"
        )
    return (padded - span) // stride + 1
