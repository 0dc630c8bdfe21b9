"""Questions about arrays of any library: their namespace, library, device; moving them."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ..errors import ArgumentError, BackendMismatchError, DTypeError
from .base import Backend
from .jax_adapter import is_traced
from .registry import ADAPTERS, resolve_target

# Per array type: (library name, its adapter or None for another Array API library, namespace).
# Looking these up once per type keeps namespace_of cheap, which matters at batch size 1 where
# every op calls it. Each adapter names its namespace; NumPy's is NumPy itself (NumPy >= 2.1
# implements the standard), which skips array-api-compat's wrapper on every operation.
_TYPE_INFO: dict[type, tuple[str, type[Backend] | None, ModuleType]] = {}


def _type_info(x: Any, name: str = "x") -> tuple[str, type[Backend] | None, ModuleType]:
    info = _TYPE_INFO.get(type(x))
    if info is None:
        adapter = next((a for a in ADAPTERS.values() if a.owns(x)), None)
        if adapter is not None:
            info = (adapter.name, adapter, adapter.namespace(x))
        elif hasattr(x, "__array_namespace__"):
            info = (x.__array_namespace__().__name__, None, array_api_compat.array_namespace(x))
        else:
            raise DTypeError(
                f"{name}: expected an array (numpy, cupy, torch, jax or array_api_strict), got {type(x).__name__}"
            )
        if not isinstance(x, np.generic):
            _TYPE_INFO[type(x)] = info
    return info


def library_of(x: Any, name: str = "x") -> str:
    """The backend name of array ``x`` ("numpy", "cupy", "torch", "jax", "array_api_strict");
    ``name`` is the argument an error names."""
    return _type_info(x, name)[0]


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
    adapter = _type_info(x)[1]
    return adapter is not None and adapter.on_accelerator(x)


def namespace_of(*arrays: Any) -> ModuleType:
    """The Array API namespace shared by ``arrays`` (None and Python scalars are ignored).

    Arrays of two libraries or two devices are an error that names both: xpcnn never
    moves data behind your back.
    """
    if len(arrays) == 1 and type(arrays[0]) in _TYPE_INFO:  # one array of a known type: most calls
        return _TYPE_INFO[type(arrays[0])][2]
    first = first_info = None
    for i, a in enumerate(arrays):
        if a is None or isinstance(a, (bool, int, float, complex)):
            continue
        try:
            info = _type_info(a)
        except DTypeError:
            _type_info(a, f"arrays[{i}]")  # the same error, naming the argument
            raise
        if first is None:
            first, first_info = a, info
            continue
        if info[0] != first_info[0] or (type(a) is not np.ndarray and _two_devices(device_of(a), device_of(first))):
            raise BackendMismatchError(
                f"arrays from two backends in one call: {_describe(first)} and {_describe(a)}; "
                "move them to one with xpcnn.to_device(x, target) (e.g. model.to(...) or to_device(x, 'numpy'))"
            )
    if first is None:
        raise DTypeError("namespace_of: expected at least one array, got none")
    return first_info[2]


def _two_devices(a: Any, b: Any) -> bool:
    # A device of None (a JAX tracer under jax.jit) is wherever its computation runs.
    return a is not None and b is not None and a != b


def _describe(x: Any) -> str:
    return f"{library_of(x)} array on {device_of(x)}"


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy (or view, for NumPy input) of ``x`` on the host. For API edges and tests."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple, int, float, bool, np.generic)):
        return np.asarray(x)
    adapter = _type_info(x)[1]
    return np.asarray(x) if adapter is None else adapter.to_numpy(x)


def to_device(x: Any, target: Any) -> Any:
    """Move array ``x`` to ``target``: a backend name (``"numpy"``, ``"cupy"``, ``"torch:cuda"``, ...),
    a :class:`Backend`, or a device object (``cupy.cuda.Device(0)``, ``torch.device("cuda")``,
    ``jax.devices("cpu")[0]``, ``array_api_strict.Device("device1")``). Dtype and values are
    kept exactly (float64 to JAX needs its 64-bit mode: a DTypeError says how; without it 64-bit
    integers whose values fit in 32 bits become 32-bit ones, others are a DTypeError too).

    Within one library the move uses the library's own transfer; across libraries it goes
    through host memory (``.get()`` from CuPy, ``.cpu()`` from torch).
    """
    backend = resolve_target(target)
    if library_of(x) != backend.name:
        return backend.asarray(to_numpy(x))
    return x if device_of(x) == backend.device else backend.move(x)


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
