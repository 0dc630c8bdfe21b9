"""xpcnn: a convolutional neural network library written once against the Python Array API.

The same layer code runs on NumPy (CPU), CuPy (GPU), PyTorch and array-api-strict; the
backend is picked with ``XPCNN_BACKEND`` or :func:`set_backend`.
"""

# callbacks, dask, interop and zoo import torch and dask only on first use.
from . import _allocator, callbacks, dask, datasets, functional, init, interop, layers, optim, zoo
from ._allocator import keep_freed_memory
from .backend import (
    available_backends,
    fewest_operations,
    get_backend,
    namespace_of,
    set_backend,
    to_device,
    to_numpy,
    use_backend,
)
from .distributed import mpi as _mpi  # noqa: F401  (registers distributed=True with fit and evaluate)
from .errors import BackendMismatchError, BackendUnavailableError, XpcnnError
from .model import Sequential
from .saving import load
from .version import __version__

_allocator.apply_requested()  # XPCNN_MALLOC=keep only: the library alone never touches malloc

__all__ = [
    "Sequential", "load", "layers", "optim", "init", "functional", "datasets", "callbacks", "zoo", "interop", "dask",
    "set_backend", "get_backend", "use_backend", "available_backends", "namespace_of", "to_device", "to_numpy",
    "keep_freed_memory", "fewest_operations",
    "BackendUnavailableError", "BackendMismatchError", "XpcnnError", "__version__",
]
