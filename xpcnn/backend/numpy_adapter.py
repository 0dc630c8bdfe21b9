"""NumPy: the default backend, on the host."""

from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ..errors import ArgumentError
from .base import Backend


def _reshape(x: Any, /, shape: tuple[int, ...], *, copy: bool | None = None) -> Any:
    return x.reshape(shape) if copy is None and type(x) is np.ndarray else np.reshape(x, shape, copy=copy)


def _permute_dims(x: Any, /, axes: tuple[int, ...]) -> Any:
    return x.transpose(axes) if type(x) is np.ndarray else np.permute_dims(x, axes)


def _matrix_transpose(x: Any, /) -> Any:
    return x.mT if type(x) is np.ndarray else np.matrix_transpose(x)


def _sum(x: Any, /, *, axis=None, dtype=None, keepdims: bool = False) -> Any:
    if type(x) is np.ndarray:  # what np.sum calls after its checks
        return np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)
    return np.sum(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _max(x: Any, /, *, axis=None, keepdims: bool = False) -> Any:
    if type(x) is np.ndarray:
        return np.maximum.reduce(x, axis=axis, keepdims=keepdims)
    return np.max(x, axis=axis, keepdims=keepdims)


class _NumPy(ModuleType):
    """NumPy's own functions, looked up in NumPy for names loaded lazily."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def numpy_namespace() -> ModuleType:
    """NumPy (which implements the Array API standard) with ``reshape``, ``permute_dims`` and
    ``matrix_transpose`` as the array's own methods and ``sum`` and ``max`` as the ufunc
    reductions themselves: NumPy's module functions pass through a Python wrapper and a
    dispatch on every call, a share of a step on a batch of one image that
    docs/performance.md measures."""
    xp = _NumPy("xpcnn.backend.numpy", np.__doc__)
    xp.__dict__.update((name, value) for name, value in vars(np).items() if not name.startswith("__"))
    xp.reshape, xp.permute_dims, xp.matrix_transpose = _reshape, _permute_dims, _matrix_transpose
    xp.sum, xp.max = _sum, _max
    return xp


NUMPY = numpy_namespace()


class NumpyBackend(Backend):
    """NumPy on the CPU, with NumPy itself as its namespace (:func:`numpy_namespace`)."""

    name = "numpy"
    is_host = True

    @classmethod
    def load(cls, device: str | None) -> Backend:
        if device not in (None, "cpu"):
            raise ArgumentError(f"backend 'numpy': the only device is 'cpu', got {device!r}")
        return cls(NUMPY, "cpu")

    owns = staticmethod(array_api_compat.is_numpy_array)
    namespace = staticmethod(lambda x: NUMPY)

    @classmethod
    def owns_device(cls, device: Any) -> bool:
        return isinstance(device, str) and device == "cpu"

    @classmethod
    def spec(cls, device: Any) -> str:
        return "numpy"

    def from_host(self, host: np.ndarray) -> Any:
        return host
