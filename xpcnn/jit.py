"""Compiled training step and inference for the jax backend.

:class:`CompiledStep` runs forward, loss, backward and the optimizer update as one ``jax.jit``
function of (parameters, buffers, optimizer state, step scalars, batch); :func:`forward` runs
inference-mode logits as one. Nothing here re-implements a layer: inside the traced function
the parameters and buffers are bound into the model's own layers as tracers, and the model's
normal forward, the fused softmax cross-entropy, backward and the optimizer's pure rule
(:meth:`xpcnn.optim.Optimizer.update`) run on them. Layers cache intermediates in Python
attributes, which tracing allows since nothing needs a concrete value. Every layer gets its
own arrays and attributes back when the trace ends, so the model never holds a tracer;
outside, the new arrays are written back to the model and the optimizer.

Checks that need a concrete value stay outside: the NaN guard is a set of all-finite flags
computed inside and read by the caller. A non-finite step discards its own update inside the
function (parameters, buffers and state keep their values), and :meth:`CompiledStep.error`
names the first non-finite value. Data are validated once per fit, as for the eager step.

A function compiles once per batch shape (the last, smaller batch of an epoch compiles a
second time) and again when an optimizer hyper-parameter other than the learning rate
changes; learning-rate schedules do not recompile. Compiled functions are kept per model, so
a second ``fit`` or ``evaluate`` reuses them. Layers with host-side state that advances every
training step are refused (:func:`unsupported` says why), except Dropout: its mask keys go in
as arrays and the host advances its counter, so compiled masks equal the eager ones.
"""

from __future__ import annotations

import weakref
from typing import Any

from .backend import namespace_of
from .errors import ArgumentError, NonFiniteError
from .functional.dropout import dropout_keys
from .functional.loss import cross_entropy_kernel
from .layers import Dropout
from .optim import Optimizer


def unsupported(model) -> str | None:
    """Why ``model`` cannot run a compiled training step, or None when it can."""
    if model.backend is None or not model.backend.compiles:
        return f"a compiled step needs the jax backend; the model is on {model.backend}"
    for path, layer in model.walk():
        if layer.get_state() and not isinstance(layer, Dropout):
            return (f"layer {path} ({type(layer).__name__}) keeps host-side state that advances every step "
                    f"({', '.join(layer.get_state())}), which a compiled step cannot advance")
    return None


class CompiledStep:
    """One training step of ``model`` with ``optimizer`` as a single ``jax.jit`` function.

    ``step(xb, yb)`` with xb (N, C, H, W) and yb (N,) on the model's jax device returns the
    device array ``[guard, loss, correct]`` (nothing is read back to the host): ``guard``
    equals ``loss`` when the parameters, the loss and every gradient are finite, and is NaN
    otherwise. The model and optimizer hold the step's update exactly when ``guard`` is
    finite. :meth:`train` reads the values and raises on a non-finite step, as ``fit`` does.
    """

    def __init__(self, model, optimizer: Optimizer, *, label_smoothing: float = 0.0) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ArgumentError(f"optimizer: expected an xpcnn.optim optimizer instance, got {optimizer!r:.80}")
        model.require_built()
        reason = unsupported(model)
        if reason is not None:
            raise ArgumentError(f"compile: {reason}; pass compile=False")
        self.model, self.optimizer, self.label_smoothing = model, optimizer, float(label_smoothing)
        self._compiled = _compiled(model, "step")
        self.last_flags = None

    @staticmethod
    def pure(model, params, buffers, state, scalars, keys, xb, yb, *, optimizer, label_smoothing, hyper):
        """(new params, new buffers, new state, [guard, loss, correct], finite flags): a pure
        function of its array arguments. Static: the optimizer (its rule), the label smoothing and
        ``hyper``, the optimizer's fixed hyper-parameters (read from it while tracing; they only
        key the compilation cache). Flags, in :meth:`_flag_names` order: each parameter, the
        loss, each gradient."""
        xp = namespace_of(xb)
        with _bound(model, params, buffers), _dropout_keys(model, keys):
            logits = model.forward(xb, True)
            loss, grad = cross_entropy_kernel(xp, logits, yb, label_smoothing)
            model.backward(grad)
            grads = {key: layer.grads[name] for key, layer, name in model.named_parameters()}
            stepped = {key: layer.buffers[name] for key, layer, name in model.named_buffers()}
        finite = [*params.values(), loss, *grads.values()]
        flags = xp.stack([xp.all(xp.isfinite(a)) for a in finite])
        ok = xp.all(flags)
        new_params, new_state = {}, {}
        for key in params:
            param, held = optimizer.update(params[key], grads[key], state[key], scalars)
            new_params[key] = xp.where(ok, param, params[key])
            new_state[key] = {name: xp.where(ok, a, state[key][name]) for name, a in held.items()}
        new_buffers = {key: xp.where(ok, stepped[key], buffers[key]) for key in buffers}
        correct = xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, logits.dtype))
        guard = xp.where(ok, loss, xp.asarray(float("nan"), dtype=loss.dtype))
        return new_params, new_buffers, new_state, xp.stack([guard, loss, correct]), flags

    def __call__(self, xb, yb):
        model, optimizer = self.model, self.optimizer
        params_slots = model.named_parameters()
        optimizer.bind(model, params_slots)
        optimizer.check_state_location(params_slots)
        params, buffers = _arrays(model)
        state = {key: optimizer.state[key] if key in optimizer.state else optimizer.initial_state(params[key])
                 for key in params}
        scalars = optimizer.scalars(optimizer.steps + 1)
        hyper = repr({k: v for k, v in optimizer.hyper().items() if k != "lr"})
        # Dropout masks: each layer's (seed, counter) keys go in as arrays, so the masks match
        # the eager step's and one compilation serves every step; the host advances the counters.
        dropouts = [(path, layer) for path, layer in model.walk() if isinstance(layer, Dropout)]
        keys = {path: model.backend.asarray(dropout_keys(layer.key, layer.counter), dtype="int32")
                for path, layer in dropouts}
        with model.backend.activate():
            new_params, new_buffers, new_state, values, flags = self._compiled(
                params, buffers, state, scalars, keys, xb, yb,
                optimizer=optimizer, label_smoothing=self.label_smoothing, hyper=hyper)
        # A non-finite step returns every array unchanged (selected inside), so writing back is
        # harmless; its count is taken back by error() once the caller has read the guard.
        # Counting here keeps the host from waiting on the device every step.
        for key, layer, name in params_slots:
            layer.params[name] = new_params[key]
        for key, layer, name in model.named_buffers():
            layer.buffers[name] = new_buffers[key]
        for key, _, _ in params_slots:
            if new_state[key]:
                optimizer.state[key] = new_state[key]
        optimizer.steps += 1
        for _, layer in dropouts:
            layer.counter += 1
        self.last_flags = flags
        return values

    def _flag_names(self) -> list[str]:
        slots = self.model.named_parameters()
        return ([f"parameter {key} holds NaN/Inf" for key, _, _ in slots] + ["the loss is the first non-finite value"]
                + [f"the gradient of {key} is the first non-finite gradient" for key, _, _ in slots])

    def error(self, epoch: int, step: int, loss: float, flags=None, *, updated: bool = False) -> NonFiniteError:
        """The :class:`NonFiniteError` for a step whose guard came back non-finite. ``flags``: that
        step's finite flags (:attr:`last_flags` right after the call; default the last step's);
        ``updated``: later steps ran before the read (``fit(sync_every > 1)``). The step's own
        update was discarded, so its count is taken back from the optimizer."""
        import numpy as np

        self.optimizer.steps -= 1
        finite = np.asarray(self.last_flags if flags is None else flags)
        where = self._flag_names()[int(np.argmin(finite))]
        state = ("The weights were not updated by this step but hold the later steps' updates up to the read "
                 "(values are read every sync_every steps); restore the last checkpoint" if updated
                 else "The weights were not updated by this step")
        err = NonFiniteError(f"training stopped at epoch {epoch + 1}, step {step + 1}: the loss is {loss}; {where}. "
                             f"{state}; lower the learning rate, check the data, or use float64")
        err.epoch, err.step, err.where = epoch + 1, step + 1, where
        return err

    def train(self, xb, yb, *, epoch: int = 0, step: int = 0) -> tuple[float, int]:
        """Run one step and read it back: (loss, correct predictions). Raises NonFiniteError
        naming ``epoch`` and ``step`` (0-based here, 1-based in the message) when a parameter,
        the loss or a gradient is non-finite; the model and optimizer are then as before."""
        import numpy as np

        guard, loss, correct = np.asarray(self(xb, yb)).tolist()
        if not np.isfinite(guard):
            raise self.error(epoch, step, loss)
        return loss, int(correct)


def make_step(model, optimizer: Optimizer, *, label_smoothing: float = 0.0) -> CompiledStep:
    """The compiled training step of ``model`` (built, on the jax backend) with ``optimizer``."""
    return CompiledStep(model, optimizer, label_smoothing=label_smoothing)


def forward(model, x):
    """Inference-mode logits (N, K) of ``model`` (on the jax backend) for a checked batch x
    (N, C, H, W), as one compiled function of (parameters, buffers, x)."""
    with model.backend.activate():
        return _compiled(model, "forward")(*_arrays(model), x)


def _logits(model, params, buffers, x):
    with _bound(model, params, buffers):
        return model.forward(x, False)


# The jax.jit functions of each model, kept while the model lives: jax caches compilations per
# function object, so a second fit / evaluate / predict reuses them. They reach their model
# through a weak reference, so this cache never keeps a model alive.
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(model, kind: str):
    import jax

    functions = _cache.setdefault(model, {})
    if kind not in functions:
        ref = weakref.ref(model)
        if kind == "step":
            functions[kind] = jax.jit(lambda *a, **k: CompiledStep.pure(ref(), *a, **k),
                                      static_argnames=("optimizer", "label_smoothing", "hyper"))
        else:
            functions[kind] = jax.jit(lambda *a: _logits(ref(), *a))
    return functions[kind]


# ---------------------------------------------------------------- binding tracers into layers


def _arrays(model) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters, buffers) of ``model`` keyed as ``named_parameters`` / ``named_buffers``."""
    return ({key: layer.params[name] for key, layer, name in model.named_parameters()},
            {key: layer.buffers[name] for key, layer, name in model.named_buffers()})


class _dropout_keys:
    """``with _dropout_keys(model, keys):`` Dropout layers draw their masks from the traced
    ``keys`` ({path: int32 array of 2}) inside the block."""

    def __init__(self, model, keys) -> None:
        self.layers = [(layer, keys[path]) for path, layer in model.walk() if path in keys]

    def __enter__(self):
        for layer, k in self.layers:
            layer.traced_keys = (k[0], k[1])
        return self

    def __exit__(self, *exc) -> None:
        for layer, _ in self.layers:
            layer.traced_keys = None


class _bound:
    """``with _bound(model, params, buffers):`` the layers hold ``params`` / ``buffers`` (tracers)
    inside the block; after it, every layer has its own arrays and attributes back."""

    def __init__(self, model, params, buffers) -> None:
        self.model, self.params, self.buffers = model, params, buffers

    def __enter__(self):
        model = self.model
        # What a forward / backward leaves on a layer besides params and buffers (tracers, here).
        self.layers = [(layer, dict(layer.grads), layer.saved_values) for layer in model.run_layers()]
        self.originals = [(layer.params, name, layer.params[name]) for _, layer, name in model.named_parameters()]
        self.originals += [(layer.buffers, name, layer.buffers[name]) for _, layer, name in model.named_buffers()]
        for key, layer, name in model.named_parameters():
            layer.params[name] = self.params[key]
        for key, layer, name in model.named_buffers():
            layer.buffers[name] = self.buffers[key]
        return self

    def __exit__(self, *exc) -> None:
        for mapping, name, value in self.originals:
            mapping[name] = value
        for layer, grads, saved in self.layers:
            layer.grads.clear()
            layer.grads.update(grads)
            layer.saved_values = saved
