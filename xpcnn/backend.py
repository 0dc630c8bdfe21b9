"""The backend shim: the one module that names NumPy, CuPy and PyTorch.

Numeric code (``xpcnn.functional``, layers, optimizers) never imports an array
library. It asks its inputs for their namespace with :func:`namespace_of` and
creates new arrays with the dtype and device of an input. The *selected*
backend only decides where new parameters and data are created.

Backend names: ``numpy`` (default), ``cupy``, ``torch``, ``jax``, ``array_api_strict``
and ``auto`` (CuPy if it can run a kernel, else NumPy with one warning). A name may
carry a device after a colon: ``"torch:cuda"``, ``"cupy:1"``, ``"jax:gpu"``,
``"array_api_strict:device1"``; ``"torch"`` and ``"jax"`` alone mean their CPU device.
``XPCNN_BACKEND`` is read on first use, so ``import xpcnn`` works on any machine
whatever it says. Loaded backends are cached: loading probes the device once per process.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .errors import ArgumentError, BackendMismatchError, BackendUnavailableError, DTypeError

BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")
VALID_NAMES = BACKENDS + ("auto",)
FLOAT_DTYPES = ("float32", "float64")

_CUPY_FIX = "install CuPy for your CUDA version: pip install 'xpcnn[cuda12]' or 'xpcnn[cuda13]'"
_JAX_FIX = "pip install 'xpcnn[jax]' (from a checkout: pip install -e '.[jax]')"
_X64_FIX = (
    "enable JAX's 64-bit mode: jax.config.update(\"jax_enable_x64\", True) "
    "at the start of the program, or the environment variable JAX_ENABLE_X64=1; xpcnn does not flip "
    "this process-wide switch for you (or use dtype='float32')"
)


@dataclasses.dataclass(frozen=True)
class Backend:
    """A loaded backend: its name, its Array API namespace and the device new arrays go to."""

    name: str
    xp: ModuleType
    device: Any

    def asarray(self, host: Any, dtype: str | None = None) -> Any:
        """Copy a host (NumPy-convertible) array onto this backend's device."""
        host = np.array(host, dtype=dtype, copy=True)
        if self.name == "numpy":
            return host
        if self.name == "cupy":
            import cupy

            with cupy.cuda.Device(self.device.id):
                return cupy.asarray(host)
        if self.name == "torch":
            import torch

            return torch.from_numpy(host).to(self.device)
        if self.name == "jax":
            import jax

            check_jax_dtype(host.dtype)
            return jax.device_put(host, self.device)
        return self.xp.asarray(host, device=self.device)

    @property
    def prefetches(self) -> bool:
        """Whether :meth:`prefetch` overlaps a copy with compute here (a CUDA device); elsewhere
        a batch already on the host needs no copy at all."""
        return self.name == "cupy" or (self.name == "torch" and getattr(self.device, "type", None) == "cuda")

    def prefetch(self, host: Any) -> Any:
        """Start copying a host array to this backend's device without waiting for it, so the copy
        of the next batch overlaps the current step's compute; hand the result to :meth:`ready`
        before computing with it. On a CUDA device the copy runs from page-locked (pinned) host
        memory on a side stream (torch ``non_blocking``, CuPy ``ndarray.set`` on a stream); on
        every other device this is :meth:`asarray`."""
        if self.name == "torch" and getattr(self.device, "type", None) == "cuda":
            import torch

            stream, _ = _copy_streams.setdefault(str(self), (torch.cuda.Stream(self.device), None))
            stream.synchronize()  # the previous copy is done: its pinned buffer may be reused
            pinned = torch.from_numpy(np.ascontiguousarray(host)).pin_memory()
            with torch.cuda.stream(stream):
                array = pinned.to(self.device, non_blocking=True)
            _copy_streams[str(self)] = (stream, pinned)
            return _InFlight(array, stream)
        if self.name == "cupy":
            import cupy
            import cupyx

            with cupy.cuda.Device(self.device.id):
                stream, _ = _copy_streams.setdefault(str(self), (cupy.cuda.Stream(non_blocking=True), None))
                stream.synchronize()
                host = np.ascontiguousarray(host)
                pinned = cupyx.empty_pinned(host.shape, host.dtype)
                pinned[...] = host
                array = cupy.empty(host.shape, host.dtype)
                array.set(pinned, stream=stream)
            _copy_streams[str(self)] = (stream, pinned)
            return _InFlight(array, stream)
        return self.asarray(host)

    def ready(self, x: Any) -> Any:
        """The array of a :meth:`prefetch`, once the compute stream waits for its copy (no host wait)."""
        if not isinstance(x, _InFlight):
            return x
        if self.name == "torch":
            import torch

            current = torch.cuda.current_stream(self.device)
            current.wait_stream(x.stream)
            x.array.record_stream(current)  # the side stream's memory is in use until this stream's kernels finish
            return x.array
        import cupy

        cupy.cuda.get_current_stream().wait_event(x.stream.record())
        return x.array

    def check_dtype(self, dtype: Any) -> None:
        """Refuse a dtype this backend cannot hold as asked (float64 on JAX with 64-bit mode off)
        before anything is created: a DTypeError that says how to enable it."""
        if self.name == "jax":
            check_jax_dtype(dtype)

    def activate(self) -> contextlib.AbstractContextManager:
        """The context to run this backend's compute in (``with backend.activate(): ...``).

        CuPy creates arrays and launches kernels on the *current* CUDA device whatever
        ``device=`` says, so compute for ``cupy:1`` must run under ``cupy.cuda.Device(1)``;
        on JAX it makes the backend's device the default for arrays created without one.
        A no-op context elsewhere."""
        if self.name == "cupy":
            import cupy

            return cupy.cuda.Device(self.device.id)
        if self.name == "jax":
            import jax

            return jax.default_device(self.device)
        return contextlib.nullcontext()

    def __str__(self) -> str:
        """``"numpy"``, ``"torch:cuda:0"``, ``"jax:cpu:0"``, ``"array_api_strict:device1"``: the spec that loads it."""
        if self.name == "numpy":
            return "numpy"
        if self.name == "cupy":
            return f"cupy:{self.device.id}"
        if self.name == "jax":
            return f"jax:{self.device.platform}:{self.device.id}"
        if self.name == "array_api_strict":
            return f"array_api_strict:{device_label(self.device)}"
        return f"{self.name}:{self.device}"


def check_jax_dtype(dtype: Any) -> None:
    """Refuse a 64-bit float for JAX while its 64-bit mode is off: JAX would silently store
    float32 instead, and a float64 model would train in float32."""
    import jax

    if dtype_name(dtype) == "float64" and not jax.config.jax_enable_x64:
        raise DTypeError(f"dtype: float64 on the jax backend needs JAX's 64-bit mode, which is off; {_X64_FIX}")


def device_label(device: Any) -> str:
    """``Device('device1')`` -> ``"device1"``; other devices as ``str``."""
    text = str(device)
    return text.split("'")[1] if "'" in text else text


# ---------------------------------------------------------------- loading


def _split(spec: str) -> tuple[str, str | None]:
    if not isinstance(spec, str):
        raise ArgumentError(f"backend: expected a name such as 'numpy' or 'cupy', got {type(spec).__name__}")
    name, _, device = spec.strip().partition(":")
    name = name.lower().replace("-", "_")
    if name == "strict":
        name = "array_api_strict"
    if name not in VALID_NAMES:
        raise ArgumentError(f"backend: unknown name {spec!r}; valid names are {', '.join(VALID_NAMES)}")
    return name, (device or None)


def _import(module: str, fix: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailableError(f"{module} is not installed ({e}); fix: {fix}") from e


def _load_numpy(device: str | None) -> Backend:
    if device not in (None, "cpu"):
        raise ArgumentError(f"backend 'numpy': the only device is 'cpu', got {device!r}")
    return Backend("numpy", _native_numpy(), "cpu")


def _load_cupy(device: str | None) -> Backend:
    cupy = _import("cupy", _CUPY_FIX)
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
        raise BackendUnavailableError(f"cupy: device {index} requested but only {count} CUDA device(s) exist")
    try:
        with cupy.cuda.Device(index):
            # A real kernel launch: catches NVRTC / driver / architecture mismatches at selection time.
            ok = float((cupy.arange(4, dtype=cupy.float32) * 2).sum()) == 12.0
    except Exception as e:
        raise BackendUnavailableError(
            f"CuPy cannot run a kernel on CUDA device {index} ({type(e).__name__}: {e}); "
            f"fix: check the driver and that the CuPy wheel matches the CUDA version ({_CUPY_FIX})"
        ) from e
    if not ok:
        raise BackendUnavailableError(f"CuPy ran a test kernel on device {index} and got a wrong result")
    import array_api_compat.cupy as xp

    return Backend("cupy", xp, cupy.cuda.Device(index))


def _load_torch(device: str | None) -> Backend:
    torch = _import("torch", "pip install 'xpcnn[torch]' (torch==2.13.0 for the CPU build)")
    try:
        dev = torch.device(device or "cpu")
        torch.zeros(1, device=dev)
    except Exception as e:
        raise BackendUnavailableError(f"torch cannot use device {device!r} ({type(e).__name__}: {e})") from e
    import array_api_compat.torch as xp

    return Backend("torch", xp, dev)


def _load_jax(device: str | None) -> Backend:
    jax = _import("jax", _JAX_FIX)
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
        raise BackendUnavailableError(
            f"jax: device {platform}:{number} requested but only {len(devices)} {platform} device(s) exist"
        )
    import jax.numpy as xp  # JAX's own namespace implements the Array API standard

    return Backend("jax", xp, devices[number])


def _load_strict(device: str | None) -> Backend:
    xp = _import("array_api_strict", "pip install array-api-strict")
    names = {device_label(d): d for d in xp.__array_namespace_info__().devices()}
    if device is None:
        return Backend("array_api_strict", xp, xp.__array_namespace_info__().default_device())
    if device not in names:
        raise ArgumentError(
            f"backend 'array_api_strict': unknown device {device!r}; valid devices are {', '.join(names)}"
        )
    return Backend("array_api_strict", xp, names[device])


_LOADERS = {"numpy": _load_numpy, "cupy": _load_cupy, "torch": _load_torch, "jax": _load_jax,
            "array_api_strict": _load_strict}

# (name, device) -> Backend. Loading probes the device (CuPy launches a kernel and syncs) and
# to_device / model.to load their target on every call, so each backend is loaded once.
# Failures are not cached: installing a library or a driver later in the session works.
_loaded: dict[tuple[str, str | None], Backend] = {}
# Per CUDA device: the prefetch side stream and the pinned buffer in flight.
_copy_streams: dict[str, tuple[Any, Any]] = {}


@dataclasses.dataclass(frozen=True)
class _InFlight:
    """A host-to-device copy started by :meth:`Backend.prefetch` on ``stream``."""

    array: Any
    stream: Any


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside xpcnn."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def load_backend(spec: str) -> Backend:
    """Load the backend named by ``spec`` (``"name"`` or ``"name:device"``) without selecting it.

    Raises ValueError for an unknown name and BackendUnavailableError (with the reason
    and the fix) when the backend cannot run here. ``auto`` never raises for lack of CuPy;
    it warns once per process when it falls back to NumPy.
    """
    key = _split(spec)
    backend = _loaded.get(key)
    if backend is None:
        name, device = key
        if name == "auto":
            try:
                backend = _load_cupy(device)
            except BackendUnavailableError as e:
                warnings.warn(f"XPCNN backend 'auto': CuPy is not usable ({e}); using NumPy on the CPU",
                              stacklevel=_user_stacklevel())
                backend = load_backend("numpy")
        else:
            backend = _LOADERS[name](device)
        _loaded[key] = backend
    return backend


# ---------------------------------------------------------------- selection

_selected: Backend | None = None


def current_backend() -> Backend:
    """The selected :class:`Backend`; on first use it is read from ``XPCNN_BACKEND`` (default numpy)."""
    global _selected
    if _selected is None:
        spec = os.environ.get("XPCNN_BACKEND", "numpy") or "numpy"
        try:
            _selected = load_backend(spec)
        except ArgumentError as e:
            raise ArgumentError(f"XPCNN_BACKEND={spec!r} (environment variable): {e}") from None
    return _selected


def get_backend() -> str:
    """The selected backend's name: ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"`` or ``"array_api_strict"``."""
    return current_backend().name


def set_backend(spec: str) -> Backend:
    """Select the backend where new parameters and data are created; returns it.

    Raises BackendUnavailableError (never falls back silently) when it cannot run.
    """
    global _selected
    _selected = load_backend(spec)
    return _selected


@contextlib.contextmanager
def use_backend(spec: str) -> Iterator[Backend]:
    """Select a backend inside a ``with`` block, restoring the previous selection after."""
    global _selected
    previous = _selected
    backend = set_backend(spec)
    try:
        yield backend
    finally:
        _selected = previous


def available_backends() -> dict[str, str]:
    """Each backend name with ``"available"`` or the reason it cannot run here. Imports what it probes."""
    report = {}
    for name in BACKENDS:
        try:
            load_backend(name)
            report[name] = "available"
        except BackendUnavailableError as e:
            report[name] = str(e)
    return report


# ---------------------------------------------------------------- arrays


def is_traced(x: Any) -> bool:
    """True for an abstract value of a transformation being traced (a ``jax.jit`` tracer):
    arrays made from it must not be kept past the call."""
    if "jax" not in sys.modules:
        return False
    import jax

    return isinstance(x, jax.core.Tracer)


_CONSTANTS: dict = {}


def constant(xp: ModuleType, like: Any, name: str, make) -> Any:
    """The array ``make(xp, dtype, device)`` for ``like``'s library, dtype and device, made once
    and kept under ``name`` (a small constant a kernel needs every step: one operation fewer per
    use, one kernel launch fewer on a GPU). Never kept when ``like`` is a ``jax.jit`` tracer:
    what is made under a trace belongs to that trace."""
    dtype, device = like.dtype, device_of(like)
    if is_traced(like):
        return make(xp, dtype, device)
    key = (name, type(like), dtype, device)
    try:
        value = _CONSTANTS.get(key)
    except TypeError:  # a library whose dtype or device does not hash: by their names
        key = (name, type(like), str(dtype), str(device))
        value = _CONSTANTS.get(key)
    if value is None:
        if len(_CONSTANTS) > 1024:  # bounded: the keys are a few per network and backend
            _CONSTANTS.clear()
        value = _CONSTANTS[key] = make(xp, dtype, device)
    return value


def library_of(x: Any, name: str = "x") -> str:
    """The backend name of array ``x`` ("numpy", "cupy", "torch", "jax", "array_api_strict");
    ``name`` is the argument an error names."""
    info = _TYPE_INFO.get(type(x))
    if info is not None:
        return info[0]
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    if array_api_compat.is_cupy_array(x):
        return "cupy"
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_jax_array(x):  # concrete arrays and the tracers of jax.jit
        return "jax"
    if type(x).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    if hasattr(x, "__array_namespace__"):
        return x.__array_namespace__().__name__
    raise DTypeError(f"{name}: expected an array (numpy, cupy, torch, jax or array_api_strict), got {type(x).__name__}")


def device_of(x: Any) -> Any:
    """The device of array ``x`` (``"cpu"`` for NumPy; None for a JAX tracer inside ``jax.jit``,
    whose placement XLA decides from the concrete arguments)."""
    if type(x) is np.ndarray:
        return "cpu"
    return array_api_compat.device(x)


def on_accelerator(x: Any) -> bool:
    """True when array ``x`` lives on a GPU (CuPy, torch on CUDA/ROCm/MPS, JAX on a GPU)."""
    if type(x) is np.ndarray:
        return False
    if array_api_compat.is_cupy_array(x):
        return True
    if array_api_compat.is_torch_array(x):
        return x.device.type not in ("cpu", "meta")
    if array_api_compat.is_jax_array(x):
        device = device_of(x)
        if device is None:  # a jax.jit tracer: XLA places it on the default backend
            import jax

            return jax.default_backend() != "cpu"
        return getattr(device, "platform", "cpu") != "cpu"
    return False


_FEWEST_OPERATIONS: contextvars.ContextVar = contextvars.ContextVar("xpcnn_fewest_operations", default=None)


def fewest_operations_for(x: Any) -> bool:
    """Whether the kernels that have two forms take the one with the fewest operations for ``x``:
    on a GPU, where each operation is a kernel launch, or inside :func:`fewest_operations`. On a
    CPU the other form (more, cheaper operations) measured faster."""
    forced = _FEWEST_OPERATIONS.get()
    return on_accelerator(x) if forced is None else forced


@contextlib.contextmanager
def fewest_operations(enabled: bool | None = True) -> Iterator[None]:
    """Within this block (this thread or task only), kernels with two forms take the one with
    the fewest operations (``True``), the CPU form (``False``), or choose by device (``None``,
    the default outside any block). Both forms give the same numbers to rounding; the
    fewest-operations form is what a GPU runs, so this shows its operation count or tests it
    on a CPU. The choices: max pooling by one argmax over each window
    (:func:`xpcnn.functional.max_pool_method`); a stride-1 convolution's input gradient as a
    convolution of the padded grad_y instead of kh*kw slice additions
    (``xpcnn.functional.conv.conv2d_input_grad_kernel``); the training step's NaN guard as one
    sum over the concatenated gradients instead of one per gradient; the optimizer's update
    of every parameter as one flat array instead of one parameter at a time."""
    if enabled is not None and not isinstance(enabled, bool):
        raise ArgumentError(f"enabled: expected True, False or None, got {enabled!r}")
    token = _FEWEST_OPERATIONS.set(enabled)
    try:
        yield
    finally:
        _FEWEST_OPERATIONS.reset(token)


def _describe(x: Any) -> str:
    return f"{library_of(x)} array on {device_of(x)}"


# Per array type: (library name, namespace). Looking these up once per type keeps
# namespace_of at ~1 us, which matters at batch size 1 where every op calls it.
_TYPE_INFO: dict[type, tuple[str, ModuleType]] = {}


def _type_info(x: Any) -> tuple[str, ModuleType]:
    info = _TYPE_INFO.get(type(x))
    if info is None:
        library = library_of(x)
        info = (library, _native_numpy() if library == "numpy" else array_api_compat.array_namespace(x))
        if not isinstance(x, np.generic):
            _TYPE_INFO[type(x)] = info
    return info


def _native_numpy() -> ModuleType:
    """NumPy >= 2.1's own namespace implements the standard (2023.12+); using it directly
    instead of array-api-compat's wrapper saves a Python call layer per op (~20% of a batch-1
    training step). Older NumPy gets the compat wrapper."""
    if getattr(np, "__array_api_version__", "0") >= "2023.12":
        return np
    import array_api_compat.numpy as xp

    return xp


def namespace_of(*arrays: Any) -> ModuleType:
    """The Array API namespace shared by ``arrays`` (None and Python scalars are ignored).

    Arrays of two libraries or two devices are an error that names both: xpcnn never
    moves data behind your back.
    """
    first = first_info = None
    for i, a in enumerate(arrays):
        if a is None or isinstance(a, (bool, int, float, complex)):
            continue
        try:
            info = _type_info(a)
        except DTypeError:
            library_of(a, f"arrays[{i}]")  # the same error, naming the argument
            raise
        if first is None:
            first, first_info = a, info
            continue
        if info[0] != first_info[0] or (info[0] != "numpy" and _two_devices(device_of(a), device_of(first))):
            raise BackendMismatchError(
                f"arrays from two backends in one call: {_describe(first)} and {_describe(a)}; "
                "move them to one with xpcnn.to_device(x, target) (e.g. model.to(...) or to_device(x, 'numpy'))"
            )
    if first is None:
        raise DTypeError("namespace_of: expected at least one array, got none")
    return first_info[1]


def _two_devices(a: Any, b: Any) -> bool:
    # A device of None (a JAX tracer under jax.jit) is wherever its computation runs.
    return a is not None and b is not None and a != b


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy (or view, for NumPy input) of ``x`` on the host. For API edges and tests."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple, int, float, bool, np.generic)):
        return np.asarray(x)
    library = library_of(x)
    if library == "cupy":
        return x.get()
    if library == "torch":
        return x.detach().cpu().resolve_conj().numpy()
    if library == "array_api_strict":
        import array_api_strict as xps

        return np.asarray(xps.asarray(x).to_device(xps.Device("CPU_DEVICE")))
    return np.asarray(x)  # JAX: a copy from the device (read-only)


def _backend_of_device(device: Any) -> str:
    module = type(device).__module__
    for name in ("cupy", "torch", "array_api_strict", "jax"):  # jax devices live in jaxlib
        if module.startswith(name):
            return name
    if device == "cpu":
        return "numpy"
    raise ArgumentError(
        f"target: expected a backend name or a device object of numpy/cupy/torch/jax/array_api_strict, got {device!r}"
    )


def resolve_target(target: Any) -> Backend:
    """A backend from a name (``"torch:cuda"``) or a device object of the array's library."""
    if isinstance(target, Backend):
        return target
    if isinstance(target, str) and target != "cpu":
        return load_backend(target)
    name = _backend_of_device(target)
    if name == "numpy":
        return load_backend("numpy")
    if name == "cupy":
        return load_backend(f"cupy:{target.id}")
    if name == "torch":
        return load_backend(f"torch:{target}")
    if name == "jax":
        return load_backend(f"jax:{target.platform}:{target.id}")
    backend = load_backend("array_api_strict")
    return dataclasses.replace(backend, device=target)


def to_device(x: Any, target: Any) -> Any:
    """Move array ``x`` to ``target``: a backend name (``"numpy"``, ``"cupy"``, ``"torch:cuda"``, ...),
    a :class:`Backend`, or a device object (``cupy.cuda.Device(0)``, ``torch.device("cuda")``,
    ``jax.devices("cpu")[0]``, ``array_api_strict.Device("device1")``). Dtype and values are
    kept exactly (float64 to JAX needs its 64-bit mode: a DTypeError says how).

    Within one library the move uses the library's own transfer; across libraries it goes
    through host memory (``.get()`` from CuPy, ``.cpu()`` from torch).
    """
    backend = resolve_target(target)
    source = library_of(x)
    if source == backend.name:
        if device_of(x) == backend.device:
            return x
        return _same_library_move(x, backend)
    return backend.asarray(to_numpy(x))


def _same_library_move(x: Any, backend: Backend) -> Any:
    if backend.name == "cupy":
        import cupy

        # cupy.asarray returns an array of another device unchanged; an explicit copy
        # under the target device is what moves it.
        with cupy.cuda.Device(backend.device.id):
            return cupy.array(x, copy=True)
    if backend.name == "jax":
        import jax

        return jax.device_put(x, backend.device)
    return array_api_compat.to_device(x, backend.device)


def dtype_of(name_or_dtype: Any, xp: ModuleType) -> Any:
    """The ``xp`` dtype for ``"float32"`` / ``"float64"`` (or a dtype of ``xp`` itself)."""
    if isinstance(name_or_dtype, str):
        if name_or_dtype not in FLOAT_DTYPES:
            raise DTypeError(f"dtype: expected one of {FLOAT_DTYPES}, got {name_or_dtype!r}")
        return getattr(xp, name_or_dtype)
    for name in FLOAT_DTYPES:
        if name_or_dtype == getattr(xp, name):
            return name_or_dtype
    raise DTypeError(f"dtype: expected float32 or float64, got {name_or_dtype!r}")


def dtype_name(dtype: Any) -> str:
    """``"float32"`` etc. for a dtype of any backend."""
    text = str(dtype)
    return text.rsplit(".", 1)[-1].strip("'>")


def loaded_libraries() -> list[str]:
    """Array libraries already imported in this process (cheap: never imports anything)."""
    return [name for name in BACKENDS if name in sys.modules]
