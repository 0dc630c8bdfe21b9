"""Sequential: the model. A container of layers with build, inference, training and files.

Floors: ``layers`` below, then :mod:`xpcnn.training` (fit, evaluate, predict and the one step
function, written against any model with this interface) and :mod:`xpcnn.fileformat` (bytes);
the model delegates to them. :mod:`xpcnn.saving` (load), :mod:`xpcnn.interop` and the CLI sit
above the model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import safetensors.numpy

from . import fileformat, jit, training
from ._validate import check_array, namespace, sample_shape
from .backend import (
    Backend,
    current_backend,
    device_of,
    fewest_operations_for,
    namespace_of,
    resolve_target,
    to_device,
    to_numpy,
)
from .checkpoint import optimizer_class, optimizer_record
from .datasets.feed import as_model_dtype, non_finite, shape_hint
from .errors import ArgumentError, ArgumentTypeError, DataError, DTypeError, NotBuiltError, ShapeError
from .layers.base import check_config_complete, describe, flag, inference, layers_from_config
from .layers.containers import Container, run_backward, run_forward, run_traced
from .layers.fold import fold_batchnorm

# Inference on a CPU runs a large batch in slices of as many images as keep the largest
# activation within this many elements: the same few blocks of memory serve every slice, from
# the process's heap and the caches, where a whole batch would take fresh pages each call.
# docs/performance.md.
INFERENCE_SLICE = 1 << 18


def planned_inputs(layers, shape: tuple, found: dict) -> dict:
    """id(layer) -> the input shape each nested layer of ``layers`` gets for input ``shape``."""
    for layer in layers:
        found[id(layer)] = shape
        for branch in getattr(layer, "branches", {}).values():  # a branch takes its container's input
            planned_inputs(branch, shape, found)
        shape = tuple(layer.output_shape(shape))
    return found


class Sequential(Container):
    """Layers applied in order. Build it for one sample's shape ``(C, H, W)``, then call it on
    batches ``(N, C, H, W)``: arrays of its backend and device (floating input of another float
    dtype is cast to the model's; integers and bools are refused)."""

    def __init__(self, layers: Iterable) -> None:
        super().__init__({"": self.layer_list(layers, "layers")})
        self.layers = self.branches[""]
        places: dict[int, str] = {}
        for path, layer in self.walk():
            if id(layer) in places:  # its second forward would overwrite what the first keeps for backward
                raise ArgumentError(f"layers: layer {path} ({type(layer).__name__}) is the same object as layer "
                                    f"{places[id(layer)]}; each place needs its own layer (copy.deepcopy(layer))")
            places[id(layer)] = path
        self.built_output_shape: tuple[int, ...] | None = None
        self.inference_slice = 1  # images per slice at inference on a CPU, set at build
        self.backend: Backend | None = None
        self.dtype: str | None = None
        self.optimizer = None
        self.seed: int | None = None
        self.class_names: list[str] | None = None
        self.flat_grads = None  # (gradients, their concatenation) from the last step's guard (GPU form)
        self.slots = None  # the chains they were listed for, parameters, buffers and leaves
        self.needs_input_grad = False  # nobody trains the data

    @property
    def class_names(self) -> list[str] | None:
        """Each output's class name (set by ``fit`` on a dataset, kept in the model file), or None."""
        return self._class_names

    @class_names.setter
    def class_names(self, names) -> None:
        if not fileformat.valid_class_names(names):
            raise ArgumentTypeError(f"class_names: expected a list of distinct non-empty strings, got {names!r:.80}")
        if names is not None and self.built_output_shape not in (None, (len(names),)):
            raise ArgumentError(f"class_names: {len(names)} names for a model whose output has shape "
                                f"{self.built_output_shape}: expected one name per output")
        self._class_names = None if names is None else list(names)

    # ---------------------------------------------------------------- building

    def build(self, input_shape, *, seed: int | None = None, dtype: str = "float32",
              backend: str | Backend | None = None, fuse: bool = True) -> Sequential:
        """Create every parameter and buffer for samples of ``input_shape`` (C, H, W), drawn from
        ``numpy.random.default_rng(seed)`` (default 0) on the host, on the selected backend (or
        ``backend``). ``fuse``: run fusable layer pairs as one op (:mod:`xpcnn.layers.fused`; same
        numbers). A built model is not drawn again: building it as it was built does nothing,
        otherwise is an error (:meth:`reset_weights` redraws, :meth:`to` moves, a new model takes a
        new shape). A layer taken from another built model keeps its weights, shared with it."""
        if not isinstance(dtype, str) or dtype not in ("float32", "float64"):
            raise DTypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        shape = tuple(int(s) for s in sample_shape(input_shape, "input_shape", "such as (1, 28, 28)"))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ArgumentError(f"seed: expected a non-negative int, got {seed!r}")
        target = current_backend() if backend is None else resolve_target(backend)
        if self.built:
            given = {"input_shape": shape, "dtype": dtype, "seed": self.seed if seed is None else int(seed),
                     "backend": self.backend if backend is None else target}
            built = {"input_shape": self.input_shape, "dtype": self.dtype, "seed": self.seed, "backend": self.backend}
            if given == built:
                return self
            name = next(k for k in given if given[k] != built[k])
            raise ArgumentError(f"{name}: the model is already built with {name} {built[name]} and holds its weights; "
                                f"got {given[name]}. Use model.reset_weights(seed=...) to redraw them, "
                                "model.to(...) to move them, or a new model for another shape or dtype")
        target.check_dtype(dtype)
        for container in [self, *(layer for _, layer in self.walk() if isinstance(layer, Container))]:
            container.fuse = flag(fuse, "fuse")
        kept = self._check_built_layers(shape, target, dtype)
        self._draw(shape, 0 if seed is None else int(seed), target, dtype)
        for layer, params, buffers in kept:  # drawn like the others (the rest of the draws stay), then given back
            layer.params.update(params)
            layer.buffers.update(buffers)
        return self

    def _check_built_layers(self, shape, backend: Backend, dtype: str) -> list:
        """(layer, params, buffers) of the layers already built (in another model), which keep their
        arrays; an error when this model gives one another input shape, dtype or device."""
        kept = [(path, layer) for path, layer in Container.leaves(self) if layer.params or layer.buffers]
        if not kept:  # the usual case; the draw then checks the shapes, naming the layer
            return []
        planned, probe = planned_inputs(self.layers, shape, {}), backend.asarray(0.0, dtype=dtype)
        for path, layer in kept:
            first = next(iter({**layer.params, **layer.buffers}.values()))
            has = (layer.input_shape, namespace_of(first).__name__, first.dtype, device_of(first))
            gets = (planned[id(layer)], namespace_of(probe).__name__, probe.dtype, device_of(probe))
            if has != gets:
                raise ArgumentError(f"layers: layer {path} ({type(layer).__name__}) is already built, with its "
                                    f"weights, for input {has[0]} ({has[2]} on {has[3]}); this model gives it "
                                    f"{gets[0]} ({gets[2]} on {gets[3]}): build it so, or use a new layer")
        return [(layer, dict(layer.params), dict(layer.buffers)) for _, layer in kept]

    def _draw(self, shape: tuple[int, ...], seed: int, backend: Backend, dtype: str) -> None:
        out, largest = shape, math.prod(shape)
        rng = np.random.default_rng(seed)
        for i, layer in enumerate(self.layers):
            try:
                out = layer.build(out, rng=rng, backend=backend, dtype=dtype)
            except (ShapeError, ArgumentError) as e:
                channels_last = len(shape) == 3 and shape[-1] in (1, 3) and shape[0] > 4
                hint = f" (input_shape is (C, H, W): {(shape[-1], *shape[:-1])}?)" if channels_last else ""
                raise type(e)(f"layer {i}, {type(layer).__name__}: {e}{hint}") from None
            largest = max(largest, math.prod(out))
        self.inference_slice = max(1, INFERENCE_SLICE // largest)
        self.plan_chains(backend, dtype)
        # Random layers (Dropout masks, augmentation draws: a ``default_seed`` and a ``counter``) are
        # keyed by (build seed, layer path) unless the layer has its own seed: drawn without
        # touching ``rng``, so adding one never changes the other weights.
        for path, layer in self.walk():
            if hasattr(layer, "default_seed") and hasattr(layer, "counter"):
                key = [int(seed), *map(path_number, path.split("."))]
                layer.default_seed = int(np.random.SeedSequence(key).generate_state(1)[0])
                layer.counter = 0
        self.input_shape, self.built_output_shape = shape, out
        self.backend, self.dtype, self.seed = backend, dtype, int(seed)
        self.class_names = self.class_names  # names given before build: one per output

    def named_parameters(self) -> list:
        """(key, layer, name) for every parameter (see :meth:`Container.named_parameters`), listed
        once per build: a training step asks for them several times."""
        if self.slots is None or self.slots[0] is not self.chains:
            leaves = Container.leaves(self)
            self.slots = (self.chains,
                          [(f"{path}.{name}", layer, name) for path, layer in leaves for name in layer.params],
                          [(f"{path}.{name}", layer, name) for path, layer in leaves for name in layer.buffers], leaves)
        return self.slots[1]

    def named_buffers(self) -> list:
        self.named_parameters()
        return self.slots[2]

    def leaves(self) -> list:
        self.named_parameters()
        return self.slots[3]

    def reset_weights(self, seed: int = 0) -> Sequential:
        """Redraw every parameter and buffer of a built model from ``seed`` (as a new build would)."""
        self.require_built()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ArgumentError(f"seed: expected a non-negative int, got {seed!r}")
        self._draw(self.input_shape, int(seed), self.backend, self.dtype)
        self.optimizer = None
        return self

    def output_shape(self, input_shape=None) -> tuple[int, ...]:
        """One output sample's shape: of the built model, or for ``input_shape``."""
        if input_shape is None:
            self.require_built()
            return self.built_output_shape
        shape = sample_shape(input_shape, "input_shape", "such as (1, 28, 28)")
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except (ShapeError, ArgumentError) as e:
                raise type(e)(f"input_shape: layer {i}, {type(layer).__name__}: {e}") from None
        return shape

    @property
    def built(self) -> bool:
        return self.built_output_shape is not None

    def require_built(self) -> None:
        if not self.built:
            raise NotBuiltError("model: not built; call model.build((C, H, W)) first")

    def device_context(self):
        """Compute runs under the model's device (CuPy launches on the *current* device)."""
        return self.backend.activate() if self.backend is not None else contextlib.nullcontext()

    # ---------------------------------------------------------------- arrays

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
        self.require_built()
        if isinstance(arrays, (str, bytes, dict)) or not hasattr(arrays, "__iter__"):
            raise ArgumentTypeError(f"{argument}: expected a list of {len(slots)} arrays "
                                    f"(as get_{argument}() returns), got {type(arrays).__name__}")
        arrays = list(arrays)
        if len(arrays) != len(slots):
            raise ShapeError(f"{argument}: expected {len(slots)} arrays ({', '.join(k for k, _, _ in slots)}), "
                             f"got {len(arrays)}")
        new = []
        for (key, layer, name), w in zip(slots, arrays):
            if not isinstance(w, (list, tuple)):
                check_array(w, f"{argument}[{key}]")
            try:
                host = to_numpy(w)
            except ValueError:
                raise ShapeError(f"{argument}[{key}]: expected a rectangular nested list or an array, "
                                 f"got a ragged {type(w).__name__}") from None
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
        return self.get_state()

    def set_layer_states(self, states: dict[str, dict]) -> None:
        """Restore :meth:`layer_states` output."""
        if not isinstance(states, dict):
            raise ArgumentError(f"states: expected a dict keyed by layer index, got {type(states).__name__}")
        self.set_state(states)

    def to(self, target) -> Sequential:
        """Move every parameter, buffer and the optimizer's state to ``target`` (a backend name
        such as "cupy" / "numpy" / "torch:cuda", or a device object); returns the model."""
        self.require_built()
        backend = resolve_target(target)
        backend.check_dtype(self.dtype)
        for _, layer, name in self.named_parameters():
            layer.params[name] = to_device(layer.params[name], backend)
        for _, layer, name in self.named_buffers():
            layer.buffers[name] = to_device(layer.buffers[name], backend)
        for layer in self.run_layers():  # the fused forms too
            layer.grads.clear()
            layer.save_for_backward()
        if self.optimizer is not None:
            self.optimizer.map_state(lambda a: to_device(a, backend))
        self.backend = backend
        return self

    # ---------------------------------------------------------------- files

    def state_tensors(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as contiguous host arrays keyed ``"<layer>.<name>"``."""
        arrays = {key: layer.params[name] for key, layer, name in self.named_parameters()}
        arrays.update({key: layer.buffers[name] for key, layer, name in self.named_buffers()})
        return {key: np.ascontiguousarray(to_numpy(a)) for key, a in arrays.items()}

    def state_shapes(self, input_shape) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """(parameter shapes, buffer shapes) for samples of ``input_shape``, computed without
        allocating anything (how files are checked before their arrays are used)."""
        self.output_shape(input_shape)  # validates the geometry first, as build does
        return tuple({key: tuple(int(s) for s in spec[0]) for key, spec in self.specs(input_shape, kind).items()}
                     for kind in ("param_specs", "buffer_specs"))

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
        self.class_names = self.class_names  # checked again against the built output (it may be set before build)
        all_tensors = self.state_tensors()
        all_tensors.update(tensors or {})
        return fileformat.encode(all_tensors, kind=kind, config=self.saveable_config(), dtype=self.dtype,
                                 input_shape=self.input_shape, metadata=metadata, class_names=self.class_names)

    def save(self, path) -> None:
        """Write the architecture, dtype, weights and buffers to ``path`` (safetensors, atomic);
        read it back with ``xpcnn.load(path, backend=...)``. It predicts as this model does; the
        training state (optimizer, Dropout and augmentation counters and derived seeds, the
        shuffle state) lives in checkpoints: continue training from one (``resume_from``)."""
        fileformat.write_atomic(path, self.to_bytes())

    def __getstate__(self) -> dict:
        """Pickling (joblib, multiprocessing, ``copy.deepcopy``): the config, the arrays as
        safetensors bytes, the backend's name and the optimizer's state. Nothing else."""
        state = {"config": self.saveable_config(), "class_names": self.class_names}
        if self.built:
            state.update(backend=str(self.backend), seed=self.seed, fuse=self.fuse, layer_states=self.layer_states(),
                         arrays=safetensors.numpy.save(self.state_tensors()))
            if self.optimizer is not None:
                record, tensors = optimizer_record(self.optimizer, self)
                state["optimizer"] = (record, safetensors.numpy.save(tensors) if tensors else b"")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__init__(layers_from_config(state["config"]["layers"], "config.layers"))
        self.class_names = state.get("class_names")
        if "arrays" not in state:
            return
        self.build(state["config"]["input_shape"], seed=state["seed"], dtype=state["config"]["dtype"],
                   backend=state["backend"], fuse=state.get("fuse", True))
        arrays = safetensors.numpy.load(state["arrays"])
        for key, layer, name in self.named_parameters():
            layer.params[name] = self.backend.asarray(arrays[key], dtype=self.dtype)
        for key, layer, name in self.named_buffers():
            layer.buffers[name] = self.backend.asarray(arrays[key], dtype=self.dtype)
        self.set_layer_states(state["layer_states"])
        if "optimizer" in state:
            record, blob = state["optimizer"]
            tensors = safetensors.numpy.load(blob) if blob else {}
            self.optimizer = optimizer_class(record["class"])(**record["hyper"])
            self.optimizer.load_state_dict({"steps": record["steps"], "state": {
                key: {name: self.backend.asarray(tensors[f"optimizer/{key}/{name}"], dtype=self.dtype)
                      for name in names} for key, names in record["state"].items()}})

    # ---------------------------------------------------------------- running

    def check_input(self, x, *, values: bool = True):
        """``x`` checked against the built model (array kind, library, device, shape; with
        ``values``, NaN/Inf too: one host read) and cast to the model's dtype when it is another
        float dtype: (namespace, x)."""
        self.require_built()
        check_array(x, "x")
        first = next((layer.params[name] for _, layer, name in self.named_parameters()), None)
        xp = namespace(x=x) if first is None else namespace(x=x, model_parameters=first)
        if len(x.shape) != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(f"x: expected shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
                             f"{shape_hint(x.shape, self.input_shape)}")
        if x.shape[0] == 0:
            raise DataError("x: the batch is empty (N = 0)")
        if first is None or x.dtype != first.dtype:
            x = as_model_dtype(xp, x, self.dtype, "x")
        found = non_finite(xp, x) if values and not self.backend.lazy else None
        if found:
            count, first_bad = found
            raise DataError(f"x: expected finite values, got {count} NaN/Inf among {math.prod(x.shape)} values in the "
                            f"batch (the first at flat index {first_bad}); clean or mask the data")
        return xp, x

    def forward(self, x, training: bool = False):
        """Logits (N, K) of a batch already checked (:meth:`check_input`); each layer keeps what
        its backward needs. ``training=True`` runs training-mode layers (dropout, batch statistics)."""
        if self.backend.lazy:  # arrays without values (ndonnx): a graph of the unfused layers
            if training:
                raise ArgumentError(f"training: the {self.backend.name} backend builds inference graphs only; train "
                                    f"on another backend, then model.to({self.backend.name!r})")
            return run_traced(self.layers, "", x, self.input_shape)
        return run_forward(self.chains[""], x, training)

    def infer(self, x, batch_size: int | None = None):
        """Inference-mode logits (N, K) of a checked batch (:meth:`check_input`), keeping nothing for a
        backward, at most ``batch_size`` images per forward (all by default): one compiled function on
        jax (op by op, JAX dispatches and compiles every operation separately), the layers' forward
        elsewhere; on a CPU a large batch in slices (``INFERENCE_SLICE``)."""
        n = x.shape[0]
        if not isinstance(n, int):  # a symbolic batch (ndonnx) is one graph
            n = step = 0
        else:
            step = min(batch_size or n, n)
            if not self.backend.compiles and not fewest_operations_for(x):
                step = min(step, self.inference_slice)
        run = (lambda b: jit.forward(self, b)) if self.backend.compiles else (lambda b: self.forward(b, False))
        with inference():
            if n <= step:
                return run(x)
            # Exact stops: array-api-strict rejects a slice running past the end.
            return namespace_of(x).concat([run(x[i : min(i + step, n), ...]) for i in range(0, n, step)], axis=0)

    def backward(self, grad_y):
        """Back-propagate grad_y (N, K) of the last forward through every layer (setting every
        ``layer.grads``); returns the input's gradient when ``needs_input_grad`` (False by default)."""
        return run_backward(self.chains[""], grad_y, self.needs_input_grad)

    def __call__(self, x, training: bool = False):
        """Logits for a batch, checked first (see the class docstring for the dtype rule)."""
        if not isinstance(training, bool):
            raise ArgumentTypeError(f"training: expected True or False, got {training!r:.80}")
        _, x = self.check_input(x)
        with self.device_context(), contextlib.nullcontext() if training else inference():
            return self.forward(x, training)

    def fold_batchnorm(self) -> Sequential:
        """A new built model for inference: every Conv2D followed by a BatchNorm2D (in residual
        branches too) as one Conv2D whose weight and bias absorb the running statistics; the other
        layers share this model's arrays. Same outputs at inference within rounding."""
        self.require_built()
        folded = fold_batchnorm(self.layers, lambda layers: Sequential(layers).build(
            self.input_shape, seed=self.seed, dtype=self.dtype, backend=self.backend, fuse=self.fuse))
        folded.class_names = self.class_names
        return folded

    def loss_and_grad(self, x, y, *, label_smoothing: float = 0.0):
        """Forward (training mode), mean softmax cross-entropy and backward on one batch, filling
        every ``layer.grads``; returns the loss as a 0-d array (no update)."""
        with self.device_context():
            return training.loss_and_grad(self, x, y, label_smoothing=label_smoothing)

    def train_step(self, x, y, optimizer, *, label_smoothing: float = 0.0) -> float:
        """One optimizer step on the batch-mean softmax cross-entropy of (x, y), in training mode;
        returns the loss. The same step code as :meth:`fit` (see :func:`xpcnn.training.train_step`)."""
        with self.device_context():
            return training.train_step(self, x, y, optimizer, label_smoothing=label_smoothing)

    def predict(self, x, *, batch_size: int = 256):
        """Softmax probabilities (N, K) for x (N, C, H, W) or a dataset, in inference mode,
        ``batch_size`` images per forward. Arrays of the model's backend stay there; host (NumPy)
        input is moved batch by batch and the result returned on the model's backend."""
        with self.device_context():
            return training.predict(self, x, batch_size=batch_size)

    def predict_classes(self, x, *, batch_size: int = 256) -> list:
        """The predicted class of each sample: its name when the model knows its classes
        (``class_names``, set by ``fit`` on a dataset), else its index."""
        probabilities = self.predict(x, batch_size=batch_size)
        index = to_numpy(namespace(x=probabilities).argmax(probabilities, axis=1)).tolist()
        return [self.class_names[i] for i in index] if self.class_names else index

    def fit(self, x, y=None, *, epochs: int = 1, batch_size: int = 32, optimizer=None, validation_data=None,
            shuffle: bool = True, seed: int = 0, callbacks=None, verbose: int = 1, checkpoint_dir=None,
            resume_from=None, label_smoothing: float = 0.0, sync_every: int = 1, compile: bool | None = None,
            distributed: bool = False):
        """Train on images x (N, C, H, W) and labels y (N,), or on a dataset ``x``; returns a History.
        See :func:`xpcnn.training.fit` for every argument."""
        return training.fit(self, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                            validation_data=validation_data, shuffle=shuffle, seed=seed, callbacks=callbacks,
                            verbose=verbose, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                            label_smoothing=label_smoothing, sync_every=sync_every, compile=compile,
                            distributed=distributed)

    def evaluate(self, x, y=None, *, batch_size: int = 256, distributed: bool = False) -> dict:
        """``{"loss": ..., "accuracy": ...}`` on (x, y) or a dataset in inference mode; see
        :func:`xpcnn.training.evaluate`."""
        with self.device_context():
            return training.evaluate(self, x, y, batch_size=batch_size, distributed=distributed)

    # ---------------------------------------------------------------- description

    def get_config(self) -> dict[str, Any]:
        """The architecture as JSON-friendly data (what model files store)."""
        return {"layers": [describe(layer) for layer in self.layers],
                "input_shape": list(self.input_shape) if self.input_shape else None, "dtype": self.dtype}

    def saveable_config(self) -> dict[str, Any]:
        """:meth:`get_config`, once every layer is known to come back from it as it is."""
        for path, layer in self.walk():
            check_config_complete(layer, f"layer {path}")
        return self.get_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """An unbuilt model from :meth:`get_config` output. Anything malformed (unknown layer
        types, wrong argument names or values) is refused with an ArgumentError: the config
        may come from a file written by someone else."""
        specs = config.get("layers") if isinstance(config, dict) else None
        if not isinstance(specs, list) or not specs:
            raise ArgumentError(f"config: expected a dict with a non-empty 'layers' list, got {type(config).__name__}")
        return cls(layers_from_config(specs, "config.layers"))

    def summary(self, *, print_fn=print) -> str:
        """A table of layers, output shapes and parameter counts: printed (``print_fn=None``:
        not) and returned."""
        self.require_built()
        if print_fn is not None and not callable(print_fn):
            raise ArgumentTypeError(f"print_fn: expected a function such as print, or None, got {print_fn!r:.80}")
        rows, shape, total = [], self.input_shape, 0
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            slots = layer.named_parameters() if isinstance(layer, Container) else [("", layer, n) for n in layer.params]
            count = sum(math.prod(owner.params[name].shape) for _, owner, name in slots)
            total += count
            rows.append((str(i), type(layer).__name__, str(tuple(shape)), f"{count:,d}"))
        rows = [("#", "layer", "output shape", "parameters"), *rows, ("", "total", "", f"{total:,d}")]
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = [f"Sequential on {self.backend} ({self.dtype}), input {self.input_shape}"]
        lines += ["  ".join((r[0].rjust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]),
                             r[3].rjust(widths[3]))).rstrip() for r in rows]
        table = "\n".join(lines)
        if print_fn is not None:
            print_fn(table)
        return table

    def __repr__(self) -> str:
        return "Sequential([" + ", ".join(repr(layer) for layer in self.layers) + "])"


def path_number(part: str) -> int:
    """A layer path component as an int for seeding: indices as they are, branch names hashed
    stably (block=1, shortcut=2)."""
    return int(part) if part.isdigit() else {"block": 1, "shortcut": 2}.get(part, 3)
