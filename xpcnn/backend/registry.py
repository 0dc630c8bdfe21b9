"""The registry: backend names, ``XPCNN_BACKEND``, loading (cached) and selection.

A spec is ``name`` or ``name:device``: ``"torch:cuda"``, ``"cupy:1"``, ``"jax:gpu"``,
``"array_api_strict:device1"``; ``"strict"`` is short for ``array_api_strict``. ``auto`` is
CuPy if it can run a kernel, else NumPy with one warning. ``XPCNN_BACKEND`` is read on first
use, so ``import xpcnn`` works on any machine whatever it says.
"""

import contextlib
import dataclasses
import inspect
import os
import warnings
from collections.abc import Iterator
from typing import Any

from ..errors import ArgumentError, BackendUnavailableError
from .base import Backend
from .cupy_adapter import CupyBackend
from .jax_adapter import JaxBackend
from .ndonnx_adapter import NdonnxBackend
from .numpy_adapter import NumpyBackend
from .strict_adapter import StrictBackend
from .torch_adapter import TorchBackend

ADAPTERS: dict[str, type[Backend]] = {a.name: a for a in (NumpyBackend, CupyBackend, TorchBackend, JaxBackend,
                                                          StrictBackend, NdonnxBackend)}
BACKENDS = tuple(ADAPTERS)
VALID_NAMES = (*BACKENDS, "auto")
# Every load goes through this table, so a test can wrap one loader and count its calls.
LOADERS = {name: adapter.load for name, adapter in ADAPTERS.items()}


@dataclasses.dataclass
class Registry:
    """The process's backends: the selected one (None until first use) and every one loaded.

    Loading probes the device (CuPy launches a kernel and syncs) and ``to_device`` / ``model.to``
    load their target on every call, so each (name, device) is loaded once. Failures are not
    kept: installing a library or a driver later in the session works."""

    selected: Backend | None = None
    loaded: dict[tuple[str, str | None], Backend] = dataclasses.field(default_factory=dict)


STATE = Registry()


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"Torch:cuda"`` -> ``("torch", "cuda")``; ArgumentError (a ValueError) listing the valid names."""
    if not isinstance(spec, str):
        raise ArgumentError(f"backend: expected a name such as 'numpy' or 'cupy', got {type(spec).__name__}")
    name, _, device = spec.strip().partition(":")
    name = name.lower().replace("-", "_")
    if name == "strict":
        name = "array_api_strict"
    if name not in VALID_NAMES:
        raise ArgumentError(f"backend: unknown name {spec!r}; valid names are {', '.join(VALID_NAMES)}")
    return name, (device or None)


def needs_cuda(spec: str) -> bool:
    """True for specs that need a CUDA device (``cupy[:i]``, ``torch:cuda[:i]``), told without loading them."""
    name, _, device = spec.partition(":")
    adapter = ADAPTERS.get(name)
    return adapter is not None and adapter.needs_cuda(device)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning of the caller point at the first frame outside xpcnn."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def load_backend(spec: str) -> Backend:
    """Load the backend named by ``spec`` (``"name"`` or ``"name:device"``) without selecting it.

    Raises ValueError for an unknown name and BackendUnavailableError (with the reason
    and the fix) when the backend cannot run here. ``auto`` never raises for lack of CuPy;
    it warns once per process when it falls back to NumPy.
    """
    key = split_spec(spec)
    backend = STATE.loaded.get(key)
    if backend is None:
        name, device = key
        if name == "auto":
            try:
                backend = CupyBackend.load(device)
            except BackendUnavailableError as e:
                warnings.warn(f"XPCNN backend 'auto': CuPy is not usable ({e}); using NumPy on the CPU",
                              stacklevel=_user_stacklevel())
                backend = load_backend("numpy")
        else:
            backend = LOADERS[name](device)
        STATE.loaded[key] = backend
    return backend


def resolve_target(target: Any) -> Backend:
    """A backend from a name (``"torch:cuda"``) or a device object of the array's library."""
    if isinstance(target, Backend):
        return target
    if isinstance(target, str) and target != "cpu":
        return load_backend(target)
    for adapter in ADAPTERS.values():
        if adapter.owns_device(target):
            return load_backend(adapter.spec(target))
    raise ArgumentError(f"target: expected a backend name or a device object of {'/'.join(ADAPTERS)}, got {target!r}")


def current_backend() -> Backend:
    """The selected :class:`Backend`; on first use it is read from ``XPCNN_BACKEND`` (default numpy)."""
    if STATE.selected is None:
        spec = os.environ.get("XPCNN_BACKEND", "numpy") or "numpy"
        try:
            STATE.selected = load_backend(spec)
        except ArgumentError as e:
            raise ArgumentError(f"XPCNN_BACKEND={spec!r} (environment variable): {e}") from None
    return STATE.selected


def get_backend() -> str:
    """The selected backend's name: ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"`` or ``"array_api_strict"``."""
    return current_backend().name


def set_backend(spec: str) -> Backend:
    """Select the backend where new parameters and data are created; returns it.

    Raises BackendUnavailableError (never falls back silently) when it cannot run.
    """
    STATE.selected = load_backend(spec)
    return STATE.selected


@contextlib.contextmanager
def use_backend(spec: str) -> Iterator[Backend]:
    """Select a backend inside a ``with`` block, restoring the previous selection after."""
    previous = STATE.selected
    backend = set_backend(spec)
    try:
        yield backend
    finally:
        STATE.selected = previous


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
