"""Layers: parameters plus the functional ops, caching what backward needs.

A layer is built for an input shape (without the batch axis) on a backend, with
parameters drawn from a host RNG. ``forward`` caches its input; ``backward(grad_y)``
fills ``grads`` (same keys as ``params``) and returns the gradient of its input.

``forward``/``backward`` check their arguments (they are public). ``_forward(xp, x)`` /
``_backward(xp, grad_y, input_grad)`` run the same math kernels with the geometry computed
once at build: Sequential checks a batch once at its entry and then takes this path, since
every later shape follows from the built ones. At batch size 1 the per-op checks were a
quarter of a training step.
"""

from __future__ import annotations

import math
from typing import Any

from . import functional as F
from . import init as initializers
from .backend import Backend
from .errors import NotBuiltError, ShapeError
from .functional._checks import check_shape, namespace, pair, positive_int, sample_shape
from .functional.activation import relu_backward_kernel, relu_kernel
from .functional.conv import conv2d_backward_kernel, conv2d_geometry, conv2d_kernel
from .functional.linear import linear_backward_kernel, linear_kernel
from .functional.pool import (
    avg_pool2d_backward_kernel,
    avg_pool2d_kernel,
    max_pool2d_backward_kernel,
    max_pool2d_kernel,
    pool_geometry,
)

class Layer:
    """Base class: ``params`` and ``grads`` are dicts of arrays ("weight", "bias")."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.input_shape: tuple[int, ...] | None = None
        self._cache: tuple = ()

    # -- building
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample for one input sample of ``input_shape``."""
        return tuple(input_shape)

    def build(self, input_shape: tuple[int, ...], *, rng: Any, backend: Backend, dtype: str) -> tuple[int, ...]:
        """Create parameters for ``input_shape`` (C, H, W) or (F,) on ``backend``, drawn from the host
        ``numpy.random.Generator`` ``rng``; returns the output shape."""
        self.input_shape = tuple(input_shape)
        out = self.output_shape(self.input_shape)
        self._geometry = self._plan(self.input_shape)
        for name, (shape, init, fan_in, fan_out) in self._param_specs(self.input_shape).items():
            self.params[name] = backend.asarray(init(rng, shape, fan_in, fan_out), dtype=dtype)
        self.grads = {}
        return out

    def _param_specs(self, input_shape) -> dict:
        return {}

    def _plan(self, input_shape):
        """Shape-derived constants the kernels need (conv/pool geometry), fixed at build."""
        return None

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable): the architecture saved in model files."""
        return {}

    # -- running
    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_y, *, input_grad: bool = True):
        raise NotImplementedError

    def _forward(self, xp, x):
        """Forward on a batch already checked against the built input shape."""
        raise NotImplementedError

    def _backward(self, xp, grad_y, input_grad: bool):
        """Backward of the last :meth:`_forward`, grad_y of the built output shape."""
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def _cached(self) -> tuple:
        if not self._cache:
            raise NotBuiltError(f"{type(self).__name__}.backward: call forward first (nothing cached)")
        return self._cache

    def _require_params(self) -> None:
        if self.input_shape is None:
            raise NotBuiltError(f"{type(self).__name__}: not built; build the model first (model.build(input_shape))")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _init_name(init) -> Any:
    return init if isinstance(init, str) else getattr(init, "__name__", "custom")


def _set_parameter_options(layer: Layer, bias, weight_init, bias_init) -> None:
    """The options Conv2D and Dense share: whether to have a bias, and the initialisers
    (kept by name too, so the architecture can be saved without code)."""
    layer.bias = bool(bias)
    layer.weight_init = initializers.get(weight_init, "weight_init")
    layer.bias_init = initializers.get(bias_init, "bias_init")
    layer._init_names = (_init_name(weight_init), _init_name(bias_init))


class Conv2D(Layer):
    """2-D convolution. Input (N, C, H, W) -> (N, out_channels, OH, OW); weight (out, C, kh, kw)."""

    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding=0, dilation=1, bias: bool = True,
                 weight_init="he_normal", bias_init="zeros") -> None:
        super().__init__()
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.dilation = pair(dilation, "dilation")
        _set_parameter_options(self, bias, weight_init, bias_init)

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, "Conv2D input_shape", "(C, H, W)", ndim=3)
        c = input_shape[0]
        w_shape = (self.out_channels, c, *self.kernel_size)
        *_, (oh, ow) = conv2d_geometry((1, *input_shape), w_shape, self.stride, self.padding, self.dilation)
        return (self.out_channels, oh, ow)

    def _param_specs(self, input_shape):
        c = input_shape[0]
        kh, kw = self.kernel_size
        fan_in, fan_out = c * kh * kw, self.out_channels * kh * kw
        specs = {"weight": ((self.out_channels, c, kh, kw), self.weight_init, fan_in, fan_out)}
        if self.bias:
            specs["bias"] = ((self.out_channels,), self.bias_init, fan_in, fan_out)
        return specs

    def get_config(self):
        return dict(out_channels=self.out_channels, kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), dilation=list(self.dilation), bias=self.bias,
                    weight_init=self._init_names[0], bias_init=self._init_names[1])

    def _geometry_args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

    def forward(self, x):
        self._require_params()
        y, cols = F.conv2d_forward(x, self.params["weight"], self.params.get("bias"), **self._geometry_args())
        self._cache = (x, cols)
        return y

    def backward(self, grad_y, *, input_grad: bool = True):
        x, cols = self._cached()
        grad_x, grad_w, grad_b = F.conv2d_backward(
            grad_y, x, self.params["weight"], bias=self.bias, cols=cols, input_grad=input_grad, **self._geometry_args()
        )
        self._set_grads(grad_w, grad_b)
        return grad_x

    def _plan(self, input_shape):
        w_shape = (self.out_channels, input_shape[0], *self.kernel_size)
        return conv2d_geometry((1, *input_shape), w_shape, self.stride, self.padding, self.dilation)

    def _forward(self, xp, x):
        y, cols = conv2d_kernel(xp, x, self.params["weight"], self.params.get("bias"), self._geometry)
        self._cache = (x, cols)
        return y

    def _backward(self, xp, grad_y, input_grad):
        x, cols = self._cached()
        grad_x, grad_w, grad_b = conv2d_backward_kernel(
            xp, grad_y, x, self.params["weight"], self._geometry, bias=self.bias, cols=cols, input_grad=input_grad
        )
        self._set_grads(grad_w, grad_b)
        return grad_x

    def _set_grads(self, grad_w, grad_b):
        self.grads = {"weight": grad_w} if grad_b is None else {"weight": grad_w, "bias": grad_b}


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ShapeError(f"padding: must be at most half the kernel size {self.kernel_size}, got {self.padding} (as PyTorch)")

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, f"{type(self).__name__} input_shape", "(C, H, W)", ndim=3)
        *_, (oh, ow) = pool_geometry((1, *input_shape), self.kernel_size, self.stride, self.padding,
                                     name=type(self).__name__)
        return (input_shape[0], oh, ow)

    def get_config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride), padding=list(self.padding))

    def _plan(self, input_shape):
        return pool_geometry((1, *input_shape), self.kernel_size, self.stride, self.padding, name=type(self).__name__)


class AvgPool2D(_Pool2D):
    """Average pooling (N, C, H, W) -> (N, C, OH, OW); stride defaults to the kernel size."""

    def forward(self, x):
        self._cache = (x,)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def backward(self, grad_y, *, input_grad: bool = True):
        (x,) = self._cached()
        return F.avg_pool2d_backward(grad_y, x, self.kernel_size, self.stride, self.padding)

    def _forward(self, xp, x):
        self._cache = (x,)
        return avg_pool2d_kernel(xp, x, self._geometry)

    def _backward(self, xp, grad_y, input_grad):
        (x,) = self._cached()
        return avg_pool2d_backward_kernel(xp, grad_y, x, self._geometry)


class MaxPool2D(_Pool2D):
    """Max pooling (N, C, H, W) -> (N, C, OH, OW); ties send the gradient to the first maximum."""

    def forward(self, x):
        y, taps = F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._cache = (x, y, taps)
        return y

    def backward(self, grad_y, *, input_grad: bool = True):
        x, y, taps = self._cached()
        return F.max_pool2d_backward(grad_y, x, self.kernel_size, self.stride, self.padding, y=y, taps=taps)

    def _forward(self, xp, x):
        y, taps = max_pool2d_kernel(xp, x, self._geometry)
        self._cache = (x, y, taps)
        return y

    def _backward(self, xp, grad_y, input_grad):
        x, y, taps = self._cached()
        return max_pool2d_backward_kernel(xp, grad_y, x, self._geometry, y, taps)


class Dense(Layer):
    """Fully connected ``y = x @ W + b``: (N, in) -> (N, units); W (in, units) as in the notebook."""

    def __init__(self, units: int, *, bias: bool = True, weight_init="he_normal", bias_init="zeros") -> None:
        super().__init__()
        self.units = positive_int(units, "units")
        _set_parameter_options(self, bias, weight_init, bias_init)

    def output_shape(self, input_shape):
        if hasattr(input_shape, "__len__") and len(input_shape) != 1:
            raise ShapeError(f"Dense input_shape: expected a flat input (features,), got {tuple(input_shape)}; put a Flatten() before it")
        sample_shape(input_shape, "Dense input_shape", "(features,)", ndim=1)
        return (self.units,)

    def _param_specs(self, input_shape):
        (fan_in,) = input_shape
        specs = {"weight": ((fan_in, self.units), self.weight_init, fan_in, self.units)}
        if self.bias:
            specs["bias"] = ((self.units,), self.bias_init, fan_in, self.units)
        return specs

    def get_config(self):
        return dict(units=self.units, bias=self.bias, weight_init=self._init_names[0], bias_init=self._init_names[1])

    def forward(self, x):
        self._require_params()
        self._cache = (x,)
        return F.linear(x, self.params["weight"], self.params.get("bias"))

    def backward(self, grad_y, *, input_grad: bool = True):
        (x,) = self._cached()
        grad_x, grad_w, grad_b = F.linear_backward(grad_y, x, self.params["weight"], bias=self.bias, input_grad=input_grad)
        self.grads = {"weight": grad_w} if grad_b is None else {"weight": grad_w, "bias": grad_b}
        return grad_x

    def _forward(self, xp, x):
        self._cache = (x,)
        return linear_kernel(xp, x, self.params["weight"], self.params.get("bias"))

    def _backward(self, xp, grad_y, input_grad):
        (x,) = self._cached()
        grad_x, grad_w, grad_b = linear_backward_kernel(xp, grad_y, x, self.params["weight"], bias=self.bias, input_grad=input_grad)
        self.grads = {"weight": grad_w} if grad_b is None else {"weight": grad_w, "bias": grad_b}
        return grad_x


class ReLU(Layer):
    """max(x, 0), any shape."""

    def forward(self, x):
        self._cache = (x,)
        return F.relu(x)

    def backward(self, grad_y, *, input_grad: bool = True):
        (x,) = self._cached()
        return F.relu_backward(grad_y, x)

    def _forward(self, xp, x):
        self._cache = (x,)
        return relu_kernel(xp, x)

    def _backward(self, xp, grad_y, input_grad):
        (x,) = self._cached()
        return relu_backward_kernel(xp, grad_y, x)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order (PyTorch's)."""

    def output_shape(self, input_shape):
        return (math.prod(sample_shape(input_shape, "Flatten input_shape", "(C, H, W) or (features,)")),)

    def forward(self, x):
        xp = namespace(x=x)
        if len(x.shape) < 2:
            raise ShapeError(f"Flatten: expected (N, ...) with at least 2 axes, got shape {tuple(x.shape)}")
        self._cache = (tuple(x.shape),)
        return xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def backward(self, grad_y, *, input_grad: bool = True):
        (shape,) = self._cached()
        xp = namespace(grad_y=grad_y)
        check_shape(grad_y, (shape[0], math.prod(shape[1:])), "grad_y", " (Flatten's output shape)")
        return xp.reshape(grad_y, shape)

    def _forward(self, xp, x):
        self._cache = (tuple(x.shape),)
        return xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def _backward(self, xp, grad_y, input_grad):
        (shape,) = self._cached()
        return xp.reshape(grad_y, shape)


LAYERS = {cls.__name__: cls for cls in (Conv2D, AvgPool2D, MaxPool2D, Dense, ReLU, Flatten)}
