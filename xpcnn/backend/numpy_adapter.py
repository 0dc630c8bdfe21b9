"""NumPy: the default backend, on the host."""

from typing import Any

import array_api_compat
import numpy as np

from ..errors import ArgumentError
from .base import Backend


class NumpyBackend(Backend):
    """NumPy on the CPU, with NumPy itself as its namespace."""

    name = "numpy"
    is_host = True

    @classmethod
    def load(cls, device: str | None) -> Backend:
        if device not in (None, "cpu"):
            raise ArgumentError(f"backend 'numpy': the only device is 'cpu', got {device!r}")
        return cls(np, "cpu")

    owns = staticmethod(array_api_compat.is_numpy_array)

    @classmethod
    def owns_device(cls, device: Any) -> bool:
        return isinstance(device, str) and device == "cpu"

    @classmethod
    def spec(cls, device: Any) -> str:
        return "numpy"

    def from_host(self, host: np.ndarray) -> Any:
        return host
