"""JAX: its own namespace (``jax.numpy``) implements the Array API standard; arrays are
immutable and a ``jax.jit`` function compiles the whole computation."""

import contextlib
import sys
from typing import Any

import array_api_compat
import numpy as np

from ..errors import ArgumentError, BackendUnavailableError, DTypeError
from .base import Backend, dtype_name, import_library

X64_FIX = ("enable JAX's 64-bit mode: jax.config.update(\"jax_enable_x64\", True) "
           "at the start of the program, or the environment variable JAX_ENABLE_X64=1; xpcnn does not flip "
           "this process-wide switch for you (or use dtype='float32')")


def is_traced(x: Any) -> bool:
    """True for an abstract value of a transformation being traced (a ``jax.jit`` tracer):
    arrays made from it must not be kept past the call."""
    if "jax" not in sys.modules:
        return False
    import jax

    return isinstance(x, jax.core.Tracer)


class JaxBackend(Backend):
    """JAX on ``device`` (a ``jax.Device``); ``"jax"`` alone means its first CPU device."""

    name = "jax"
    compiles = True

    @classmethod
    def load(cls, device: str | None) -> Backend:
        jax = import_library("jax", "pip install 'xpcnn[jax]' (from a checkout: pip install -e '.[jax]')")
        platform, _, index = (device or "cpu").partition(":")
        platform = {"cuda": "gpu"}.get(platform.lower(), platform.lower())
        if index and not index.isdigit():
            raise ArgumentError(f"backend 'jax': expected a device such as 'cpu', 'gpu' or 'gpu:1', got {device!r}")
        try:
            devices = jax.devices(platform)
        except RuntimeError as e:  # "Unknown backend: 'gpu' requested, but no platforms ... are present"
            fix = ("install JAX with CUDA support (pip install 'jax[cuda12]') on a machine with an NVIDIA GPU"
                   if platform == "gpu" else "use 'jax:cpu'")
            raise BackendUnavailableError(f"jax cannot use device {device!r} ({e}); fix: {fix}") from e
        number = int(index or 0)
        if number >= len(devices):
            raise BackendUnavailableError(f"jax: device {platform}:{number} requested but only {len(devices)} "
                                          f"{platform} device(s) exist; fix: an index below {len(devices)}")
        import jax.numpy as xp

        return cls(xp, devices[number])

    owns = staticmethod(array_api_compat.is_jax_array)  # concrete arrays and the tracers of jax.jit

    @classmethod
    def spec(cls, device: Any) -> str:
        return f"jax:{device.platform}:{device.id}"

    @staticmethod
    def on_accelerator(x: Any) -> bool:
        device = array_api_compat.device(x)
        if device is None:  # a jax.jit tracer: XLA places it on the default backend
            import jax

            return jax.default_backend() != "cpu"
        return getattr(device, "platform", "cpu") != "cpu"

    @property
    def dtype_note(self) -> str:  # JAX's 64-bit mode is a process-wide switch the user may flip at any time
        import jax

        return "64-bit mode " + ("on" if jax.config.jax_enable_x64 else "off (float64 needs JAX_ENABLE_X64=1)")

    def from_host(self, host: np.ndarray) -> Any:
        import jax

        self.check_dtype(host.dtype)
        if {"i": 8, "u": 8, "c": 16}.get(host.dtype.kind) == host.dtype.itemsize and not jax.config.jax_enable_x64:
            # JAX would store 32 bits silently: integers that fit go as such, others are refused
            narrow = host.astype(host.dtype.kind + "4") if host.dtype.kind != "c" else None
            if narrow is None or not np.array_equal(narrow, host):
                raise DTypeError(f"dtype: {host.dtype} values beyond 32 bits on the jax backend need JAX's 64-bit "
                                 f"mode, which is off; {X64_FIX}")
            host = narrow
        return jax.device_put(host, self.device)

    def move(self, x: Any) -> Any:
        import jax

        return jax.device_put(x, self.device)

    def check_dtype(self, dtype: Any) -> None:
        """Refuse a 64-bit float while JAX's 64-bit mode is off: JAX would silently store float32
        instead, and a float64 model would train in float32."""
        import jax

        if dtype_name(dtype) == "float64" and not jax.config.jax_enable_x64:
            raise DTypeError(f"dtype: float64 on the jax backend needs JAX's 64-bit mode, which is off; {X64_FIX}")

    def activate(self) -> contextlib.AbstractContextManager:
        """Makes the backend's device the default for arrays created without one."""
        import jax

        return jax.default_device(self.device)
