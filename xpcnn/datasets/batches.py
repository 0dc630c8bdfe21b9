"""Mini-batch index iteration on the host.

Shuffles come from the caller's ``numpy.random.Generator`` so one seed gives the same batches on
every backend; index the (host or device) data with the yielded arrays.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validate import flag, positive_int
from ..errors import ArgumentError, ArgumentTypeError


def check_batch_size(batch_size):
    """Return batch_size as an int, or raise ArgumentError (a ValueError) unless it is a positive integer."""
    return positive_int(batch_size, "batch_size", error=ArgumentError)


def iterate_batches(n, batch_size, *, shuffle=True, rng=None, drop_last=False):
    """Iterator of int64 index arrays (batch_size,) covering range(n) once; the last may be shorter.

    shuffle: order by ``rng.permutation(n)``; rng must then be a ``numpy.random.Generator``.
    drop_last: skip a final batch shorter than batch_size.
    The permutation is drawn now, at the call, not at the first ``next``: later draws from rng
    cannot change this epoch's order.
    """
    batch_size, shuffle, drop_last = check_batch_size(batch_size), flag(shuffle, "shuffle"), flag(drop_last,
                                                                                                  "drop_last")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ArgumentError(f"n: expected a non-negative int, got {n!r}")
    if shuffle:
        if not isinstance(rng, np.random.Generator):
            raise ArgumentTypeError(
                "rng: shuffle=True needs a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
                f"got {type(rng).__name__}"
            )
        order = rng.permutation(int(n)).astype(np.int64, copy=False)
    else:
        order = np.arange(int(n), dtype=np.int64)
    stop = n - n % batch_size if drop_last else n
    return (order[start : start + batch_size] for start in range(0, stop, batch_size))
