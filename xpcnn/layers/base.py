"""The layer contract: parameters and buffers, ``forward(x, training)`` and ``backward(grad_y)``.

A layer is built for one sample's shape (no batch axis) on a backend, with its parameters drawn
from a host RNG. Everything a layer (built-in or yours) uses is public:

- ``param_specs(input_shape)`` / ``buffer_specs(input_shape)`` declare what :meth:`Layer.build`
  creates: ``{name: Param(shape, init, fan_in, fan_out)}`` and ``{name: Buffer(shape, init)}``.
- ``forward(x, training=False)`` returns the output and keeps what the backward needs with
  ``self.save_for_backward(...)``.
- ``backward(grad_y)`` reads ``self.saved``, sets ``self.grads[name]`` for every parameter and
  returns the input's gradient (or None when ``self.needs_input_grad`` is False: the container
  says so for a network's first layer, whose input is data).
- ``get_config()`` returns the constructor's keyword arguments; :func:`register` makes the class
  loadable from model files by its name.

Containers (:mod:`xpcnn.layers.containers`) check a batch once at their entry and call
``forward`` / ``backward`` directly; calling a layer on its own (``layer(x)``) checks the batch
first.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from typing import Any, NamedTuple

from .. import init as initializers
from .._validate import check_array, check_float, conv_padding, flag, namespace
from ..backend import Backend
from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    DTypeError,
    LayerNotImplementedError,
    NotBuiltError,
    ShapeError,
)

# False inside ``inference()``: forwards keep nothing for a backward. A context variable, so
# another thread's or task's training is untouched.
_KEEPS_SAVED = contextvars.ContextVar("xpcnn_keeps_saved", default=True)


@contextlib.contextmanager
def inference():
    """Inside this block ``save_for_backward`` keeps nothing (as ``torch.inference_mode``): each
    activation is freed once the next layer has read it, and no backward can follow."""
    token = _KEEPS_SAVED.set(False)
    try:
        yield
    finally:
        _KEEPS_SAVED.reset(token)


class Param(NamedTuple):
    """A trainable parameter's declaration: ``init(rng, shape, fan_in, fan_out)`` draws it."""

    shape: tuple
    init: Any
    fan_in: int = 0
    fan_out: int = 0


class Buffer(NamedTuple):
    """A saved, non-trainable array's declaration (BatchNorm's running statistics)."""

    shape: tuple
    init: Any


class Layer:
    """Base class: ``params`` / ``grads`` / ``buffers`` are dicts of arrays keyed by name
    ("weight", "bias", "running_mean"); ``input_shape`` is one sample's shape once built."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.input_shape: tuple[int, ...] | None = None
        self.geometry: Any = None
        self.needs_input_grad = True
        self.saved_values: tuple = ()

    # -- declaring
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample for one input sample of ``input_shape``."""
        return tuple(input_shape)

    def param_specs(self, input_shape: tuple[int, ...]) -> dict[str, Param]:
        """``{name: Param(shape, init, fan_in, fan_out)}`` of the trainable parameters."""
        return {}

    def buffer_specs(self, input_shape: tuple[int, ...]) -> dict[str, Buffer]:
        """``{name: Buffer(shape, init)}`` of the non-trainable arrays saved with the model."""
        return {}

    def plan(self, input_shape: tuple[int, ...]) -> Any:
        """Shape-derived constants the kernels need (conv / pool geometry), kept as ``geometry``."""
        return None

    def build(self, input_shape: tuple[int, ...], *, rng: Any, backend: Backend, dtype: str) -> tuple[int, ...]:
        """Create parameters and buffers for ``input_shape`` (C, H, W) or (F,) on ``backend``, drawn
        from the host ``numpy.random.Generator`` ``rng``; returns the output shape."""
        self.input_shape = tuple(input_shape)
        out = tuple(self.output_shape(self.input_shape))
        self.geometry = self.plan(self.input_shape)
        # The dicts are updated, not replaced: a fused form built over this layer shares them.
        self.params.clear()
        self.buffers.clear()
        self.grads.clear()
        for name, spec in self.param_specs(self.input_shape).items():
            shape, init, fan_in, fan_out = Param(*spec)
            self.params[name] = backend.asarray(init(rng, shape, fan_in, fan_out), dtype=dtype)
        for name, spec in self.buffer_specs(self.input_shape).items():
            shape, init = Buffer(*spec)
            self.buffers[name] = backend.asarray(init(rng, shape, 0, 0), dtype=dtype)
        self.saved_values = ()
        return out

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable): the architecture saved in model files."""
        return {}

    def get_state(self) -> dict:
        """JSON-able state that is neither a parameter nor a buffer (a dropout counter), saved
        in checkpoints so a resumed run continues exactly."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state` output."""

    # -- running
    def forward(self, x, training: bool = False):
        """Output for a batch ``x`` (N, *input_shape); ``training`` selects training-mode behaviour
        (dropout active, batch statistics). Keeps what backward needs (``save_for_backward``)."""
        raise LayerNotImplementedError(f"{type(self).__name__}: a layer must override forward(x, training=False)")

    def backward(self, grad_y):
        """Gradient of the input for ``grad_y`` of the last forward's output; sets ``grads``."""
        raise LayerNotImplementedError(f"{type(self).__name__}: a layer must override backward(grad_y)")

    def save_for_backward(self, *values) -> None:
        """Keep ``values`` (arrays, shapes) from a forward for the backward: ``self.saved``
        (nothing inside :func:`inference`)."""
        self.saved_values = values if _KEEPS_SAVED.get() else ()

    @property
    def saved(self) -> tuple:
        """What the last forward kept (:meth:`save_for_backward`)."""
        if not self.saved_values:
            raise NotBuiltError(f"{type(self).__name__}.backward: call forward first (nothing saved)")
        return self.saved_values

    def __call__(self, x, training: bool = False):
        """``forward`` after checking ``x``: an array of the parameters' library, device, dtype and
        the built sample shape. A layer without parameters runs unbuilt, planned for ``x``."""
        if not isinstance(training, bool):
            raise ArgumentTypeError(f"training: expected True or False, got {training!r:.80}")
        check_array(x, "x")
        nested = self.named_parameters() if hasattr(self, "named_parameters") else []  # a container's are its layers'
        first = next(iter(self.params.values()), None) if not nested else nested[0][1].params[nested[0][2]]
        if self.input_shape is None:
            if self.needs_build(tuple(x.shape[1:])):
                raise NotBuiltError(f"{type(self).__name__}: not built; build the model first "
                                    "(model.build(input_shape))")
            self.geometry = self.plan(tuple(x.shape[1:]))
        xp = namespace(x=x) if first is None else namespace(x=x, parameters=first)
        check_float(xp, "x", x)
        if first is not None and x.dtype != first.dtype:
            raise DTypeError(f"x: expected dtype {first.dtype} (the layer's parameters), got {x.dtype}")
        if len(x.shape) < 2 or self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            expected = "(N, ...)" if self.input_shape is None else f"(N, {', '.join(map(str, self.input_shape))})"
            raise ShapeError(f"x: expected shape {expected}, got {tuple(x.shape)}")
        return self.forward(x, training=training)

    def needs_build(self, sample) -> bool:
        """Whether the layer has parameters for samples of shape ``sample`` (or cannot say for
        it): then it runs only once built."""
        try:
            return bool(self.param_specs(sample))
        except (ValueError, TypeError, IndexError):
            return True

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------- options several layers share


def init_name(init) -> Any:
    """An initialiser's name as saved in the config: a registered one's key (for its function
    too), a custom callable by its function name (which a model file cannot rebuild)."""
    if isinstance(init, str):
        return init
    return next((k for k, f in initializers.INITIALIZERS.items() if f is init), getattr(init, "__name__", "custom"))


def padding_spec(padding, kernel, stride, dilation, *, strings: bool) -> Any:
    """``padding`` in the form it was given (kept for the config): "same" / "valid" (``strings``),
    (ph, pw) or ((top, bottom), (left, right)); checked by :func:`conv_padding`."""
    sides = conv_padding(padding, kernel, stride, dilation, strings=strings)
    if isinstance(padding, str):
        return padding
    nested = isinstance(padding, (tuple, list)) and all(isinstance(p, (tuple, list)) for p in padding)
    return sides if nested else (sides[0][0], sides[1][0])


def json_padding(padding) -> Any:
    if isinstance(padding, str):
        return padding
    return [list(p) if isinstance(p, tuple) else p for p in padding]


def weight_and_bias(layer: Layer, grad_w, grad_b) -> None:
    """Set a layer's weight (and bias, when it has one) gradients."""
    layer.grads["weight"] = grad_w
    if grad_b is not None:
        layer.grads["bias"] = grad_b


def parameter_options(bias, weight_init, bias_init) -> tuple:
    """(bias, weight initialiser, bias initialiser, their names) for Conv2D and Dense."""
    flag(bias, "bias")
    return (bias, initializers.get(weight_init, "weight_init"), initializers.get(bias_init, "bias_init"),
            (init_name(weight_init), init_name(bias_init)))


# ---------------------------------------------------------------- the registry

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


def check_config_complete(layer: Layer, where: str) -> None:
    """Refuse to save (or pickle) a layer that could not come back as it is: a class not
    registered, or a constructor taking arguments its ``get_config`` does not return (it would
    come back with the defaults)."""
    required = [p.name for p in list(inspect.signature(type(layer).__init__).parameters.values())[1:]
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required and type(layer).get_config is Layer.get_config:
        raise ArgumentError(f"{where} ({type(layer).__name__}): its constructor takes {', '.join(required)} but it "
                            "defines no get_config(), so a saved model would reload it with the defaults; define "
                            "get_config() returning those arguments")
    for argument, name in zip(("weight_init", "bias_init"), getattr(layer, "init_names", ())):
        if name not in initializers.INITIALIZERS:
            raise ArgumentError(f"{where} ({type(layer).__name__}): its {argument} is a function ({name}) a model file "
                                f"cannot name; build with a named one ({', '.join(initializers.INITIALIZERS)}), then "
                                "set_weights(...) the values you want")
    if LAYERS.get(type(layer).__name__) is not type(layer):
        raise ArgumentError(f"{where} ({type(layer).__name__}): its class is not registered, so a saved model could "
                            "not rebuild it; decorate the class with @xpcnn.layers.register")


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


def describe(layer: Layer) -> dict:
    """``{"type": name, "config": ...}``: one layer as model files store it."""
    return {"type": type(layer).__name__, "config": layer.get_config()}
