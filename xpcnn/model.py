"""Sequential: a stack of layers with build, forward, backward, a training step and files.

Floors: ``layers`` below, then :mod:`xpcnn.training` (the one step function, fit, evaluate,
written against any model with this interface) and :mod:`xpcnn.fileformat` (bytes); the
model delegates to them. :mod:`xpcnn.saving` (load), :mod:`xpcnn.interop` and the CLI sit
above the model.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable

import numpy as np

from . import fileformat, training
from ._validate import check_array, namespace, sample_shape
from .backend import Backend, current_backend, dtype_name, resolve_target, to_device, to_numpy
from .errors import ArgumentError, ArgumentTypeError, DataError, DTypeError, NotBuiltError, ShapeError
from .layers import Dropout, Layer, _backward_chain, _forward_chain, _walk, layers_from_config


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
        self.output_shape: tuple[int, ...] | None = None
        self.backend: Backend | None = None
        self.dtype: str | None = None
        self.optimizer = None
        self._fused: tuple[int, ...] = ()  # layers the last forward ran fused (layers._forward_chain)
        self._flat_grads = None  # (gradients, their concatenation) from the last step's NaN guard (GPU form)

    # ---------------------------------------------------------------- building

    def build(self, input_shape, *, seed: int = 0, dtype: str = "float32", backend: str | Backend | None = None) -> Sequential:
        """Create every parameter and buffer for samples of ``input_shape`` (C, H, W), drawn from
        ``numpy.random.default_rng(seed)`` on the host, on the selected backend (or ``backend``)."""
        if not isinstance(dtype, str) or dtype not in ("float32", "float64"):
            raise DTypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        shape = sample_shape(input_shape, "input_shape", "such as (1, 28, 28)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ArgumentError(f"seed: expected a non-negative int, got {seed!r}")
        target = current_backend() if backend is None else resolve_target(backend)
        if hasattr(target, "check_dtype"):
            target.check_dtype(dtype)
        rng = np.random.default_rng(seed)
        out = tuple(int(s) for s in shape)
        for layer in self.layers:
            out = layer.build(out, rng=rng, backend=target, dtype=dtype)
        # Dropout masks are keyed by (build seed, layer path) unless the layer has its own seed:
        # drawn without touching ``rng``, so adding a Dropout never changes the other weights.
        for path, layer in _walk(self.layers):
            if isinstance(layer, Dropout):
                layer._derived_seed = int(np.random.SeedSequence([int(seed), *map(_path_number, path.split("."))]).generate_state(1)[0])
                layer.counter = 0
        self.input_shape = tuple(int(s) for s in shape)
        self.output_shape = out
        self.backend, self.dtype = target, dtype
        return self

    def _device(self):
        """Compute runs under the model's device (CuPy launches on the *current* device)."""
        return self.backend.activate() if self.backend is not None else contextlib.nullcontext()

    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def _require_built(self) -> None:
        if not self.built:
            raise NotBuiltError("model: not built; call model.build((C, H, W)) first")

    def named_parameters(self) -> list[tuple[str, Layer, str]]:
        """(key, layer, name) for every parameter, in layer order; key is ``"<index>.<name>"``."""
        return [(f"{i}.{name}", layer, name) for i, layer in enumerate(self.layers) for name in layer.params]

    def named_buffers(self) -> list[tuple[str, Layer, str]]:
        """(key, layer, name) for every buffer (BatchNorm running statistics), in layer order."""
        return [(f"{i}.{name}", layer, name) for i, layer in enumerate(self.layers) for name in layer.buffers]

    def get_weights(self) -> list:
        """Parameters in layer order (weight before bias), as arrays of the model's backend."""
        return [layer.params[name] for _, layer, name in self.named_parameters()]

    def set_weights(self, weights) -> None:
        """Replace every parameter. Arrays of any backend (or NumPy / nested lists) are
        cast to the model's dtype and moved to its backend: this is an explicit API edge."""
        self._set_arrays(weights, self.named_parameters(), "params", "weights")

    def get_buffers(self) -> list:
        """Buffers in layer order (running_mean before running_var), of the model's backend."""
        return [layer.buffers[name] for _, layer, name in self.named_buffers()]

    def set_buffers(self, buffers) -> None:
        """Replace every buffer, as :meth:`set_weights` does for parameters."""
        self._set_arrays(buffers, self.named_buffers(), "buffers", "buffers")

    def _set_arrays(self, arrays, slots, attr: str, argument: str) -> None:
        self._require_built()
        if isinstance(arrays, (str, bytes, dict)) or not hasattr(arrays, "__iter__"):
            raise DTypeError(f"{argument}: expected a list of {len(slots)} arrays (as get_{argument}() returns), got {type(arrays).__name__}")
        arrays = list(arrays)
        if len(arrays) != len(slots):
            raise ShapeError(f"{argument}: expected {len(slots)} arrays ({', '.join(k for k, _, _ in slots)}), got {len(arrays)}")
        new = []
        for (key, layer, name), w in zip(slots, arrays):
            if not isinstance(w, (list, tuple)):
                check_array(w, f"{argument}[{key}]")
            try:
                host = to_numpy(w)
            except ValueError:
                raise ShapeError(f"{argument}[{key}]: expected a rectangular nested list or an array, got a ragged {type(w).__name__}") from None
            expected = tuple(getattr(layer, attr)[name].shape)
            if tuple(host.shape) != expected:
                raise ShapeError(f"{argument}[{key}]: expected shape {expected}, got {tuple(host.shape)}")
            if not (np.issubdtype(host.dtype, np.floating) or np.issubdtype(host.dtype, np.integer)):
                raise DTypeError(f"{argument}[{key}]: expected real numbers, got dtype {host.dtype}")
            new.append(self.backend.asarray(host, dtype=self.dtype))
        for (_, layer, name), w in zip(slots, new):
            getattr(layer, attr)[name] = w

    def layer_states(self) -> dict[str, dict]:
        """JSON-able per-layer state that is neither parameter nor buffer (dropout counters),
        keyed by layer index; saved in checkpoints."""
        states = {str(i): layer.get_state() for i, layer in enumerate(self.layers)}
        return {k: v for k, v in states.items() if v}

    def set_layer_states(self, states: dict[str, dict]) -> None:
        """Restore :meth:`layer_states` output."""
        if not isinstance(states, dict):
            raise ArgumentError(f"states: expected a dict keyed by layer index, got {type(states).__name__}")
        for key, state in states.items():
            if not key.isdigit() or int(key) >= len(self.layers) or not isinstance(state, dict):
                raise ArgumentError(f"states[{key!r}]: expected a layer index below {len(self.layers)} with a dict state")
            self.layers[int(key)].set_state(state)

    def to(self, target) -> Sequential:
        """Move every parameter, buffer and the optimizer's state to ``target`` (a backend name
        such as "cupy" / "numpy" / "torch:cuda", or a device object); returns the model."""
        self._require_built()
        backend = resolve_target(target)
        if hasattr(backend, "check_dtype"):
            backend.check_dtype(self.dtype)
        for _, layer, name in self.named_parameters():
            layer.params[name] = to_device(layer.params[name], backend)
        for _, layer, name in self.named_buffers():
            layer.buffers[name] = to_device(layer.buffers[name], backend)
        for _, layer in _walk(self.layers):
            if not hasattr(layer, "sublayers"):
                layer.grads = {}
            layer._cache = ()
        if self.optimizer is not None:
            self.optimizer.map_state(lambda a: to_device(a, backend))
        self.backend = backend
        return self

    # ---------------------------------------------------------------- files

    def state_tensors(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as contiguous host arrays keyed ``"<layer>.<name>"``."""
        slots = self.named_parameters() + self.named_buffers()
        return {key: np.ascontiguousarray(to_numpy(getattr(layer, "params" if name in layer.params else "buffers")[name]))
                for key, layer, name in slots}

    def state_shapes(self, input_shape) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """(parameter shapes, buffer shapes) for samples of ``input_shape``, computed without
        allocating anything (how files are checked before their arrays are used)."""
        params: dict[str, tuple[int, ...]] = {}
        buffers: dict[str, tuple[int, ...]] = {}
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            out = tuple(layer.output_shape(shape))  # validates the geometry first, as build does
            for name, spec in layer._param_specs(shape).items():
                params[f"{i}.{name}"] = tuple(int(s) for s in spec[0])
            for name, spec in layer._buffer_specs(shape).items():
                buffers[f"{i}.{name}"] = tuple(int(s) for s in spec[0])
            shape = out
        return params, buffers

    def to_bytes(self, *, kind: str = "model", tensors: dict[str, np.ndarray] | None = None,
                 metadata: dict[str, str] | None = None) -> bytes:
        """The model file bytes (safetensors) of this model, plus extra checkpoint content."""
        if not self.built:
            raise NotBuiltError("model: not built, nothing to save; call model.build((C, H, W)) or fit first")
        if tensors is not None and (not isinstance(tensors, dict) or not all(
                isinstance(k, str) and isinstance(v, np.ndarray) for k, v in tensors.items())):
            raise ArgumentTypeError(f"tensors: expected a dict of names to NumPy arrays, got {type(tensors).__name__}")
        if metadata is not None and (not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
            raise ArgumentTypeError(f"metadata: expected a dict of strings to strings, got {metadata!r:.80}")
        all_tensors = self.state_tensors()
        all_tensors.update(tensors or {})
        return fileformat.encode(all_tensors, kind=kind, config=self.get_config(), dtype=self.dtype,
                                 input_shape=self.input_shape, metadata=metadata)

    def save(self, path) -> None:
        """Write the architecture, dtype, weights and buffers to ``path`` (safetensors, atomic);
        read it back with ``xpcnn.load(path, backend=...)``."""
        fileformat.write_atomic(path, self.to_bytes())

    # ---------------------------------------------------------------- running

    def check_input(self, x):
        """Check a batch against the built model once; returns its namespace."""
        xp = self._check_input_layout(x)
        # One fused reduction (~1% of a step) so NaN/Inf in the data is named here rather than
        # surfacing as a NaN loss epochs later.
        if not bool(xp.all(xp.isfinite(x))):
            bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
            raise DataError(f"x: expected finite values, got {bad} NaN/Inf among {math.prod(x.shape)} values in the batch; clean or mask the data")
        return xp

    def _check_input_layout(self, x):
        """:meth:`check_input` without the values' check (no host read): array kind, library,
        device, shape and dtype. Returns the namespace."""
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
        return xp

    def forward(self, x, *, training: bool = False):
        """Logits (N, K) for x (N, C, H, W); each layer caches what its backward needs.
        ``training=True`` runs training-mode layers (dropout, batch statistics)."""
        if not isinstance(training, bool):
            raise ArgumentTypeError(f"training: expected True or False, got {training!r:.80}")
        xp = self.check_input(x)
        with self.backend.activate():
            return self._forward_checked(xp, x, training)

    def _forward_checked(self, xp, x, training: bool):
        """:meth:`forward` on a batch already checked (or validated once for a whole fit)."""
        x, self._fused = _forward_chain(xp, self.layers, x, training)
        return x

    def __call__(self, x):
        """Logits in inference mode (the same as ``forward(x)``)."""
        return self.forward(x)

    def backward(self, grad_y, *, input_grad: bool = False):
        """Back-propagate grad_y (N, K) of the last forward through every layer (filling
        ``layer.grads``); returns the gradient of the input when ``input_grad`` (skipped by
        default: nobody trains the data)."""
        self.layers[-1]._check_grad(grad_y)
        return self._backward_checked(namespace(grad_y=grad_y), grad_y, input_grad=input_grad)

    def _backward_checked(self, xp, grad_y, *, input_grad: bool = False):
        return _backward_chain(xp, self.layers, grad_y, input_grad, self._fused)

    def loss_and_grad(self, x, y, *, label_smoothing: float = 0.0):
        """Forward (training mode), mean softmax cross-entropy and backward on one batch, filling
        every ``layer.grads``; returns the loss as a 0-d array (no update)."""
        with self._device():
            return training.loss_and_grad(self, x, y, label_smoothing=label_smoothing)

    def train_step(self, x, y, optimizer, *, label_smoothing: float = 0.0) -> float:
        """One optimizer step on the batch-mean softmax cross-entropy of (x, y), in training mode;
        returns the loss. The same step code as :meth:`fit` (see :func:`xpcnn.training.train_step`)."""
        with self._device():
            return training.train_step(self, x, y, optimizer, label_smoothing=label_smoothing)

    def predict(self, x, *, batch_size: int = 256):
        """Softmax probabilities (N, K) for x (N, C, H, W) in inference mode. Arrays of the model's
        backend stay there; host (NumPy) input is moved batch by batch and the result returned
        on the model's backend."""
        with self._device():
            return training.predict(self, x, batch_size=batch_size)

    def fit(self, x, y, *, epochs: int = 1, batch_size: int = 32, optimizer=None, validation_data=None,
            shuffle: bool = True, seed: int = 0, callbacks=None, verbose: int = 1, checkpoint_dir=None,
            resume_from=None, label_smoothing: float = 0.0, sync_every: int = 1, compile: bool | None = None,
            distributed: bool = False):
        """Train on images x (N, C, H, W) and labels y (N,); returns a History.
        See :func:`xpcnn.training.fit` for every argument."""
        return training.fit(self, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                            validation_data=validation_data, shuffle=shuffle, seed=seed, callbacks=callbacks,
                            verbose=verbose, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                            label_smoothing=label_smoothing, sync_every=sync_every, compile=compile,
                            distributed=distributed)

    def evaluate(self, x, y, *, batch_size: int = 256, distributed: bool = False) -> dict:
        """``{"loss": ..., "accuracy": ...}`` on (x, y) in inference mode; see :func:`xpcnn.training.evaluate`."""
        with self._device():
            return training.evaluate(self, x, y, batch_size=batch_size, distributed=distributed)

    # ---------------------------------------------------------------- description

    def get_config(self) -> dict[str, Any]:
        """The architecture as JSON-friendly data (what model files store)."""
        return {
            "layers": [{"type": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "dtype": self.dtype,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """An unbuilt model from :meth:`get_config` output. Anything malformed (unknown layer
        types, wrong argument names or values) is refused with an ArgumentError: the config
        may come from a file written by someone else."""
        specs = config.get("layers") if isinstance(config, dict) else None
        if not isinstance(specs, list) or not specs:
            raise ArgumentError(f"config: expected a dict with a non-empty 'layers' list, got {type(config).__name__}")
        return cls(layers_from_config(specs, "config.layers"))

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts."""
        self._require_built()
        lines = [f"Sequential on {self.backend} ({self.dtype}), input {self.input_shape}"]
        shape, total = self.input_shape, 0
        for layer in self.layers:
            shape = layer.output_shape(shape)
            count = sum(math.prod(p.shape) for p in layer.params.values())
            total += count
            lines.append(f"  {layer!r:<70} -> {str(shape):<16} {count:>9,d} params")
        lines.append(f"  total parameters: {total:,d}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "Sequential([" + ", ".join(repr(layer) for layer in self.layers) + "])"


def _path_number(part: str) -> int:
    """A layer path component as an int for seeding: indices as they are, branch names hashed
    stably (block=1, shortcut=2)."""
    return int(part) if part.isdigit() else {"block": 1, "shortcut": 2}.get(part, 3)
