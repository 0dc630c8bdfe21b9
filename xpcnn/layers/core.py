"""Dense, Flatten and Dropout."""

from __future__ import annotations

import math

from .._validate import positive_int, sample_shape
from ..backend import namespace_of
from ..errors import ArgumentError, ShapeError
from ..functional.dropout import dropout_mask_kernel
from ..functional.linear import linear_backward_kernel, linear_kernel
from .base import Layer, Param, parameter_options, weight_and_bias


class Dense(Layer):
    """Fully connected ``y = x @ W + b``: (N, in) -> (N, units); W (in, units) as in the notebook."""

    def __init__(self, units: int, *, bias: bool = True, weight_init="he_normal", bias_init="zeros") -> None:
        super().__init__()
        self.units = positive_int(units, "units")
        self.bias, self.weight_init, self.bias_init, self.init_names = parameter_options(bias, weight_init, bias_init)

    def output_shape(self, input_shape):
        if hasattr(input_shape, "__len__") and len(input_shape) != 1:
            raise ShapeError(f"Dense input_shape: expected a flat input (features,), got {tuple(input_shape)}; "
                             "put a Flatten() before it")
        sample_shape(input_shape, "Dense input_shape", "(features,)", ndim=1)
        return (self.units,)

    def param_specs(self, input_shape):
        (fan_in,) = input_shape
        specs = {"weight": Param((fan_in, self.units), self.weight_init, fan_in, self.units)}
        if self.bias:
            specs["bias"] = Param((self.units,), self.bias_init, fan_in, self.units)
        return specs

    def get_config(self):
        return dict(units=self.units, bias=self.bias, weight_init=self.init_names[0], bias_init=self.init_names[1])

    def forward(self, x, training=False):
        self.save_for_backward(x)
        return linear_kernel(namespace_of(x), x, self.params["weight"], self.params.get("bias"))

    def backward(self, grad_y):
        (x,) = self.saved
        grad_x, grad_w, grad_b = linear_backward_kernel(namespace_of(grad_y), grad_y, x, self.params["weight"],
                                                        bias=self.bias, input_grad=self.needs_input_grad)
        weight_and_bias(self, grad_w, grad_b)
        return grad_x


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order (PyTorch's)."""

    def output_shape(self, input_shape):
        return (math.prod(sample_shape(input_shape, "Flatten input_shape", "(C, H, W) or (features,)")),)

    def forward(self, x, training=False):
        self.save_for_backward(tuple(x.shape))
        return namespace_of(x).reshape(x, (-1, math.prod(x.shape[1:])))  # N may be symbolic (ndonnx)

    def backward(self, grad_y):
        (shape,) = self.saved
        return namespace_of(grad_y).reshape(grad_y, shape)


class RandomLayer(Layer):
    """Base of the layers whose draws come from the counter-based hash of
    :mod:`xpcnn.functional.dropout` (Dropout, the augmentation layers), keyed by ``seed`` (given,
    or ``default_seed``, which the model derives from its build seed and the layer's path) and a
    ``counter`` that advances once per training forward: the same seed gives the same draws on
    every backend, and the state (counter, seed) saved in checkpoints resumes the sequence."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64):
            raise ArgumentError(f"seed: expected an int in [0, 2**64) or None, got {seed!r}")
        self.seed, self.counter, self.default_seed = seed, 0, 0

    @property
    def key(self) -> int:
        return self.seed if self.seed is not None else self.default_seed

    def get_state(self):
        return {"counter": self.counter, "seed": self.key}

    def set_state(self, state):
        counter, seed = state.get("counter"), state.get("seed")
        for name, value in (("counter", counter), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
                raise ArgumentError(f"state[{name!r}]: expected an int in [0, 2**64), got {value!r}")
        self.counter, self.default_seed = counter, seed


class Dropout(RandomLayer):
    """Inverted dropout: in training mode each value is zeroed with probability ``p`` and the rest
    scaled by 1/(1-p); identity in inference mode. Masks are drawn as :class:`RandomLayer` says,
    so a resumed run continues the same sequence.
    ``traced_keys``: a compiled step passes the hash keys in as arrays and advances the counter."""

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__(seed)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ArgumentError(f"p: expected a probability in [0, 1), got {p!r}")
        self.p, self.traced_keys = float(p), None

    def get_config(self):
        return {"p": self.p, "seed": self.seed}

    def forward(self, x, training=False):
        if not training or self.p == 0.0:
            self.save_for_backward(None)
            return x
        mask = dropout_mask_kernel(namespace_of(x), x, self.p, self.key, self.counter, keys=self.traced_keys)
        if self.traced_keys is None:
            self.counter += 1
        self.save_for_backward(mask)
        return x * mask

    def backward(self, grad_y):
        (mask,) = self.saved
        return grad_y if mask is None else grad_y * mask
