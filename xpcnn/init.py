"""Weight initialisers, drawn on the host from one ``numpy.random.Generator`` so that the
same seed gives the same model on every backend (the backend only receives the numbers).

An initialiser is ``f(rng, shape, fan_in, fan_out) -> float64 numpy array``; layers name
them by string (which keeps model files free of code) or take a callable.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .errors import ArgumentError

Initializer = Callable[[np.random.Generator, tuple, int, int], np.ndarray]


def zeros(rng, shape, fan_in, fan_out):
    return np.zeros(shape)


def ones(rng, shape, fan_in, fan_out):
    return np.ones(shape)


def he_normal(rng, shape, fan_in, fan_out):
    """N(0, 2 / fan_in): keeps activations' variance through ReLU layers (He et al. 2015)."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


def he_uniform(rng, shape, fan_in, fan_out):
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, shape)


def glorot_normal(rng, shape, fan_in, fan_out):
    """N(0, 2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))


def glorot_uniform(rng, shape, fan_in, fan_out):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)


def torch_default(rng, shape, fan_in, fan_out):
    """PyTorch's default for Conv2d and Linear weights *and* biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a=sqrt(5) reduces to this bound)."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape)


def notebook(rng, shape, fan_in, fan_out):
    """The teaching notebook's scheme: standard normal divided by fan_in (kernels randn/9 for
    3x3 single-channel kernels, dense weights randn/2704)."""
    return rng.standard_normal(shape) / fan_in


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros,
    "ones": ones,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "torch": torch_default,
    "notebook": notebook,
}


def get(init: str | Initializer, argument: str) -> Initializer:
    """Look an initialiser up by name (or pass a callable through)."""
    if callable(init):
        return init
    if init not in INITIALIZERS:
        raise ArgumentError(f"{argument}: unknown initialiser {init!r}; valid names are {', '.join(INITIALIZERS)}")
    return INITIALIZERS[init]
