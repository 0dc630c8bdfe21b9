"""Argument checks shared by the functional ops, layers and the model: each error names the
argument, what was expected and what came, before the array library can fail somewhere deep
inside (an IndexError from a slice, a broadcast error from NumPy, a matmul error from torch)."""

from __future__ import annotations

import operator
from typing import Any

from .backend import device_of, library_of, namespace_of
from .errors import ArgumentError, ArgumentTypeError, BackendMismatchError, DTypeError, ShapeError

_ARRAY_KINDS = "an array (numpy, cupy, torch, jax or array_api_strict)"


def positive_int(value: Any, name: str, *, minimum: int = 1, error: type = ShapeError) -> int:
    """``value`` as an int >= ``minimum``. Not an int at all (a bool, float, string, None) is an
    ArgumentTypeError; too small, ``error``: ShapeError for sizes (the default), ArgumentError
    for counts and options."""
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name}: expected an int >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(
            f"{name}: expected an int >= {minimum}, got {value!r} ({type(value).__name__})"
        ) from None
    if number < minimum:
        raise error(f"{name}: expected an int >= {minimum}, got {value!r}")
    return number


def flag(value: Any, name: str) -> bool:
    """``value`` if it is True or False, else an ArgumentError naming ``name``."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{name}: expected True or False, got {value!r}")
    return value


def pair(value: Any, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; checks integers >= ``minimum``."""
    # Layers pass already-normalised pairs on every call: accept them in one cheap test.
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        if value[0] >= minimum and value[1] >= minimum:
            return value
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ShapeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    try:
        ints = tuple(operator.index(v) for v in items)
    except TypeError:
        raise ArgumentTypeError(f"{name}: expected an int or a pair of ints, got {value!r}") from None
    if any(isinstance(v, bool) for v in items):
        raise ArgumentTypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if min(ints) < minimum:
        raise ShapeError(f"{name}: expected integers >= {minimum}, got {value!r}")
    return ints  # type: ignore[return-value]


def sample_shape(value: Any, name: str, layout: str, ndim: int | None = None) -> tuple[int, ...]:
    """One sample's shape (no batch axis) as a tuple of positive ints, e.g. (C, H, W)."""
    try:
        items = tuple(value)
    except TypeError:
        raise ShapeError(f"{name}: expected a tuple of positive ints {layout}, got {value!r}") from None
    if (ndim is not None and len(items) != ndim) or not items:
        raise ShapeError(f"{name}: expected a shape {layout}, got {value!r}")
    if any(isinstance(s, bool) or not hasattr(s, "__index__") or operator.index(s) < 1 for s in items):
        raise ShapeError(f"{name}: expected positive ints {layout}, got {value!r}")
    return tuple(operator.index(s) for s in items)


_NOT_ARRAYS = (bool, int, float, complex, str, bytes, list, tuple, dict)


def check_array(x: Any, name: str) -> None:
    """Refuse lists, None and Python scalars: xpcnn converts nothing behind your back."""
    if x is None or isinstance(x, _NOT_ARRAYS):
        raise DTypeError(f"{name}: expected {_ARRAY_KINDS}, got {type(x).__name__}")
    try:
        library_of(x)
    except DTypeError:
        raise DTypeError(f"{name}: expected {_ARRAY_KINDS}, got {type(x).__name__}") from None


def _describe(x: Any) -> str:
    return f"a {library_of(x)} array on {device_of(x)}"


def namespace(optional: tuple[str, ...] = (), **arrays: Any) -> Any:
    """The Array API namespace shared by the named ``arrays``, checking that each is an array
    and that all live in one library on one device. Names in ``optional`` may be None.

    The happy path is one :func:`namespace_of` call (every op calls this); the names are only
    worked out again to word an error."""
    for name, a in arrays.items():
        if (a is None and name not in optional) or isinstance(a, _NOT_ARRAYS):
            check_array(a, name)
    try:
        return namespace_of(*arrays.values())
    except DTypeError:
        for name, a in arrays.items():
            if a is not None:
                check_array(a, name)
        raise
    except BackendMismatchError:
        present = [(name, a) for name, a in arrays.items() if a is not None]
        first_name, first = present[0]
        for name, a in present[1:]:
            if library_of(a) != library_of(first) or device_of(a) != device_of(first):
                raise BackendMismatchError(
                    f"{name} is {_describe(a)} but {first_name} is {_describe(first)}: arrays from two backends "
                    "or devices in one call; move one with xpcnn.to_device(x, target) "
                    "(e.g. model.to(...) or to_device(x, 'numpy'))"
                ) from None
        raise


def check_ndim(x: Any, ndim: int, name: str, layout: str) -> None:
    if not hasattr(x, "shape") or len(x.shape) != ndim:
        got = f"shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__
        raise ShapeError(f"{name}: expected a {ndim}-d array {layout}, got {got}")


def check_nonempty(x: Any, name: str, layout: str, *, axes: tuple[int, ...]) -> None:
    """Refuse size-0 axes among ``axes`` (a kernel, a channel or a class axis of length 0)."""
    if any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"{name}: expected a non-zero size on every axis of {layout}, got shape {tuple(x.shape)}")


def check_shape(x: Any, expected: tuple[int, ...], name: str, why: str = "") -> None:
    if tuple(x.shape) != tuple(expected):
        raise ShapeError(f"{name}: expected shape {tuple(expected)}{why}, got {tuple(x.shape)}")


def is_integral(xp: Any, dtype: Any) -> bool:
    """``xp.isdtype(dtype, "integral")``."""
    return bool(xp.isdtype(dtype, "integral"))


def check_float(xp: Any, name: str, x: Any) -> None:
    if x.dtype not in (xp.float32, xp.float64):
        raise DTypeError(f"{name}: expected a real floating dtype (float32 or float64), got {x.dtype}")


def check_same_dtype(name_a: str, a: Any, name_b: str, b: Any) -> None:
    if a.dtype != b.dtype:
        raise DTypeError(f"{name_b}: dtype {b.dtype} differs from {name_a} dtype {a.dtype}; "
                         "xpcnn never promotes silently (cast one of them, e.g. build the model with that dtype)")


def check_grad(grad: Any, name: str, like: Any, expected: tuple[int, ...], like_name: str) -> None:
    """A backward's incoming gradient: an array of ``expected`` shape and ``like``'s dtype."""
    if grad is None or isinstance(grad, _NOT_ARRAYS):
        check_array(grad, name)
    check_shape(grad, expected, name, " (the forward output's shape)")
    check_same_dtype(like_name, like, name, grad)


def output_size(size: int, kernel: int, stride: int, padding, dilation: int, name: str) -> int:
    """PyTorch's floor((size + p_before + p_after - d(k-1) - 1) / s) + 1, refusing windows larger
    than the input. ``padding`` is an int (both sides) or a (before, after) pair."""
    before, after = (padding, padding) if isinstance(padding, int) else padding
    span = dilation * (kernel - 1) + 1
    padded = size + before + after
    if span > padded:
        pads = f"2*padding {before}" if before == after else f"padding {before} + {after}"
        raise ShapeError(f"{name}: kernel_size {kernel} (dilation {dilation}, extent {span}) is larger than the "
                         f"padded input {padded} (size {size} + {pads})")
    return (padded - span) // stride + 1


def groups_of(value: Any, **channels: int) -> int:
    """``groups`` as an int >= 1 dividing every named channel count (as torch.nn.Conv2d)."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or operator.index(value) < 1:
        raise ArgumentError(f"groups: expected an int >= 1, got {value!r}")
    groups = operator.index(value)
    if any(count % groups for count in channels.values()):
        counts = " and ".join(f"{name} {count}" for name, count in channels.items())
        raise ArgumentError(f"groups: expected a divisor of {counts}, got {groups}")
    return groups


Padding = tuple[tuple[int, int], tuple[int, int]]


def conv_padding(value: Any, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                 *, strings: bool = True) -> Padding:
    """``((top, bottom), (left, right))`` from an int, an (h, w) pair, a ((top, bottom), (left, right))
    pair of pairs, or (when ``strings``) ``"valid"`` (no padding) or ``"same"`` (stride 1 only;
    PyTorch's rule: total d*(k-1), top/left get half rounded down, the odd pixel goes bottom/right)."""
    if isinstance(value, str):
        if strings and value == "valid":
            return ((0, 0), (0, 0))
        if strings and value == "same":
            if stride != (1, 1):
                raise ArgumentError(f"padding: 'same' needs stride 1 (as PyTorch), got stride {stride}")
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)  # type: ignore[return-value]
        allowed = "an int, a pair, ((top, bottom), (left, right))" + (", 'same' or 'valid'" if strings else "")
        raise ArgumentError(f"padding: expected {allowed}, got {value!r}")
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (tuple, list)) for v in value):
        sides = tuple(pair(v, "padding", minimum=0) for v in value)
        return sides  # type: ignore[return-value]
    ph, pw = pair(value, "padding", minimum=0)
    return ((ph, ph), (pw, pw))
