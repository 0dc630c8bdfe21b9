"""ndonnx: an Array API library whose arrays are ONNX graph nodes. Inference only, and lazy:
an array made from data holds its values, one computed from a symbolic argument holds none."""

from typing import Any

import numpy as np

from ..errors import ArgumentError, DataError
from .base import Backend, import_library


class NdonnxBackend(Backend):
    """ndonnx on its one device: the model's arrays become graph constants, ``predict`` on an
    ``ndonnx.argument`` builds the graph (``ndonnx.build``) that onnxruntime runs."""

    name = "ndonnx"
    lazy = True

    @classmethod
    def load(cls, device: str | None) -> Backend:
        if device not in (None, "cpu"):
            raise ArgumentError(f"backend 'ndonnx': the only device is 'cpu', got {device!r}")
        xp = import_library("ndonnx", "pip install 'xpcnn[onnx]' (or pip install ndonnx)")
        return cls(xp, xp.__array_namespace_info__().default_device())

    @staticmethod
    def owns(x: Any) -> bool:
        return type(x).__module__.startswith("ndonnx")

    @classmethod
    def spec(cls, device: Any) -> str:
        return "ndonnx"

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        try:
            return np.asarray(x.unwrap_numpy())
        except ValueError:
            raise DataError(f"an ndonnx array of shape {tuple(x.shape)} has no values (it depends on a symbolic "
                            "argument): build it into an ONNX model with ndonnx.build and run it") from None

    def from_host(self, host: np.ndarray) -> Any:
        return self.xp.asarray(host)

    def move(self, x: Any) -> Any:
        return x
