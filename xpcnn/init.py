"""Weight initialisers, drawn on the host from one ``numpy.random.Generator`` so that the
same seed gives the same model on every backend (the backend only receives the numbers).

An initialiser is ``f(rng, shape, fan_in, fan_out) -> float64 numpy array``; layers name
them by string (which keeps model files free of code) or take a callable.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable

import numpy as np

from .errors import ArgumentError, ArgumentTypeError, ShapeError

Initializer = Callable[[np.random.Generator, tuple, int, int], np.ndarray]


def _checked(*, fans: bool = True):
    """Check an initialiser's arguments (they may come from user code) before drawing."""
    def wrap(fn):
        @functools.wraps(fn)
        def init(rng, shape, fan_in, fan_out):
            if not isinstance(rng, np.random.Generator):
                raise ArgumentTypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
            try:
                dims = tuple(operator.index(d) for d in shape)
            except TypeError:
                raise ShapeError(f"shape: expected a tuple of non-negative ints, got {shape!r}") from None
            if any(d < 0 for d in dims) or any(isinstance(d, bool) for d in shape):
                raise ShapeError(f"shape: expected a tuple of non-negative ints, got {shape!r}")
            low = 1 if fans else 0
            for name, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
                if isinstance(fan, bool) or not isinstance(fan, (int, np.integer)) or fan < low:
                    raise ArgumentError(f"{name}: expected an int >= {low}, got {fan!r}")
            return fn(rng, dims, int(fan_in), int(fan_out))
        return init
    return wrap


@_checked(fans=False)
def zeros(rng, shape, fan_in, fan_out):
    return np.zeros(shape)


@_checked(fans=False)
def ones(rng, shape, fan_in, fan_out):
    return np.ones(shape)


@_checked()
def he_normal(rng, shape, fan_in, fan_out):
    """N(0, 2 / fan_in): keeps activations' variance through ReLU layers (He et al. 2015)."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


@_checked()
def he_uniform(rng, shape, fan_in, fan_out):
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, shape)


@_checked()
def glorot_normal(rng, shape, fan_in, fan_out):
    """N(0, 2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))


@_checked()
def glorot_uniform(rng, shape, fan_in, fan_out):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)


@_checked()
def torch_default(rng, shape, fan_in, fan_out):
    """PyTorch's default for Conv2d and Linear weights *and* biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a=sqrt(5) reduces to this bound)."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape)


@_checked()
def notebook(rng, shape, fan_in, fan_out):
    """The teaching notebook's scheme: standard normal divided by fan_in (kernels randn/9 for
    3x3 single-channel kernels, dense weights randn/2704)."""
    return rng.standard_normal(shape) / fan_in


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros, "ones": ones, "he_normal": he_normal, "he_uniform": he_uniform, "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform, "torch": torch_default, "notebook": notebook}


def get(init: str | Initializer, argument: str) -> Initializer:
    """Look an initialiser up by name (or pass a callable through)."""
    if callable(init):
        return init
    if not isinstance(init, str):
        raise ArgumentTypeError(f"{argument}: expected an initialiser name ({', '.join(INITIALIZERS)}) or a function "
                                f"(rng, shape, fan_in, fan_out) -> array, got {type(init).__name__}")
    if init not in INITIALIZERS:
        raise ArgumentError(f"{argument}: unknown initialiser {init!r}; valid names are {', '.join(INITIALIZERS)}")
    return INITIALIZERS[init]
