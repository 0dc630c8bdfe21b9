"""Sequential: a stack of layers with build, forward, backward and a training step."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from . import functional as F
from .backend import Backend, current_backend, dtype_name, namespace_of, resolve_target, to_device, to_numpy
from .errors import ArgumentError, DataError, DTypeError, NotBuiltError, ShapeError, XpcnnError
from .functional._checks import check_array, namespace, sample_shape
from .layers import LAYERS, Layer


class Sequential:
    """Layers applied in order. Build it for one sample's shape ``(C, H, W)``, then call it on
    batches ``(N, C, H, W)`` of the same backend, device and dtype as its parameters."""

    def __init__(self, layers: Iterable[Layer]) -> None:
        if isinstance(layers, Layer) or not hasattr(layers, "__iter__"):
            raise DTypeError(f"layers: expected a list of xpcnn layers such as [layers.Flatten(), layers.Dense(10)], got {type(layers).__name__}")
        self.layers = list(layers)
        if not self.layers:
            raise ShapeError("layers: expected at least one layer, got an empty list")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise DTypeError(f"layers[{i}]: expected an xpcnn layer (e.g. layers.Conv2D), got {type(layer).__name__}")
        self.input_shape: tuple[int, ...] | None = None
        self.backend: Backend | None = None
        self.dtype: str | None = None

    # ---------------------------------------------------------------- building

    def build(self, input_shape, *, seed: int = 0, dtype: str = "float32", backend: str | Backend | None = None) -> "Sequential":
        """Create every parameter for samples of ``input_shape`` (C, H, W), drawn from
        ``numpy.random.default_rng(seed)`` on the host, on the selected backend (or ``backend``)."""
        if not isinstance(dtype, str) or dtype not in ("float32", "float64"):
            raise DTypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        shape = sample_shape(input_shape, "input_shape", "such as (1, 28, 28)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ArgumentError(f"seed: expected a non-negative int, got {seed!r}")
        target = current_backend() if backend is None else resolve_target(backend)
        rng = np.random.default_rng(seed)
        out = tuple(int(s) for s in shape)
        for layer in self.layers:
            out = layer.build(out, rng=rng, backend=target, dtype=dtype)
        self.input_shape = tuple(int(s) for s in shape)
        self.output_shape = out
        self.backend, self.dtype = target, dtype
        return self

    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def _require_built(self) -> None:
        if not self.built:
            raise NotBuiltError("model: not built; call model.build((C, H, W)) first")

    def named_parameters(self) -> list[tuple[str, Layer, str]]:
        """(key, layer, name) for every parameter, in layer order; key is ``"<index>.<name>"``."""
        return [(f"{i}.{name}", layer, name) for i, layer in enumerate(self.layers) for name in layer.params]

    def get_weights(self) -> list:
        """Parameters in layer order (weight before bias), as arrays of the model's backend."""
        return [layer.params[name] for _, layer, name in self.named_parameters()]

    def set_weights(self, weights) -> None:
        """Replace every parameter. Arrays of any backend (or NumPy / nested lists) are
        cast to the model's dtype and moved to its backend: this is an explicit API edge."""
        self._require_built()
        slots = self.named_parameters()
        if isinstance(weights, (str, bytes, dict)) or not hasattr(weights, "__iter__"):
            raise DTypeError(f"weights: expected a list of {len(slots)} arrays (as get_weights() returns), got {type(weights).__name__}")
        weights = list(weights)
        if len(weights) != len(slots):
            raise ShapeError(f"weights: expected {len(slots)} arrays ({', '.join(k for k, _, _ in slots)}), got {len(weights)}")
        new = []
        for (key, layer, name), w in zip(slots, weights):
            if not isinstance(w, (list, tuple)):
                check_array(w, f"weights[{key}]")
            try:
                host = to_numpy(w)
            except ValueError:
                raise ShapeError(f"weights[{key}]: expected a rectangular nested list or an array, got a ragged {type(w).__name__}") from None
            expected = tuple(layer.params[name].shape)
            if tuple(host.shape) != expected:
                raise ShapeError(f"weights[{key}]: expected shape {expected}, got {tuple(host.shape)}")
            if not (np.issubdtype(host.dtype, np.floating) or np.issubdtype(host.dtype, np.integer)):
                raise DTypeError(f"weights[{key}]: expected real numbers, got dtype {host.dtype}")
            new.append(self.backend.asarray(host, dtype=self.dtype))
        for (_, layer, name), w in zip(slots, new):
            layer.params[name] = w

    def to(self, target) -> "Sequential":
        """Move every parameter to ``target`` (a backend name such as "cupy" / "numpy" /
        "torch:cuda", or a device object); returns the model."""
        self._require_built()
        backend = resolve_target(target)
        for _, layer, name in self.named_parameters():
            layer.params[name] = to_device(layer.params[name], backend)
            layer.grads = {}
            layer._cache = ()
        self.backend = backend
        return self

    # ---------------------------------------------------------------- running

    def _check_input(self, x):
        """Check a batch against the built model once; returns its namespace."""
        self._require_built()
        check_array(x, "x")
        first = next((p for layer in self.layers for p in layer.params.values()), None)
        xp = namespace(x=x) if first is None else namespace(x=x, model_parameters=first)
        if len(x.shape) != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            hint = " (add a channel axis: xpcnn.datasets.preprocess)" if len(x.shape) == len(self.input_shape) else ""
            raise ShapeError(f"x: expected shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}{hint}")
        if x.shape[0] == 0:
            raise DataError("x: the batch is empty (N = 0)")
        if (x.dtype != first.dtype) if first is not None else (dtype_name(x.dtype) != self.dtype):
            raise DTypeError(f"x: expected dtype {self.dtype} (the model's), got {dtype_name(x.dtype)}; cast the input or build the model with that dtype")
        # One fused reduction (~1% of a train step) so NaN/Inf in the data is named here
        # rather than surfacing as a NaN loss epochs later.
        if not bool(xp.all(xp.isfinite(x))):
            bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
            raise DataError(f"x: expected finite values, got {bad} NaN/Inf among {math.prod(x.shape)} values in the batch; clean or mask the data")
        return xp

    def forward(self, x):
        """Logits (N, K) for x (N, C, H, W); each layer caches what its backward needs."""
        xp = self._check_input(x)
        # The batch is checked once here; every later shape follows from the built ones.
        for layer in self.layers:
            x = layer._forward(xp, x)
        return x

    __call__ = forward

    def backward(self, grad_y, *, input_grad: bool = False):
        """Back-propagate grad_y (N, K) through every layer (filling ``layer.grads``); returns the
        gradient of the input when ``input_grad`` (skipped by default: nobody trains the data)."""
        for i in range(len(self.layers) - 1, -1, -1):
            grad_y = self.layers[i].backward(grad_y, input_grad=input_grad or i > 0)
        return grad_y

    def loss_and_grad(self, x, y) -> float:
        """Forward, mean softmax cross-entropy and backward on one batch; returns the loss as a 0-d array."""
        logits = self.forward(x)
        loss, grad = F.cross_entropy_with_grad(logits, y)
        xp = namespace_of(grad)
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i]._backward(xp, grad, i > 0)
        return loss

    def train_step(self, x, y, optimizer) -> float:
        """One optimizer step on the batch-mean softmax cross-entropy of (x, y); returns the loss."""
        if isinstance(optimizer, type) or not callable(getattr(optimizer, "step", None)):
            raise ArgumentError(f"optimizer: expected an optimizer instance such as xpcnn.optim.SGD(lr=0.01), got {optimizer!r}")
        loss = self.loss_and_grad(x, y)
        optimizer.step(self)
        return float(loss)

    def predict(self, x):
        """Softmax probabilities (N, K) for x (N, C, H, W), same backend as x."""
        return F.softmax(self.forward(x), axis=1)

    # ---------------------------------------------------------------- description

    def get_config(self) -> dict[str, Any]:
        """The architecture as JSON-friendly data (what model files store)."""
        return {
            "layers": [{"type": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "dtype": self.dtype,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Sequential":
        """An unbuilt model from :meth:`get_config` output. Anything malformed (unknown layer
        types, wrong argument names or values) is refused with an ArgumentError: the config
        may come from a file written by someone else."""
        specs = config.get("layers") if isinstance(config, dict) else None
        if not isinstance(specs, list) or not specs:
            raise ArgumentError(f"config: expected a dict with a non-empty 'layers' list, got {type(config).__name__}")
        layers = []
        for i, spec in enumerate(specs):
            kind = spec.get("type") if isinstance(spec, dict) else None
            if not isinstance(kind, str) or kind not in LAYERS:
                raise ArgumentError(f"config.layers[{i}]: unknown layer type {kind!r}; known: {', '.join(LAYERS)}")
            kwargs = spec.get("config", {})
            if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise ArgumentError(f"config.layers[{i}].config: expected a dict of arguments, got {type(kwargs).__name__}")
            try:
                layers.append(LAYERS[kind](**kwargs))
            except XpcnnError:
                raise
            except (TypeError, ValueError) as e:
                raise ArgumentError(f"config.layers[{i}] ({kind}): invalid arguments {kwargs!r}: {e}") from None
        return cls(layers)

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts."""
        self._require_built()
        lines = [f"Sequential on {self.backend} ({self.dtype}), input {self.input_shape}"]
        shape, total = self.input_shape, 0
        for layer in self.layers:
            shape = layer.output_shape(shape)
            count = sum(int(np.prod(p.shape)) for p in layer.params.values())
            total += count
            lines.append(f"  {layer!r:<70} -> {str(shape):<16} {count:>9,d} params")
        lines.append(f"  total parameters: {total:,d}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "Sequential([" + ", ".join(repr(layer) for layer in self.layers) + "])"

    # ---------------------------------------------------------------- training and files

    def fit(self, x, y, **kwargs):
        """Train on images x (N, C, H, W) and labels y (N,); returns a History.
        See :func:`xpcnn.training.fit` for the arguments."""
        from .training import fit

        return fit(self, x, y, **kwargs)

    def evaluate(self, x, y, **kwargs) -> dict:
        """``{"loss": ..., "accuracy": ...}`` on (x, y); see :func:`xpcnn.training.evaluate`."""
        from .training import evaluate

        return evaluate(self, x, y, **kwargs)

    def save(self, path) -> None:
        """Write the architecture, dtype and weights to ``path`` (safetensors, atomic); read it
        back with ``xpcnn.load(path, backend=...)``. See :mod:`xpcnn.io`."""
        from .io import save

        save(self, path)
