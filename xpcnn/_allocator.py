"""Opt-in: keep freed host memory in the process instead of returning it to the OS every step.

NumPy has no memory pool: each training step allocates and frees the same few large
temporaries (im2col columns, activations, gradients). With glibc's defaults, blocks above a
dynamic threshold are mmap-ed and unmapped, and the top of the heap is trimmed, so every step
pays fresh page faults for the same memory. Raising the mmap and trim thresholds makes glibc
reuse that memory, the role PyTorch's CPU caching allocator plays for torch.
``benchmarks/bench_allocator.py`` measures the difference (``benchmarks/results/allocator.txt``).

It is a setting of the whole process (every library in it allocates through the same malloc),
so xpcnn never applies it on its own: a program that owns its process asks for it with
:func:`keep_freed_memory` or ``XPCNN_MALLOC=keep`` (read when xpcnn is imported). The
``xpcnn train`` command and the benchmark scripts ask for it; ``XPCNN_MALLOC=default`` keeps
the allocator untouched even there.
"""

from __future__ import annotations

import ctypes
import os
import sys

from .errors import ArgumentError

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps M_MMAP_THRESHOLD at HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit systems.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20
_CHOICES = ("keep", "default")

_applied = False


def _requested() -> str | None:
    """XPCNN_MALLOC as 'keep' / 'default', or None when unset or empty."""
    value = os.environ.get("XPCNN_MALLOC", "").strip().lower()
    if value and value not in _CHOICES:
        raise ArgumentError(f"XPCNN_MALLOC: expected 'keep' or 'default' (or unset), got {value!r}")
    return value or None


def _glibc_mallopt():
    """glibc's mallopt from the symbols already loaded in this process, or None elsewhere.

    ``CDLL(None)`` is dlopen(NULL): the interpreter and the libc it is linked with, found
    without ``ctypes.util.find_library`` (which runs ``ldconfig -p`` in a subprocess).
    musl and other libcs lack ``gnu_get_libc_version``; their mallopt (if any) differs.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        process = ctypes.CDLL(None)
        if not hasattr(process, "gnu_get_libc_version"):
            return None
        mallopt = process.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (mmap threshold 32 MiB, trim threshold 256 MiB).

    Process-wide and not undone: call it only in a program whose process is yours (a training
    script), ideally before the first large allocation. Returns True when the setting is in
    effect, False where it does not apply (not glibc Linux) or when ``XPCNN_MALLOC=default``
    asks to leave the allocator alone. Calling it again changes nothing.
    """
    global _applied
    if _applied:
        return True
    if _requested() == "default":
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _applied


def apply_requested() -> None:
    """At import: apply :func:`keep_freed_memory` only when ``XPCNN_MALLOC=keep`` asks for it."""
    if _requested() == "keep":
        keep_freed_memory()
