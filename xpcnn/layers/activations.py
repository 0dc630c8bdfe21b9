"""Element-wise activations: ReLU, LeakyReLU, Tanh, Sigmoid, GELU (any shape, PyTorch's formulas)."""

from __future__ import annotations

import math

from ..backend import namespace_of
from ..errors import ArgumentError
from ..functional.activation import (
    GELU_FORMS,
    gelu_backward_kernel,
    gelu_kernel,
    leaky_relu_backward_kernel,
    leaky_relu_kernel,
    relu_backward_kernel,
    relu_kernel,
    sigmoid_backward_kernel,
    sigmoid_kernel,
    tanh_backward_kernel,
    tanh_kernel,
)
from .base import Layer


class Elementwise(Layer):
    """An activation from its kernel pair; ``from_output``: the backward takes the output y
    (cheaper for tanh and sigmoid), else the input x."""

    kernel = gradient = None  # staticmethods: kernel(xp, x, *options), gradient(xp, grad_y, saved, *options)
    from_output = False

    def options(self) -> tuple:
        return ()

    def forward(self, x, training=False):
        y = self.kernel(namespace_of(x), x, *self.options())
        self.save_for_backward(y if self.from_output else x)
        return y

    def backward(self, grad_y):
        (saved,) = self.saved
        return self.gradient(namespace_of(grad_y), grad_y, saved, *self.options())


class ReLU(Elementwise):
    """max(x, 0)."""

    kernel, gradient = staticmethod(relu_kernel), staticmethod(relu_backward_kernel)


class LeakyReLU(Elementwise):
    """x for x > 0, negative_slope * x otherwise (``torch.nn.LeakyReLU``)."""

    kernel, gradient = staticmethod(leaky_relu_kernel), staticmethod(leaky_relu_backward_kernel)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) \
                or not math.isfinite(negative_slope):
            raise ArgumentError(f"negative_slope: expected a finite real number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def get_config(self):
        return {"negative_slope": self.negative_slope}

    def options(self):
        return (self.negative_slope,)


class Tanh(Elementwise):
    """tanh(x); backward from the output: 1 - y²."""

    kernel, gradient, from_output = staticmethod(tanh_kernel), staticmethod(tanh_backward_kernel), True


class Sigmoid(Elementwise):
    """1 / (1 + exp(-x)); backward from the output: y (1 - y)."""

    kernel, gradient, from_output = staticmethod(sigmoid_kernel), staticmethod(sigmoid_backward_kernel), True


class GELU(Elementwise):
    """GELU as PyTorch's, but the tanh form is the default here (PyTorch's default is "none"):
    ``approximate="tanh"`` 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))); ``"none"`` the exact
    x Φ(x) = 0.5 x (1 + erf(x / √2))."""

    kernel, gradient = staticmethod(gelu_kernel), staticmethod(gelu_backward_kernel)

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()
        if approximate not in GELU_FORMS:
            raise ArgumentError(f"approximate: expected 'tanh' or 'none' (exact), got {approximate!r}")
        self.approximate = approximate

    def get_config(self):
        return {"approximate": self.approximate}

    def options(self):
        return (self.approximate,)
