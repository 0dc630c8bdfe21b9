"""The backend layer: the one package that names NumPy, CuPy, PyTorch, JAX and array-api-strict.

Numeric code (``xpcnn.functional``, layers, optimizers) never imports an array library. It
asks its inputs for their namespace with :func:`namespace_of` and creates new arrays with the
dtype and device of an input. The *selected* backend only decides where new parameters and
data are created.

``registry``: names, ``XPCNN_BACKEND``, loading and selection. ``base``: :class:`Backend`, the
protocol each library's adapter implements (``numpy_adapter``, ``cupy_adapter``,
``torch_adapter``, ``jax_adapter``, ``strict_adapter``, ``ndonnx_adapter``: inference only).
``arrays``: namespace, library and device of arrays, and moving them.
No array library is imported until a backend is loaded.
"""

from . import registry
from .arrays import (
    constant,
    device_of,
    fewest_operations,
    fewest_operations_for,
    library_of,
    namespace_of,
    on_accelerator,
    to_device,
    to_numpy,
)
from .base import Backend, dtype_name
from .cupy_adapter import CupyBackend
from .jax_adapter import is_traced
from .registry import (
    BACKENDS,
    VALID_NAMES,
    available_backends,
    current_backend,
    get_backend,
    load_backend,
    needs_cuda,
    resolve_target,
    set_backend,
    use_backend,
)

__all__ = [
    "BACKENDS", "VALID_NAMES", "Backend", "available_backends", "constant", "current_backend", "device_of",
    "dtype_name", "fewest_operations", "fewest_operations_for", "get_backend", "is_traced", "library_of",
    "load_backend", "namespace_of", "needs_cuda", "on_accelerator", "resolve_target", "set_backend", "to_device",
    "to_numpy", "use_backend", "registry", "CupyBackend",
]
