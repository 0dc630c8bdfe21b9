"""PyTorch, on any device torch accepts (``"torch"`` alone means its CPU)."""

from typing import Any

import array_api_compat
import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend, InFlight, import_library

# Per CUDA device: the prefetch side stream and the pinned buffer in flight.
_copy_streams: dict[str, tuple[Any, Any]] = {}


class TorchBackend(Backend):
    """PyTorch on ``device`` (a ``torch.device``)."""

    name = "torch"

    @classmethod
    def load(cls, device: str | None) -> Backend:
        torch = import_library("torch", "pip install 'xpcnn[torch]' (torch==2.13.0 for the CPU build)")
        try:
            dev = torch.device(device or "cpu")
            torch.zeros(1, device=dev)
        except Exception as e:
            raise BackendUnavailableError(f"torch cannot use device {device!r} ({type(e).__name__}: {e}); fix: a CUDA "
                                          "build of torch on a machine with its device, or 'torch:cpu'") from e
        import array_api_compat.torch as xp

        return cls(xp, dev)

    owns = staticmethod(array_api_compat.is_torch_array)

    @staticmethod
    def needs_cuda(device: str) -> bool:
        return device.startswith("cuda")

    @staticmethod
    def on_accelerator(x: Any) -> bool:
        return x.device.type not in ("cpu", "meta")  # CUDA, ROCm and MPS alike

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        host = x.detach().cpu().resolve_conj().numpy()
        return host.copy() if x.device.type == "cpu" else host  # .numpy() of a CPU tensor shares its memory

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def from_host(self, host: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(host).to(self.device)

    def prefetch(self, host: Any) -> Any:
        if not self.on_cuda:
            return self.asarray(host)
        import torch

        stream, _ = _copy_streams.setdefault(str(self), (torch.cuda.Stream(self.device), None))
        stream.synchronize()  # the previous copy is done: its pinned buffer may be reused
        pinned = torch.from_numpy(np.ascontiguousarray(host)).pin_memory()
        with torch.cuda.stream(stream):
            array = pinned.to(self.device, non_blocking=True)
        _copy_streams[str(self)] = (stream, pinned)
        return InFlight(array, stream)

    def ready(self, x: Any) -> Any:
        if not isinstance(x, InFlight):
            return x
        import torch

        current = torch.cuda.current_stream(self.device)
        current.wait_stream(x.stream)
        x.array.record_stream(current)  # the side stream's memory is in use until this stream's kernels finish
        return x.array

    def synchronize(self) -> None:
        if self.on_cuda:
            import torch

            torch.cuda.synchronize(self.device)
