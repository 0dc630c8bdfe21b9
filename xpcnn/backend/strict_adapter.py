"""array-api-strict: the standard's reference namespace, with several virtual devices."""

from typing import Any

import numpy as np

from ..errors import ArgumentError
from .base import Backend, import_library


def device_label(device: Any) -> str:
    """``Device('device1')`` -> ``"device1"``; other devices as ``str``."""
    text = str(device)
    return text.split("'")[1] if "'" in text else text


class StrictBackend(Backend):
    """array-api-strict on one of its devices (``"CPU_DEVICE"``, ``"device1"``, ...)."""

    name = "array_api_strict"

    @classmethod
    def load(cls, device: str | None) -> Backend:
        xp = import_library("array_api_strict", "pip install array-api-strict")
        info = xp.__array_namespace_info__()
        if device is None:
            return cls(xp, info.default_device())
        names = {device_label(d): d for d in info.devices()}
        if device not in names:
            raise ArgumentError(
                f"backend 'array_api_strict': unknown device {device!r}; valid devices are {', '.join(names)}"
            )
        return cls(xp, names[device])

    @staticmethod
    def owns(x: Any) -> bool:
        return type(x).__module__.startswith("array_api_strict")

    @classmethod
    def spec(cls, device: Any) -> str:
        return f"array_api_strict:{device_label(device)}"

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        import array_api_strict as xps

        return np.array(xps.asarray(x).to_device(xps.Device("CPU_DEVICE")), copy=True)  # not a view of x
