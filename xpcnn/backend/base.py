"""The adapter protocol: :class:`Backend`, one subclass per array library.

A loaded backend is an instance: its Array API namespace ``xp`` and the device new arrays go
to. The class answers every question whose answer depends on the library (how to load it,
move data to and from the host, synchronise, which device context to compute in), so the
rest of xpcnn asks the backend instead of comparing names. The defaults here are those of
a host library that needs nothing special.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

import array_api_compat
import numpy as np

from ..errors import BackendUnavailableError


@dataclasses.dataclass(frozen=True)
class Backend:
    """A loaded backend: its name, its Array API namespace and the device new arrays go to."""

    name: ClassVar[str]
    #: Whether a training step or a forward pass can run as one compiled function (``xpcnn.jit``).
    compiles: ClassVar[bool] = False
    #: Whether its arrays are NumPy arrays in host memory: host data reach it with no copy.
    is_host: ClassVar[bool] = False
    #: Whether the device is a CUDA GPU (CuPy, ``torch:cuda``): side streams, pinned memory and NCCL apply.
    on_cuda: ClassVar[bool] = False
    #: Whether the MPI layer can sum its arrays in place with ``cupy.cuda.nccl`` (a raw device pointer).
    supports_nccl: ClassVar[bool] = False
    #: What ``xpcnn info`` says about the dtypes it can hold; empty when nothing limits them.
    dtype_note: ClassVar[str] = ""
    #: Whether its arrays may hold no values to read (ndonnx: graph nodes): nothing reads them on the host.
    lazy: ClassVar[bool] = False
    #: ``owns(x)``: whether ``x`` is an array of this library (a ``jax.jit`` tracer counts as a JAX array).
    owns: ClassVar[Callable[[Any], bool]]
    #: ``namespace(x)``: the Array API namespace xpcnn computes with for array ``x`` of this library.
    namespace: ClassVar[Callable[[Any], ModuleType]] = staticmethod(array_api_compat.array_namespace)
    #: ``on_accelerator(x)``: whether array ``x`` of this library lives on a GPU.
    on_accelerator: ClassVar[Callable[[Any], bool]] = staticmethod(lambda x: False)
    #: ``to_numpy(x)``: a NumPy copy of array ``x`` of this library, on the host.
    to_numpy: ClassVar[Callable[[Any], np.ndarray]] = staticmethod(np.asarray)
    #: ``needs_cuda(device)``: whether a spec's device text (after the colon) names a CUDA device.
    needs_cuda: ClassVar[Callable[[str], bool]] = staticmethod(lambda device: False)

    xp: ModuleType
    device: Any

    @classmethod
    def load(cls, device: str | None) -> Backend:
        """The backend on ``device`` (the text after the colon of ``"name:device"``, None for the
        default); BackendUnavailableError with the reason and the fix when it cannot run here."""
        raise NotImplementedError

    @classmethod
    def owns_device(cls, device: Any) -> bool:
        """Whether ``device`` is a device object of this library (its type comes from the library's modules)."""
        return type(device).__module__.startswith(cls.name)

    @classmethod
    def spec(cls, device: Any) -> str:
        """The spec that loads this library on ``device`` (a device object): ``"torch:cuda:0"``."""
        return f"{cls.name}:{device}"

    def __str__(self) -> str:
        """``"numpy"``, ``"torch:cuda:0"``, ``"jax:cpu:0"``, ``"array_api_strict:device1"``: the spec that loads it."""
        return self.spec(self.device)

    @property
    def prefetches(self) -> bool:
        """Whether :meth:`prefetch` overlaps a copy with compute here (a CUDA device); elsewhere
        a batch already on the host needs no copy at all."""
        return self.on_cuda

    def asarray(self, host: Any, dtype: str | None = None) -> Any:
        """Copy a host (NumPy-convertible) array onto this backend's device."""
        return self.from_host(np.array(host, dtype=dtype, copy=True))

    def from_host(self, host: np.ndarray) -> Any:
        """``host`` (a NumPy array this backend may keep) as an array on this backend's device."""
        return self.xp.asarray(host, device=self.device)

    def move(self, x: Any) -> Any:
        """Array ``x`` of this library, on another of its devices, copied to this backend's device."""
        return array_api_compat.to_device(x, self.device)

    def prefetch(self, host: Any) -> Any:
        """Start copying a host array to this backend's device without waiting for it, so the copy
        of the next batch overlaps the current step's compute; hand the result to :meth:`ready`
        before computing with it. On a CUDA device the copy runs from page-locked (pinned) host
        memory on a side stream (torch ``non_blocking``, CuPy ``ndarray.set`` on a stream); on
        every other device this is :meth:`asarray`."""
        return self.asarray(host)

    def ready(self, x: Any) -> Any:
        """The array of a :meth:`prefetch`, once the compute stream waits for its copy (no host wait)."""
        return x

    def synchronize(self) -> None:
        """Wait until the kernels queued on this backend's device are done (before a library that
        does not know its streams, such as MPI, reads device memory)."""

    def check_dtype(self, dtype: Any) -> None:
        """Refuse a dtype this backend cannot hold as asked before anything is created: a
        DTypeError that says how to enable it."""

    def activate(self) -> contextlib.AbstractContextManager:
        """The context to run this backend's compute in (``with backend.activate(): ...``): the
        device made current where the library creates arrays and launches kernels on its current
        device whatever ``device=`` says. A no-op context here."""
        return contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class InFlight:
    """A host-to-device copy started by :meth:`Backend.prefetch` on ``stream``."""

    array: Any
    stream: Any


def import_library(module: str, fix: str) -> ModuleType:
    """Import ``module``, or raise BackendUnavailableError that says it is not installed and ``fix``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailableError(f"{module} is not installed ({e}); fix: {fix}") from e


def dtype_name(dtype: Any) -> str:
    """``"float32"`` etc. for a dtype of any backend."""
    text = str(dtype)
    return text.rsplit(".", 1)[-1].strip("'>")
