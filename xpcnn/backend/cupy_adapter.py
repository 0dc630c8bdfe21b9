"""CuPy on a CUDA GPU. CuPy creates arrays and launches kernels on the *current* CUDA device
whatever ``device=`` says, so everything here runs under ``cupy.cuda.Device(i)``."""

import contextlib
from typing import Any

import array_api_compat
import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend, InFlight, import_library

FIX = "install CuPy for your CUDA version: pip install 'xpcnn[cuda12]' or 'xpcnn[cuda13]'"

# Per CUDA device: the prefetch side stream and the pinned buffer in flight.
_copy_streams: dict[str, tuple[Any, Any]] = {}


class CupyBackend(Backend):
    """CuPy on CUDA device ``device.id``."""

    name = "cupy"
    on_cuda = True
    supports_nccl = True

    @classmethod
    def load(cls, device: str | None) -> Backend:
        cupy = import_library("cupy", FIX)
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDARuntimeError: no driver, driver too old, ...
            raise BackendUnavailableError(
                f"CuPy is installed but cannot reach a CUDA driver ({type(e).__name__}: {e}); "
                "fix: install an NVIDIA driver matching your CuPy build, or use XPCNN_BACKEND=numpy"
            ) from e
        if count == 0:
            raise BackendUnavailableError(
                "CuPy is installed but no CUDA device is visible; fix: run on a GPU machine or use XPCNN_BACKEND=numpy"
            )
        index = int(device) if device else 0
        if not 0 <= index < count:
            raise BackendUnavailableError(f"cupy: device {index} requested but only {count} CUDA device(s) exist; "
                                          f"fix: an index below {count}")
        try:
            with cupy.cuda.Device(index):
                # A real kernel launch: catches NVRTC / driver / architecture mismatches at selection time.
                ok = float((cupy.arange(4, dtype=cupy.float32) * 2).sum()) == 12.0
        except Exception as e:
            raise BackendUnavailableError(
                f"CuPy cannot run a kernel on CUDA device {index} ({type(e).__name__}: {e}); "
                f"fix: check the driver and that the CuPy wheel matches the CUDA version ({FIX})"
            ) from e
        if not ok:
            raise BackendUnavailableError(f"CuPy ran a test kernel on device {index} and got a wrong result")
        import array_api_compat.cupy as xp

        return cls(xp, cupy.cuda.Device(index))

    owns = staticmethod(array_api_compat.is_cupy_array)

    @classmethod
    def spec(cls, device: Any) -> str:
        return f"cupy:{device.id}"

    needs_cuda = staticmethod(lambda device: True)
    on_accelerator = staticmethod(lambda x: True)

    to_numpy = staticmethod(lambda x: x.get())

    def from_host(self, host: np.ndarray) -> Any:
        import cupy

        with cupy.cuda.Device(self.device.id):
            return cupy.asarray(host)

    def move(self, x: Any) -> Any:
        import cupy

        # cupy.asarray returns an array of another device unchanged; an explicit copy
        # under the target device is what moves it.
        with cupy.cuda.Device(self.device.id):
            return cupy.array(x, copy=True)

    def prefetch(self, host: Any) -> Any:
        import cupy
        import cupyx

        with cupy.cuda.Device(self.device.id):
            stream, _ = _copy_streams.setdefault(str(self), (cupy.cuda.Stream(non_blocking=True), None))
            stream.synchronize()  # the previous copy is done: its pinned buffer may be reused
            host = np.ascontiguousarray(host)
            pinned = cupyx.empty_pinned(host.shape, host.dtype)
            pinned[...] = host
            array = cupy.empty(host.shape, host.dtype)
            array.set(pinned, stream=stream)
        _copy_streams[str(self)] = (stream, pinned)
        return InFlight(array, stream)

    def ready(self, x: Any) -> Any:
        if not isinstance(x, InFlight):
            return x
        import cupy

        cupy.cuda.get_current_stream().wait_event(x.stream.record())
        return x.array

    def synchronize(self) -> None:
        import cupy

        cupy.cuda.get_current_stream().synchronize()

    def activate(self) -> contextlib.AbstractContextManager:
        import cupy

        return cupy.cuda.Device(self.device.id)
