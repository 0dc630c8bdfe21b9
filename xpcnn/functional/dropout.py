"""Inverted dropout with reproducible masks: ``y = x * mask``, mask 0 or 1/(1-p).

The mask is a pure function of (seed, counter, element index): a counter-based generator
written in Array API int32 operations (XOR, wrapping multiply, shifts), so it is drawn on the
array's own device with no host round trip, and the same (seed, counter) gives bit-for-bit
the same mask on NumPy, CuPy, PyTorch, JAX and array-api-strict. A training loop advances
``counter`` once per step; resuming from a saved counter continues the same sequence.

The generator: each element's flat index is XOR-ed with a 32-bit key, mixed by a 32-bit
integer hash (Wellons' "triple32", a bijection with near-ideal avalanche), XOR-ed with a
second key and mixed again. The two keys come from (seed, counter) by SplitMix64 in Python.
Its top 24 bits are a uniform draw u in [0, 2**24); an element is kept when
u >= round(p * 2**24), so keep probabilities are exact to 2**-24.
"""

from __future__ import annotations

import operator

from .._validate import check_float, check_same_dtype, check_shape, namespace
from ..backend import device_of
from ..errors import ArgumentError, ShapeError

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_BITS = 24  # uniform bits compared with the drop threshold


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _signed32(v: int) -> int:
    """A 32-bit pattern as the int32 value with the same bits (constants must fit int32)."""
    v &= _MASK32
    return v - (1 << 32) if v >= 1 << 31 else v


def _keys(seed: int, counter: int) -> tuple[int, int]:
    z = _splitmix64(_splitmix64(seed) ^ counter)
    return _signed32(z), _signed32(z >> 32)


def _shift_right(h, bits: int):
    """Logical right shift of int32 bit patterns (>> on int32 is arithmetic: mask the sign copies)."""
    return (h >> bits) & ((1 << (32 - bits)) - 1)


# triple32's odd multipliers, as int32 values with the same bits: int32 multiplication wraps
# modulo 2**32 on every library, which is unsigned multiplication on the bit patterns.
_M1, _M2, _M3 = _signed32(0xED5AD4BB), _signed32(0xAC4C1B51), _signed32(0x31848BAB)


def _mix(h):
    h = h ^ _shift_right(h, 17)
    h = h * _M1
    h = h ^ _shift_right(h, 11)
    h = h * _M2
    h = h ^ _shift_right(h, 15)
    h = h * _M3
    return h ^ _shift_right(h, 14)


def _non_negative_int(value, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or not 0 <= operator.index(value) < 1 << 64:
        raise ArgumentError(f"{name}: expected an int in [0, 2**64), got {value!r}")
    return operator.index(value)


def _probability(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ArgumentError(f"p: expected a drop probability in [0, 1), got {p!r}")
    return float(p)


def dropout_mask(like, p, *, seed, counter):
    """An array of ``like``'s shape, dtype and device holding 0 (dropped, probability ``p``) or
    1 / (1 - p) (kept). The same (seed, counter) gives the same mask on every backend; a
    different counter gives an independent-looking one. seed, counter: ints in [0, 2**64)."""
    xp = namespace(like=like)
    check_float(xp, "like", like)
    p = _probability(p)
    seed = _non_negative_int(seed, "seed")
    counter = _non_negative_int(counter, "counter")
    size = 1
    for s in like.shape:
        size *= s
    if size >= 1 << 31:
        raise ShapeError(
            f"like: expected fewer than 2**31 elements (an int32 element index), got shape {tuple(like.shape)}"
        )
    return dropout_mask_kernel(xp, like, p, seed, counter)


def dropout_keys(seed: int, counter: int) -> tuple[int, int]:
    """The two int32 hash keys of (seed, counter): what :func:`dropout_mask_kernel` mixes in.
    A compiled step passes them in as arrays so one compilation serves every counter."""
    return _keys(seed, counter)


def hash_bits(xp, size: int, seed: int, counter: int, *, device, keys=None):
    """int32 (size,): the hash of each index 0..size-1 under (seed, counter), or under precomputed
    ``keys`` (two int32 scalars or 0-d arrays from :func:`dropout_keys`): the bits that dropout
    masks and augmentation draws come from, the same on every backend."""
    k0, k1 = _keys(seed, counter) if keys is None else keys
    return _mix(_mix(xp.arange(size, dtype=xp.int32, device=device) ^ k0) ^ k1)


def uniform_below(h, high: int):
    """int32 draws in [0, high) from :func:`hash_bits` values ``h``: floor(u * high / 2**q), u the
    top q bits of h, q = min(24, 31 - high.bit_length()) so that the product fits int32."""
    q = min(_BITS, 31 - int(high).bit_length())
    return (_shift_right(h, 32 - q) * int(high)) >> q


def dropout_mask_kernel(xp, like, p, seed, counter, keys=None):
    """The mask of (seed, counter), or of precomputed ``keys`` (two int32 scalars or 0-d arrays
    from :func:`dropout_keys`) when given."""
    size = 1
    for s in like.shape:
        size *= s
    h = hash_bits(xp, size, seed, counter, device=device_of(like), keys=keys)
    threshold = round(p * (1 << _BITS))
    keep = _shift_right(h, 32 - _BITS) >= threshold
    return xp.reshape(xp.astype(keep, like.dtype) * (1.0 / (1.0 - p)), tuple(like.shape))


def _check_mask(mask, ref, ref_name):
    check_shape(mask, tuple(ref.shape), "mask", f" ({ref_name}'s shape)")
    check_same_dtype(ref_name, ref, "mask", mask)


def dropout(x, mask):
    """x * mask, with ``mask`` from :func:`dropout_mask` (x's shape and dtype)."""
    xp = namespace(x=x, mask=mask)
    check_float(xp, "x", x)
    _check_mask(mask, x, "x")
    return x * mask


def dropout_backward(grad_y, mask):
    """grad_x = grad_y * mask (the same mask as the forward)."""
    xp = namespace(grad_y=grad_y, mask=mask)
    check_float(xp, "grad_y", grad_y)
    _check_mask(mask, grad_y, "grad_y")
    return grad_y * mask
