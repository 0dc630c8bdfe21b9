"""Layers: parameters and buffers plus the functional ops, caching what backward needs.

A layer is built for one sample's shape (no batch axis) on a backend, with parameters drawn
from a host RNG. ``forward(x, training=False)`` checks the batch against the built shape, then
runs the layer's one body ``_forward``; ``backward(grad_y)`` checks the gradient, then runs
``_backward``, which fills ``grads`` (same keys as ``params``) and returns the input's gradient.
Sequential checks a batch once at its entry and calls the bodies directly: every later shape
follows from the built ones.

Writing your own layer: subclass :class:`Layer`, declare parameters in ``_param_specs``
(``{name: (shape, initialiser, fan_in, fan_out)}``) and override ``forward`` / ``backward``
(or, for the unchecked fast path, ``_forward`` / ``_backward``); ``get_config`` returns the
constructor arguments, and :func:`register` makes the class loadable from model files::

    @layers.register
    class Swish(layers.Layer):
        def forward(self, x, *, training=False):
            xp = xpcnn.namespace_of(x)
            s = 1 / (1 + xp.exp(-x))
            self._cache = (x, s)
            return x * s

        def backward(self, grad_y, *, input_grad=True):
            x, s = self._cached()
            return grad_y * (s + x * s * (1 - s))
"""

from __future__ import annotations

import inspect
import math
from collections.abc import MutableMapping
from typing import Any, NamedTuple

from . import init as initializers
from ._validate import check_array, check_float, check_shape, namespace, pair, positive_int, sample_shape
from .backend import Backend
from .errors import ArgumentError, ArgumentTypeError, DTypeError, LayerNotImplementedError, NotBuiltError, ShapeError
from .functional.activation import (
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
from .functional.conv import (
    conv2d_backward_kernel,
    conv2d_geometry,
    conv2d_kernel,
    conv_transpose2d_backward_kernel,
    conv_transpose2d_geometry,
    conv_transpose2d_kernel,
)
from .functional.conv_pool import conv2d_avg_pool2d_backward_kernel, conv2d_avg_pool2d_kernel, fuses
from .functional.dropout import dropout_mask_kernel
from .functional.linear import linear_backward_kernel, linear_kernel
from .functional.norm import batch_norm_backward_kernel, batch_norm_kernel
from .functional.pool import (
    avg_pool2d_backward_kernel,
    avg_pool2d_kernel,
    max_pool2d_backward_kernel,
    max_pool2d_kernel,
    pool_geometry,
    relu_max_pool2d_backward_kernel,
    relu_max_pool2d_kernel,
)


class Layer:
    """Base class: ``params`` / ``grads`` / ``buffers`` are dicts of arrays keyed by name
    ("weight", "bias", "running_mean")."""

    _public_forward = _public_backward = False
    _forward_takes_training = _backward_takes_input_grad = True

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.input_shape: tuple[int, ...] | None = None
        self._cache: tuple = ()

    # -- building
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample for one input sample of ``input_shape``."""
        return tuple(input_shape)

    def build(self, input_shape: tuple[int, ...], *, rng: Any, backend: Backend, dtype: str) -> tuple[int, ...]:
        """Create parameters and buffers for ``input_shape`` (C, H, W) or (F,) on ``backend``, drawn
        from the host ``numpy.random.Generator`` ``rng``; returns the output shape."""
        self.input_shape = tuple(input_shape)
        out = tuple(self.output_shape(self.input_shape))
        self._geometry = self._plan(self.input_shape)
        for name, (shape, init, fan_in, fan_out) in self._param_specs(self.input_shape).items():
            self.params[name] = backend.asarray(init(rng, shape, fan_in, fan_out), dtype=dtype)
        for name, (shape, init) in self._buffer_specs(self.input_shape).items():
            self.buffers[name] = backend.asarray(init(rng, shape, 0, 0), dtype=dtype)
        self.grads = {}
        self._cache = ()
        return out

    def _param_specs(self, input_shape) -> dict:
        """``{name: (shape, initialiser, fan_in, fan_out)}`` of the trainable parameters."""
        return {}

    def _buffer_specs(self, input_shape) -> dict:
        """``{name: (shape, initialiser)}`` of the non-trainable state saved with the model."""
        return {}

    def _plan(self, input_shape):
        """Shape-derived constants the kernels need (conv/pool geometry), fixed at build."""
        return None

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable): the architecture saved in model files."""
        return {}

    def get_state(self) -> dict:
        """JSON-able state that is neither a parameter nor a buffer (a dropout counter), saved
        in checkpoints so a resumed run continues exactly."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state` output."""

    # -- running: the public methods check, then run the one body
    def forward(self, x, *, training: bool = False):
        """Output for a batch ``x`` of the built input shape; ``training`` selects training-mode
        behaviour (dropout active, batch statistics)."""
        if not isinstance(training, bool):
            raise ArgumentTypeError(f"training: expected True or False, got {training!r:.80}")
        xp = self._check_batch(x)
        return self._forward(xp, x, training)

    def backward(self, grad_y, *, input_grad: bool = True):
        """Gradient of the input for ``grad_y`` of the last forward's output (fills ``grads``)."""
        xp = self._check_grad(grad_y)
        return self._backward(xp, grad_y, input_grad)

    def _forward(self, xp, x, training: bool):
        """The forward body on a batch already checked against the built input shape."""
        raise LayerNotImplementedError(f"{type(self).__name__}: a layer must override forward(x, *, training=False) (or _forward)")

    def _backward(self, xp, grad_y, input_grad: bool):
        """The backward body of the last :meth:`_forward`, grad_y of the built output shape."""
        raise LayerNotImplementedError(f"{type(self).__name__}: a layer must override backward(grad_y, *, input_grad=True) (or _backward)")

    def _fuses_with(self, following: Layer) -> bool:
        """Whether this layer and ``following`` run as one op in a container (:func:`_forward_chain`);
        a layer that says so has ``_forward_fused(xp, x, following, training)`` (the output of
        ``following``) and ``_backward_fused(xp, grad_y, input_grad)`` (the gradient of this
        layer's input). Each layer's own forward and backward keep working on their own."""
        return False

    def run_forward(self, xp, x, training: bool):
        """What a container calls on a checked batch: the body, or a user's public override."""
        if not self._public_forward:
            return self._forward(xp, x, training)
        return self.forward(x, training=training) if self._forward_takes_training else self.forward(x)

    def run_backward(self, xp, grad_y, input_grad: bool):
        """What a container calls in backward: the body, or a user's public override."""
        if not self._public_backward:
            return self._backward(xp, grad_y, input_grad)
        return self.backward(grad_y, input_grad=input_grad) if self._backward_takes_input_grad else self.backward(grad_y)

    def __call__(self, x, *, training: bool = False):
        return self.forward(x, training=training)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass that overrides the public forward/backward (a custom layer, or a built-in
        # layer extended by the user) is run through them; the built-ins through their bodies.
        cls._public_forward = cls.forward is not Layer.forward
        cls._public_backward = cls.backward is not Layer.backward
        cls._forward_takes_training = "training" in inspect.signature(cls.forward).parameters
        cls._backward_takes_input_grad = "input_grad" in inspect.signature(cls.backward).parameters

    # -- checks
    def _check_batch(self, x):
        """The namespace of a batch after checking it is an array of the layer's library, device,
        dtype and (once built) shape (N, *input_shape)."""
        check_array(x, "x")
        first = next(iter(self.params.values()), None)
        if self.input_shape is None:
            self._plan_unbuilt(tuple(x.shape[1:]))
        xp = namespace(x=x) if first is None else namespace(x=x, parameters=first)
        check_float(xp, "x", x)
        if first is not None and x.dtype != first.dtype:
            raise DTypeError(f"x: expected dtype {first.dtype} (the layer's parameters), got {x.dtype}")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape or len(x.shape) < 2:
            expected = "(N, ...)" if self.input_shape is None else f"(N, {', '.join(map(str, self.input_shape))}) (the built input shape)"
            raise ShapeError(f"x: expected shape {expected}, got {tuple(x.shape)}")
        return xp

    def _plan_unbuilt(self, sample):
        """A layer without parameters runs unbuilt, planned for each batch's shape; one with
        parameters needs build first."""
        try:
            needs_params = bool(self._param_specs(sample))
        except (ValueError, TypeError, IndexError):
            needs_params = True
        if needs_params:
            raise NotBuiltError(f"{type(self).__name__}: not built; build the model first (model.build(input_shape))")
        self._geometry = self._plan(sample)

    def _check_grad(self, grad_y):
        check_array(grad_y, "grad_y")
        if not self._cache:
            raise NotBuiltError(f"{type(self).__name__}.backward: call forward first (nothing cached)")
        xp = namespace(grad_y=grad_y)
        check_float(xp, "grad_y", grad_y)
        if self._out_shape is not None:
            check_shape(grad_y, self._out_shape, "grad_y", " (the last forward output's shape)")
        return xp

    @property
    def _out_shape(self):
        """Shape of the last forward output, recorded by the bodies that know it."""
        return getattr(self, "_last_out_shape", None)

    def _cached(self) -> tuple:
        if not self._cache:
            raise NotBuiltError(f"{type(self).__name__}.backward: call forward first (nothing cached)")
        return self._cache

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _remember_output(layer: Layer, y):
    layer._last_out_shape = tuple(y.shape)
    return y


def _init_name(init) -> Any:
    return init if isinstance(init, str) else getattr(init, "__name__", "custom")


def _set_parameter_options(layer: Layer, bias, weight_init, bias_init) -> None:
    """The options Conv2D and Dense share: whether to have a bias, and the initialisers
    (kept by name too, so the architecture can be saved without code)."""
    if not isinstance(bias, bool):
        raise ArgumentError(f"bias: expected True or False, got {bias!r}")
    layer.bias = bias
    layer.weight_init = initializers.get(weight_init, "weight_init")
    layer.bias_init = initializers.get(bias_init, "bias_init")
    layer._init_names = (_init_name(weight_init), _init_name(bias_init))


def _conv_padding(padding) -> Any:
    """``padding`` as "same" / "valid" or a pair of non-negative ints."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ArgumentError(f"padding: expected an int, a pair, 'same' or 'valid', got {padding!r}")
        return padding
    return pair(padding, "padding", minimum=0)


def _weight_and_bias(grad_w, grad_b) -> dict:
    """The grads dict of a layer whose bias is optional (None when it has none)."""
    return {"weight": grad_w} if grad_b is None else {"weight": grad_w, "bias": grad_b}


def _json_padding(padding) -> Any:
    return padding if isinstance(padding, str) else list(padding)


class _Conv(Layer):
    """What Conv2D and Conv2DTranspose share: the options, the weight's shape and fans, the
    output shape from the planned geometry and the gradients' bookkeeping. A subclass gives
    ``_weight_layout(c)`` (the weight shape for c input channels) and ``_plan``."""

    _name = ""

    def __init__(self, out_channels, kernel_size, stride, dilation, groups, bias, weight_init, bias_init) -> None:
        super().__init__()
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.groups = positive_int(groups, "groups")
        if self.out_channels % self.groups:
            raise ArgumentError(f"groups: must divide out_channels {self.out_channels}, got groups={self.groups}")
        _set_parameter_options(self, bias, weight_init, bias_init)

    def _weight_shape(self, c):
        if c % self.groups:
            raise ArgumentError(f"groups: must divide the input channels {c}, got groups={self.groups}")
        return self._weight_layout(c)

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, f"{self._name} input_shape", "(C, H, W)", ndim=3)
        oh, ow = self._plan(input_shape).out_hw
        return (self.out_channels, oh, ow)

    def _param_specs(self, input_shape):
        w_shape = self._weight_shape(input_shape[0])
        kh, kw = self.kernel_size
        # PyTorch's fans: weight.shape[1] * kh * kw in, weight.shape[0] * kh * kw out (for a
        # transposed conv its dim 1 is "in"); a grouped conv's fan out is per group.
        fan_in, fan_out = w_shape[1] * kh * kw, self._fan_out_channels(w_shape) * kh * kw
        specs = {"weight": (w_shape, self.weight_init, fan_in, fan_out)}
        if self.bias:
            specs["bias"] = ((self.out_channels,), self.bias_init, fan_in, fan_out)
        return specs

    def _config(self, **options):
        return dict(out_channels=self.out_channels, kernel_size=list(self.kernel_size), stride=list(self.stride),
                    **options, dilation=list(self.dilation), groups=self.groups, bias=self.bias,
                    weight_init=self._init_names[0], bias_init=self._init_names[1])



class Conv2D(_Conv):
    """2-D convolution (N, C, H, W) -> (N, out_channels, OH, OW); weight (out, C // groups, kh, kw)
    as ``torch.nn.Conv2d``; ``padding`` an int, a pair, "valid" or "same" (stride 1)."""

    _name = "Conv2D"

    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding=0, dilation=1, groups=1, bias: bool = True,
                 weight_init="he_normal", bias_init="zeros") -> None:
        super().__init__(out_channels, kernel_size, stride, dilation, groups, bias, weight_init, bias_init)
        self.padding = _conv_padding(padding)
        if self.padding == "same" and self.stride != (1, 1):
            raise ArgumentError(f"padding: 'same' needs stride 1 (as PyTorch), got stride {self.stride}")

    def _weight_layout(self, c):
        return (self.out_channels, c // self.groups, *self.kernel_size)

    def _fan_out_channels(self, w_shape):
        return self.out_channels // self.groups

    def _plan(self, input_shape):
        return conv2d_geometry((1, *input_shape), self._weight_shape(input_shape[0]), self.stride, self.padding,
                               self.dilation, self.groups)

    def get_config(self):
        return self._config(padding=_json_padding(self.padding))

    def _forward(self, xp, x, training):
        y, cols = conv2d_kernel(xp, x, self.params["weight"], self.params.get("bias"), self._geometry)
        self._cache = (x, cols)
        return _remember_output(self, y)

    def _backward(self, xp, grad_y, input_grad):
        cache = self._cached()
        # After a forward fused with the pool (a container's), this layer's own backward still
        # works: it rebuilds the full columns.
        x, cols = (cache.x, None) if isinstance(cache, _Pooled) else cache
        grad_x, grad_w, grad_b = conv2d_backward_kernel(
            xp, grad_y, x, self.params["weight"], self._geometry, bias=self.bias, cols=cols, input_grad=input_grad
        )
        self.grads = _weight_and_bias(grad_w, grad_b)
        return grad_x

    def _fuses_with(self, pool: Layer) -> bool:
        """Whether this conv and ``pool`` after it run as one op (:mod:`xpcnn.functional.conv_pool`):
        the built-in classes only (a subclass may change either), when it is exact."""
        return type(self) is Conv2D and type(pool) is AvgPool2D and "weight" in self.params and fuses(pool._geometry)

    def _forward_fused(self, xp, x, pool: AvgPool2D, training):
        """avg_pool2d(conv2d(x)) for this layer and ``pool``: the output of ``pool``. The conv's own
        output is never made; :meth:`_backward_fused` runs both backwards (each layer's own
        backward still works too)."""
        y, pooled = conv2d_avg_pool2d_kernel(xp, x, self.params["weight"], self.params.get("bias"), self._geometry,
                                             pool._geometry)
        self._cache = _Pooled(x, pooled, pool._geometry)
        self._last_out_shape = (x.shape[0], self.out_channels, *self._geometry.out_hw)
        pool._cache = (self._geometry.out_hw,)
        return _remember_output(pool, y)

    def _backward_fused(self, xp, grad_y, input_grad):
        """The gradient of this conv's input for grad_y of the pool's output; fills ``grads``."""
        cache = self._cached()
        if not isinstance(cache, _Pooled):
            raise NotBuiltError(f"{type(self).__name__}: the last forward did not run fused with a pool")
        grad_x, grad_w, grad_b = conv2d_avg_pool2d_backward_kernel(
            xp, grad_y, cache.x, self.params["weight"], self._geometry, cache.pool, bias=self.bias,
            pooled=cache.pooled, input_grad=input_grad
        )
        self.grads = _weight_and_bias(grad_w, grad_b)
        return grad_x


class _Pooled(NamedTuple):
    """What a Conv2D run fused with the AvgPool2D after it keeps for the backward."""

    x: Any
    pooled: Any  # the pooled im2col columns
    pool: Any  # the pool's geometry


class Conv2DTranspose(_Conv):
    """Transposed 2-D convolution (N, C, H, W) -> (N, out_channels, OH, OW), weight
    (C, out_channels // groups, kh, kw) as ``torch.nn.ConvTranspose2d``."""

    _name = "Conv2DTranspose"

    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                 bias: bool = True, weight_init="torch", bias_init="zeros") -> None:
        super().__init__(out_channels, kernel_size, stride, dilation, groups, bias, weight_init, bias_init)
        self.padding = pair(padding, "padding", minimum=0)
        self.output_padding = pair(output_padding, "output_padding", minimum=0)
        for a in range(2):
            if self.output_padding[a] >= max(self.stride[a], self.dilation[a]):
                raise ArgumentError(f"output_padding: must be smaller than stride or dilation (as PyTorch), got "
                                    f"output_padding {self.output_padding}, stride {self.stride}, dilation {self.dilation}")

    def _weight_layout(self, c):
        return (c, self.out_channels // self.groups, *self.kernel_size)

    def _fan_out_channels(self, w_shape):
        return w_shape[0]

    def _plan(self, input_shape):
        return conv_transpose2d_geometry((1, *input_shape), self._weight_shape(input_shape[0]), self.stride, self.padding,
                                         self.output_padding, self.dilation, self.groups)

    def get_config(self):
        return self._config(padding=list(self.padding), output_padding=list(self.output_padding))

    def _forward(self, xp, x, training):
        y = conv_transpose2d_kernel(xp, x, self.params["weight"], self.params.get("bias"), self._geometry)
        self._cache = (x,)
        return _remember_output(self, y)

    def _backward(self, xp, grad_y, input_grad):
        (x,) = self._cached()
        grad_x, grad_w, grad_b = conv_transpose2d_backward_kernel(
            xp, grad_y, x, self.params["weight"], self._geometry, bias=self.bias, input_grad=input_grad
        )
        self.grads = _weight_and_bias(grad_w, grad_b)
        return grad_x


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, *, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        if not isinstance(ceil_mode, bool):
            raise ArgumentError(f"ceil_mode: expected True or False, got {ceil_mode!r}")
        self.ceil_mode = ceil_mode
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ShapeError(f"padding: must be at most half the kernel size {self.kernel_size}, got {self.padding} (as PyTorch)")

    def _plan(self, input_shape):
        return pool_geometry((1, *input_shape), self.kernel_size, self.stride, self.padding, name=type(self).__name__,
                             ceil_mode=self.ceil_mode)

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, f"{type(self).__name__} input_shape", "(C, H, W)", ndim=3)
        oh, ow = self._plan(input_shape).out_hw
        return (input_shape[0], oh, ow)

    def get_config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride), padding=list(self.padding),
                    ceil_mode=self.ceil_mode)


class AvgPool2D(_Pool2D):
    """Average pooling (N, C, H, W) -> (N, C, OH, OW); stride defaults to the kernel size; padded
    zeros count in the average unless ``count_include_pad=False`` (PyTorch's meaning)."""

    def __init__(self, kernel_size, stride=None, padding=0, *, ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode=ceil_mode)
        if not isinstance(count_include_pad, bool):
            raise ArgumentError(f"count_include_pad: expected True or False, got {count_include_pad!r}")
        self.count_include_pad = count_include_pad

    def _plan(self, input_shape):
        return pool_geometry((1, *input_shape), self.kernel_size, self.stride, self.padding, name=type(self).__name__,
                             ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def get_config(self):
        return {**super().get_config(), "count_include_pad": self.count_include_pad}

    def _forward(self, xp, x, training):
        self._cache = (tuple(x.shape[2:]),)  # the backward needs only the input's (H, W)
        return _remember_output(self, avg_pool2d_kernel(xp, x, self._geometry))

    def _backward(self, xp, grad_y, input_grad):
        (size,) = self._cached()
        return avg_pool2d_backward_kernel(xp, grad_y, size, self._geometry)


class MaxPool2D(_Pool2D):
    """Max pooling (N, C, H, W) -> (N, C, OH, OW); ties send the gradient to the first maximum."""

    def _forward(self, xp, x, training):
        y, saved = max_pool2d_kernel(xp, x, self._geometry)
        self._cache = (x, y, saved)
        return _remember_output(self, y)

    def _backward(self, xp, grad_y, input_grad):
        cache = self._cached()
        if isinstance(cache, _AfterReLU):
            # The last forward ran fused with the ReLU before it, which never made this layer's
            # input: made here, for a caller of this layer's own backward.
            x = relu_kernel(xp, cache.x)
            y, saved = max_pool2d_kernel(xp, x, self._geometry)
        else:
            x, y, saved = cache
        return max_pool2d_backward_kernel(xp, grad_y, x, self._geometry, y, saved)


class _AfterReLU(NamedTuple):
    """A MaxPool2D's cache after a forward fused with the ReLU before it: the ReLU's input."""

    x: Any


class GlobalAvgPool2D(Layer):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C)."""

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, "GlobalAvgPool2D input_shape", "(C, H, W)", ndim=3)
        return (input_shape[0],)

    def _forward(self, xp, x, training):
        if len(x.shape) != 4:
            raise ShapeError(f"x: expected (N, C, H, W), got shape {tuple(x.shape)}")
        self._cache = (tuple(x.shape),)
        return _remember_output(self, xp.mean(x, axis=(2, 3)))

    def _backward(self, xp, grad_y, input_grad):
        (shape,) = self._cached()
        n, c, h, w = shape
        return xp.broadcast_to(xp.reshape(grad_y / (h * w), (n, c, 1, 1)), shape)


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

    def _forward(self, xp, x, training):
        self._cache = (x,)
        return _remember_output(self, linear_kernel(xp, x, self.params["weight"], self.params.get("bias")))

    def _backward(self, xp, grad_y, input_grad):
        (x,) = self._cached()
        grad_x, grad_w, grad_b = linear_backward_kernel(xp, grad_y, x, self.params["weight"], bias=self.bias, input_grad=input_grad)
        self.grads = _weight_and_bias(grad_w, grad_b)
        return grad_x


class _Elementwise(Layer):
    """Activations: any shape, output shape = input shape. A subclass names its kernel pair and
    whether the backward takes the input x or the output y (cheaper for tanh and sigmoid)."""

    _kernel = _gradient = None  # staticmethods: kernel(xp, x, *options), gradient(xp, grad_y, saved, *options)
    _from_output = False

    def _options(self) -> tuple:
        return ()

    def _forward(self, xp, x, training):
        self._last_out_shape = tuple(x.shape)
        y = self._kernel(xp, x, *self._options())
        self._cache = (y if self._from_output else x,)
        return y

    def _backward(self, xp, grad_y, input_grad):
        (saved,) = self._cached()
        return self._gradient(xp, grad_y, saved, *self._options())


class ReLU(_Elementwise):
    """max(x, 0)."""

    _kernel, _gradient = staticmethod(relu_kernel), staticmethod(relu_backward_kernel)

    def _fuses_with(self, pool: Layer) -> bool:
        """ReLU then MaxPool2D run as max pooling then ReLU on the pooled values (they commute:
        both are monotone), the built-in classes only."""
        return type(self) is ReLU and type(pool) is MaxPool2D

    def _forward_fused(self, xp, x, pool: MaxPool2D, training):
        """relu(max_pool2d(x)): the output of ``pool``; the ReLU runs on the pooled values only."""
        y, pooled, saved = relu_max_pool2d_kernel(xp, x, pool._geometry)
        self._last_out_shape = tuple(x.shape)
        self._cache = _ReLUPooled(x, pool._geometry, pooled, saved)
        pool._cache = _AfterReLU(x)
        return _remember_output(pool, y)

    def _backward_fused(self, xp, grad_y, input_grad):
        """The gradient of this layer's input for grad_y of the pool's output."""
        cache = self._cached()
        if not isinstance(cache, _ReLUPooled):
            raise NotBuiltError(f"{type(self).__name__}: the last forward did not run fused with a pool")
        return relu_max_pool2d_backward_kernel(xp, grad_y, cache.x, cache.pool, cache.pooled, cache.saved)

    def _backward(self, xp, grad_y, input_grad):
        cache = self._cached()
        x = cache.x if isinstance(cache, _ReLUPooled) else cache[0]
        return relu_backward_kernel(xp, grad_y, x)


class _ReLUPooled(NamedTuple):
    """What a ReLU run fused with the MaxPool2D after it keeps for the backward."""

    x: Any
    pool: Any  # the pool's geometry
    pooled: Any  # max_pool2d(x), before the ReLU
    saved: Any  # the window taps of x


class LeakyReLU(_Elementwise):
    """x for x > 0, negative_slope * x otherwise (``torch.nn.LeakyReLU``)."""

    _kernel, _gradient = staticmethod(leaky_relu_kernel), staticmethod(leaky_relu_backward_kernel)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) or not math.isfinite(negative_slope):
            raise ArgumentError(f"negative_slope: expected a finite real number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def get_config(self):
        return {"negative_slope": self.negative_slope}

    def _options(self):
        return (self.negative_slope,)


class Tanh(_Elementwise):
    """tanh(x); backward from the output: 1 - y²."""

    _kernel, _gradient, _from_output = staticmethod(tanh_kernel), staticmethod(tanh_backward_kernel), True


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)); backward from the output: y (1 - y)."""

    _kernel, _gradient, _from_output = staticmethod(sigmoid_kernel), staticmethod(sigmoid_backward_kernel), True


class GELU(_Elementwise):
    """GELU with PyTorch's ``approximate="tanh"``: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))."""

    _kernel, _gradient = staticmethod(gelu_kernel), staticmethod(gelu_backward_kernel)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order (PyTorch's)."""

    def output_shape(self, input_shape):
        return (math.prod(sample_shape(input_shape, "Flatten input_shape", "(C, H, W) or (features,)")),)

    def _forward(self, xp, x, training):
        self._cache = (tuple(x.shape),)
        self._last_out_shape = (x.shape[0], math.prod(x.shape[1:]))
        return xp.reshape(x, self._last_out_shape)

    def _backward(self, xp, grad_y, input_grad):
        (shape,) = self._cached()
        return xp.reshape(grad_y, shape)


class _BatchNorm(Layer):
    """Batch normalisation over the channel axis 1, PyTorch semantics: training mode normalises
    with the biased batch variance and moves the running statistics toward the batch's (the
    running variance takes the unbiased one); inference mode uses the running statistics.
    Params "weight" (ones), "bias" (zeros); buffers "running_mean" (zeros), "running_var" (ones)."""

    _layout, _ndim = "", 0

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        for name, value in (("momentum", momentum), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ArgumentError(f"{name}: expected a finite real number, got {value!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ArgumentError(f"momentum: expected a value in [0, 1], got {momentum!r}")
        if eps <= 0:
            raise ArgumentError(f"eps: expected a value > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)

    def output_shape(self, input_shape):
        return sample_shape(input_shape, f"{type(self).__name__} input_shape", self._layout, ndim=self._ndim)

    def _param_specs(self, input_shape):
        c = input_shape[0]
        return {"weight": ((c,), initializers.ones, c, c), "bias": ((c,), initializers.zeros, c, c)}

    def _buffer_specs(self, input_shape):
        c = input_shape[0]
        return {"running_mean": ((c,), initializers.zeros), "running_var": ((c,), initializers.ones)}

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}

    def _forward(self, xp, x, training):
        if training and math.prod(x.shape) == x.shape[1]:
            raise ShapeError(f"x: {type(self).__name__} in training mode needs more than 1 value per channel, "
                             f"got shape {tuple(x.shape)} (as PyTorch); use a batch of 2 or more, or inference mode")
        y, saved, mean, var = batch_norm_kernel(xp, x, self.params["weight"], self.params["bias"], self.buffers["running_mean"],
                                                self.buffers["running_var"], training=training, momentum=self.momentum, eps=self.eps)
        self.buffers["running_mean"], self.buffers["running_var"] = mean, var
        self._cache = (x, saved, training)
        return _remember_output(self, y)

    def _backward(self, xp, grad_y, input_grad):
        x, saved, training = self._cached()
        grad_x, grad_w, grad_b = batch_norm_backward_kernel(xp, grad_y, x, self.params["weight"], saved, training=training, bias=True)
        self.grads = {"weight": grad_w, "bias": grad_b}
        return grad_x


class BatchNorm2D(_BatchNorm):
    """BatchNorm over (N, C, H, W), statistics per channel over N, H, W (``torch.nn.BatchNorm2d``)."""

    _layout, _ndim = "(C, H, W)", 3


class BatchNorm1D(_BatchNorm):
    """BatchNorm over (N, F), statistics per feature over N (``torch.nn.BatchNorm1d``)."""

    _layout, _ndim = "(F,)", 1


class Dropout(Layer):
    """Inverted dropout: in training mode each value is zeroed with probability ``p`` and the rest
    scaled by 1/(1-p); identity in inference mode. Masks come from a counter-based generator
    keyed by ``seed`` (given, or derived from the model's build seed and the layer's position)
    and a counter that advances once per training forward, so the same seed gives the same
    masks on every backend and a resumed run continues the same sequence."""

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ArgumentError(f"p: expected a probability in [0, 1), got {p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ArgumentError(f"seed: expected a non-negative int or None, got {seed!r}")
        self.p, self.seed, self.counter = float(p), seed, 0
        self._derived_seed = 0
        self._traced_keys = None

    def get_config(self):
        return {"p": self.p, "seed": self.seed}

    def get_state(self):
        return {"counter": self.counter, "seed": self.key}

    def set_state(self, state):
        counter, seed = state.get("counter"), state.get("seed")
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
            raise ArgumentError(f"state['counter']: expected a non-negative int, got {counter!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ArgumentError(f"state['seed']: expected a non-negative int, got {seed!r}")
        self.counter, self._derived_seed = counter, seed

    @property
    def key(self) -> int:
        return self.seed if self.seed is not None else self._derived_seed

    def _forward(self, xp, x, training):
        self._last_out_shape = tuple(x.shape)
        if not training or self.p == 0.0:
            self._cache = (None,)
            return x
        mask = dropout_mask_kernel(xp, x, self.p, self.key, self.counter, keys=self._traced_keys)
        if self._traced_keys is None:  # a compiled step passes the keys in and advances the counter itself
            self.counter += 1
        self._cache = (mask,)
        return x * mask

    def _backward(self, xp, grad_y, input_grad):
        (mask,) = self._cached()
        return grad_y if mask is None else grad_y * mask


class _Nested(MutableMapping):
    """One flat dict over the ``attr`` dicts of a list of (prefix, layer): ``"block.0.weight"``.
    Optimizers rebind ``layer.params[key]``; this sends the write to the sublayer."""

    def __init__(self, owner: Residual, attr: str) -> None:
        self._owner, self._attr = owner, attr

    def _slots(self):
        for prefix, layer in self._owner.sublayers():
            for name in getattr(layer, self._attr):
                yield f"{prefix}.{name}", layer, name

    def _find(self, key):
        prefix, _, name = key.rpartition(".")
        layer = self._owner.sublayer(prefix)
        if layer is None:
            raise KeyError(key)
        return layer, name

    def __getitem__(self, key):
        layer, name = self._find(key)
        return getattr(layer, self._attr)[name]

    def __setitem__(self, key, value):
        layer, name = self._find(key)
        getattr(layer, self._attr)[name] = value

    def __delitem__(self, key):
        layer, name = self._find(key)
        del getattr(layer, self._attr)[name]

    def __iter__(self):
        return (key for key, _, _ in self._slots())

    def __len__(self):
        return sum(1 for _ in self._slots())


class Residual(Layer):
    """``y = block(x) + shortcut(x)``: ``block`` and ``shortcut`` are lists of layers, ``None`` the
    identity. Parameters are named ``"block.<i>.<name>"`` / ``"shortcut.<i>.<name>"``."""

    def __init__(self, block, shortcut=None) -> None:
        super().__init__()
        self.block = self._layer_list(block, "block")
        self.shortcut = [] if shortcut is None else self._layer_list(shortcut, "shortcut")
        self.params = _Nested(self, "params")
        self.grads = _Nested(self, "grads")
        self.buffers = _Nested(self, "buffers")

    @staticmethod
    def _layer_list(layers, name):
        if isinstance(layers, Layer) or isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise DTypeError(f"{name}: expected a list of xpcnn layers, got {type(layers).__name__}")
        layers = list(layers)
        if name == "block" and not layers:
            raise ShapeError("block: expected at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise DTypeError(f"{name}[{i}]: expected an xpcnn layer, got {type(layer).__name__}")
        return layers

    def sublayers(self):
        return [(f"block.{i}", layer) for i, layer in enumerate(self.block)] + \
               [(f"shortcut.{i}", layer) for i, layer in enumerate(self.shortcut)]

    def sublayer(self, prefix):
        branch, _, index = prefix.partition(".")
        layers = {"block": self.block, "shortcut": self.shortcut}.get(branch)
        if layers is None or not index.isdigit() or int(index) >= len(layers):
            return None
        return layers[int(index)]

    def _branch_shape(self, layers, shape):
        for layer in layers:
            shape = tuple(layer.output_shape(shape))
        return shape

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        out = self._branch_shape(self.block, input_shape)
        other = self._branch_shape(self.shortcut, input_shape)
        if out != other:
            raise ShapeError(f"Residual: block output {out} and shortcut output {other} differ for input {input_shape}; "
                             "add a shortcut (e.g. a 1x1 Conv2D with the block's stride) that matches the block")
        return out

    def build(self, input_shape, *, rng, backend, dtype):
        self.input_shape = tuple(input_shape)
        out = self.output_shape(self.input_shape)
        for branch in (self.block, self.shortcut):
            shape = self.input_shape
            for layer in branch:
                shape = layer.build(shape, rng=rng, backend=backend, dtype=dtype)
        self._cache = ()
        return out

    def _param_specs(self, input_shape):
        return self._specs(input_shape, "_param_specs")

    def _buffer_specs(self, input_shape):
        return self._specs(input_shape, "_buffer_specs")

    def _specs(self, input_shape, method):
        specs = {}
        for prefix, branch in (("block", self.block), ("shortcut", self.shortcut)):
            shape = tuple(input_shape)
            for i, layer in enumerate(branch):
                for name, spec in getattr(layer, method)(shape).items():
                    specs[f"{prefix}.{i}.{name}"] = spec
                shape = tuple(layer.output_shape(shape))
        return specs

    def get_config(self):
        def describe(layers):
            return [{"type": type(layer).__name__, "config": layer.get_config()} for layer in layers]

        return {"block": describe(self.block), "shortcut": describe(self.shortcut) if self.shortcut else None}

    @classmethod
    def from_config(cls, config):
        return cls(layers_from_config(config.get("block"), "block"),
                   None if config.get("shortcut") is None else layers_from_config(config["shortcut"], "shortcut"))

    def get_state(self):
        states = {prefix: layer.get_state() for prefix, layer in self.sublayers()}
        return {k: v for k, v in states.items() if v}

    def set_state(self, state):
        for prefix, sub in state.items():
            layer = self.sublayer(prefix)
            if layer is None:
                raise ArgumentError(f"state: {prefix!r} is not a sublayer of this Residual")
            layer.set_state(sub)

    def _forward(self, xp, x, training):
        y, fused_block = _forward_chain(xp, self.block, x, training)
        s, fused_shortcut = _forward_chain(xp, self.shortcut, x, training)
        self._cache = (fused_block, fused_shortcut)
        return _remember_output(self, y + s)

    def _backward(self, xp, grad_y, input_grad):
        fused_block, fused_shortcut = self._cached()
        return (_backward_chain(xp, self.block, grad_y, True, fused_block)
                + _backward_chain(xp, self.shortcut, grad_y, True, fused_shortcut))

    def __repr__(self) -> str:
        return f"Residual(block={self.block!r}, shortcut={self.shortcut or None!r})"


def _forward_chain(xp, layers, x, training: bool) -> tuple[Any, tuple[int, ...]]:
    """Run ``layers`` in order on a checked batch -> (output, the indices of the layers run fused
    with the layer after them: Conv2D then AvgPool2D, ReLU then MaxPool2D; see
    :meth:`Layer._fuses_with`). What every container (Sequential, Residual) calls."""
    fused = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if i + 1 < len(layers) and layer._fuses_with(layers[i + 1]):
            x = layer._forward_fused(xp, x, layers[i + 1], training)
            fused.append(i)
            i += 2
        else:
            x = layer.run_forward(xp, x, training)
            i += 1
    return x, tuple(fused)


def _backward_chain(xp, layers, grad_y, input_grad: bool, fused: tuple[int, ...]):
    """Back-propagate through ``layers`` after :func:`_forward_chain` (``fused`` is what it returned);
    the first layer's input gradient only when ``input_grad``."""
    i = len(layers) - 1
    while i >= 0:
        if i - 1 in fused:
            grad_y = layers[i - 1]._backward_fused(xp, grad_y, input_grad or i > 1)
            i -= 2
        else:
            grad_y = layers[i].run_backward(xp, grad_y, input_grad or i > 0)
            i -= 1
    return grad_y


def _walk(layers):
    """(path, layer) for every layer and nested sublayer (Residual branches), depth first:
    ``"3"``, ``"3.block.0"``."""
    for i, layer in enumerate(layers):
        yield from _walk_one(layer, str(i))


def _walk_one(layer: Layer, path: str):
    yield path, layer
    for sub_path, sub in layer.sublayers() if hasattr(layer, "sublayers") else ():
        yield from _walk_one(sub, f"{path}.{sub_path}")


LAYERS: dict[str, type] = {}


def register(cls: type) -> type:
    """Make a :class:`Layer` subclass loadable from model files by its class name (usable as a
    decorator). Its ``get_config()`` must return its constructor's keyword arguments."""
    if not isinstance(cls, type) or not issubclass(cls, Layer):
        raise ArgumentError(f"cls: expected a subclass of xpcnn.layers.Layer, got {cls!r}")
    known = LAYERS.get(cls.__name__)
    if known is not None and known is not cls:
        raise ArgumentError(f"cls: a different layer class named {cls.__name__!r} is already registered")
    LAYERS[cls.__name__] = cls
    return cls


for _cls in (Conv2D, Conv2DTranspose, AvgPool2D, MaxPool2D, GlobalAvgPool2D, Dense, ReLU, LeakyReLU, Tanh, Sigmoid, GELU,
             Flatten, BatchNorm2D, BatchNorm1D, Dropout, Residual):
    register(_cls)


def layer_from_config(spec: Any, where: str) -> Layer:
    """One layer from ``{"type": name, "config": {...}}``; anything malformed is an ArgumentError
    naming ``where`` (the config may come from a file written by someone else)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if not isinstance(kind, str) or kind not in LAYERS:
        raise ArgumentError(f"{where}: unknown layer type {kind!r}; known: {', '.join(LAYERS)} "
                            "(register custom layers with xpcnn.layers.register)")
    kwargs = spec.get("config", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ArgumentError(f"{where}.config: expected a dict of arguments, got {type(kwargs).__name__}")
    cls = LAYERS[kind]
    try:
        return cls.from_config(kwargs) if hasattr(cls, "from_config") else cls(**kwargs)
    except (ArgumentError, ShapeError, DTypeError):
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ArgumentError(f"{where} ({kind}): invalid arguments {kwargs!r:.200}: {e}") from None


def layers_from_config(specs: Any, where: str) -> list[Layer]:
    if not isinstance(specs, list) or not specs:
        raise ArgumentError(f"{where}: expected a non-empty list of layer configs, got {type(specs).__name__}")
    return [layer_from_config(spec, f"{where}[{i}]") for i, spec in enumerate(specs)]
