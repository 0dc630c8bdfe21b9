"""Optimizers with PyTorch's update rules. They rebind parameters (``p = p - lr * g``)
rather than mutating them, so they work on immutable array libraries too, and keep
Python-float hyper-parameters so float32 stays float32.

Each rule is a pure function of one parameter, its gradient, its state and the step's
scalars (:meth:`Optimizer.update`): :meth:`Optimizer.step` applies it eagerly, and
:mod:`xpcnn.jit` traces the same function inside one compiled training step."""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._validate import flag
from .backend import device_of, fewest_operations_for, library_of, namespace_of, resolve_target, to_device
from .errors import ArgumentError, BackendMismatchError, LayerContractError, NotBuiltError


def _check_hyper(name: str, value: Any, *, low: float = 0.0, high: float | None = None,
                 strict_low: bool = False) -> float:
    """A real, finite Python float within bounds (NumPy scalars accepted, bools and strings not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ArgumentError(f"{name}: expected a finite real number, got {value!r} ({type(value).__name__})")
    if value < low or (strict_low and value == low) or (high is not None and value >= high):
        bound = f"{'>' if strict_low else '>='} {low}" + (f" and < {high}" if high is not None else "")
        raise ArgumentError(f"{name}: expected a value {bound}, got {value!r}")
    return float(value)


def _check_betas(betas: Any) -> tuple[float, float]:
    try:
        items = tuple(betas)
    except TypeError:
        items = ()
    if len(items) != 2:
        raise ArgumentError(f"betas: expected a pair (beta1, beta2) such as (0.9, 0.999), got {betas!r}")
    return (_check_hyper("betas[0]", items[0], high=1.0), _check_hyper("betas[1]", items[1], high=1.0))


def check_gradients(slots, after_backward: bool = False) -> None:
    """Every parameter of ``slots`` ((key, layer, name), as ``model.named_parameters()``) has a
    gradient: else the layer whose backward left one unset is named, or, when none has any (and
    no backward has just run), the caller is told to run backward first."""
    missing = [(key, layer, name) for key, layer, name in slots if name not in layer.grads]
    if missing and (len(missing) < len(slots) or after_backward):
        key, layer, name = missing[0]
        raise LayerContractError(
            f"layer {key.rpartition('.')[0]} ({type(layer).__name__}): its backward did not set the gradient of "
            f"parameter {name!r}; a layer's backward must set self.grads[{name!r}] for every parameter")
    if missing:
        raise NotBuiltError(f"optimizer: parameters {', '.join(k for k, _, _ in missing)} have no gradient; "
                            "run backward (or train_step) first")


class Optimizer:
    """Base: ``step(model)`` updates every parameter from ``layer.grads``; per-parameter state
    is keyed by ``"<layer index>.<name>"`` so it can be saved, restored and moved.

    A subclass defines :meth:`initial_state` (the state before the first step, zeros that
    make the first update equal PyTorch's), :meth:`scalars` (the numbers that change from
    step to step: learning rate, bias corrections) and :meth:`update` (the pure rule)."""

    def __init__(self, lr: float) -> None:
        self.lr = _check_hyper("lr", lr)  # 0 allowed, as torch.optim: a schedule may end there
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0
        self._flat = None  # see _step_flat
        self._model = None  # a weak reference to the model whose parameters the state belongs to

    @property
    def updates_flat(self) -> bool:
        """Whether the last step updated every parameter as one flat array (the GPU form)."""
        return self._flat is not None

    def step(self, model) -> None:
        """One update of all of ``model``'s parameters from their gradients."""
        if not callable(getattr(model, "named_parameters", None)):
            raise ArgumentError(f"model: expected an xpcnn Sequential, got {type(model).__name__}")
        slots = model.named_parameters()
        check_gradients(slots)
        self.bind(model, slots)
        self.check_state_location(slots)
        self.steps += 1
        scalars = self.scalars(self.steps)
        if self._updates_flat(slots):
            self._step_flat(model, slots, scalars)
            return
        self._flat = None
        for key, layer, name in slots:
            param = layer.params[name]
            state = self.state[key] if key in self.state else self.initial_state(param)
            layer.params[name], state = self.update(param, layer.grads[name], state, scalars)
            if state:
                self.state[key] = state

    # Every parameter in one update. The built-in rules are element-wise, so applying one to
    # the concatenation of all parameters (gradients, state) gives each element exactly the
    # operations of the update one parameter at a time: the same numbers, in one rule's
    # operations in all instead of per parameter (PyTorch's foreach / multi-tensor optimizers
    # do this for the same reason: on a GPU each operation is a kernel launch). The new
    # parameters and state are views into the new flat arrays; while nobody rebinds them,
    # the next step updates those flat arrays directly, with no concatenation.

    def _updates_flat(self, slots) -> bool:
        """On a GPU (or in :func:`xpcnn.fewest_operations`), for a built-in rule, with every
        parameter of one dtype."""
        if type(self).update not in _ELEMENTWISE_RULES or not slots:
            return False
        _, layer, name = slots[0]
        # The device first: on a CPU (every step there) nothing else is looked at.
        return fewest_operations_for(layer.params[name]) and \
            len({str(layer.params[name].dtype) for _, layer, name in slots}) == 1

    def _step_flat(self, model, slots, scalars) -> None:
        params = [layer.params[name] for _, layer, name in slots]
        grads = [layer.grads[name] for _, layer, name in slots]
        keys = tuple(key for key, _, _ in slots)
        xp = namespace_of(*params)
        flat_p, flat_state = self._flat_inputs(xp, keys, params)
        shared = getattr(model, "flat_grads", None)  # the NaN guard's concatenation, if current
        model.flat_grads = None
        if shared is not None and len(shared[0]) == len(grads) and all(a is b for a, b in zip(shared[0], grads)):
            flat_g = shared[1]
        else:
            flat_g = concat_flat(xp, grads)
        new_p, new_state = self.update(flat_p, flat_g, flat_state, scalars)
        views = {}
        offset = 0
        for (key, layer, name), param in zip(slots, params):
            shape = tuple(param.shape)
            span = slice(offset, offset + math.prod(shape))
            layer.params[name] = views[key] = xp.reshape(new_p[span], shape)
            if new_state:
                self.state[key] = {n: xp.reshape(a[span], shape) for n, a in new_state.items()}
            offset = span.stop
        self._flat = _Flat(keys, views, new_p, new_state, {key: dict(self.state.get(key, {})) for key in keys})

    def _flat_inputs(self, xp, keys, params):
        """(flat parameters, flat state): last step's flat arrays while every parameter and
        state array is still the view made from them, else concatenations."""
        flat = self._flat
        if flat is not None and flat.keys == keys and all(flat.param_views[k] is p for k, p in zip(keys, params)) \
                and all(_same_arrays(self.state.get(k, {}), flat.state_views[k]) for k in keys):
            return flat.params, flat.state
        flat_p = concat_flat(xp, params)
        if not any(k in self.state for k in keys):
            return flat_p, self.initial_state(flat_p)
        held = [self.state[k] if k in self.state else self.initial_state(p) for k, p in zip(keys, params)]
        return flat_p, {n: concat_flat(xp, [h[n] for h in held]) for n in held[0]}

    def bind(self, model, slots) -> None:
        """Make the state ``model``'s (``slots``: its ``named_parameters()``), before its first step:
        as a PyTorch optimizer belongs to its parameters, one that stepped another model is an
        error (its state and step count are that model's), and loaded state must fit these
        parameters, slot for slot and shape for shape. A copy or a pickle is unbound."""
        if self._model is not None and self._model() is model:
            return
        if self._model is not None and self.steps:
            raise ArgumentError(f"optimizer: it has taken {self.steps} steps on another model, whose run it "
                                f"belongs to; give this model its own optimizer ({type(self).__name__}(...))")
        shapes = {key: (layer.params[name], tuple(layer.params[name].shape)) for key, layer, name in slots}
        for key, state in self.state.items():
            if key not in shapes:
                raise ArgumentError(f"optimizer: state for parameter {key!r}, which this model does not have")
            param, shape = shapes[key]
            expected = set(self.initial_state(param))
            if set(state) != expected or any(tuple(a.shape) != shape for a in state.values()):
                got = {n: tuple(a.shape) for n, a in state.items()}
                raise ArgumentError(f"optimizer: state of {key!r} is {got}; {type(self).__name__} needs "
                                    f"{sorted(expected)} of shape {shape} for this model's parameter")
        self._model = weakref.ref(model)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None, "_flat": None}  # a weak reference does not copy

    def check_state_location(self, slots) -> None:
        """The state must live where the parameters do: after ``model.to(...)`` it moves with
        the model; an optimizer used with a model on another backend is an error, not a
        TypeError deep inside an update."""
        for key, layer, name in slots:
            state = self.state.get(key)
            if state:
                param, held = layer.params[name], next(iter(state.values()))
                where, here = (library_of(held), device_of(held)), (library_of(param), device_of(param))
                if where[0] != here[0] or (where[0] != "numpy" and where[1] != here[1]):
                    raise BackendMismatchError(
                        f"optimizer: its state is on {where[0]} ({where[1]}) but the parameters are on {here[0]} "
                        f"({here[1]}); model.to(target) moves the optimizer of the last fit with the model, "
                        "or call optimizer.to(target)"
                    )
                return

    def initial_state(self, param) -> dict[str, Any]:
        """The state of one parameter before its first update (an empty dict: no state)."""
        return {}

    def scalars(self, t: int) -> dict[str, float]:
        """The step-dependent numbers of step ``t`` (1-based) as Python floats."""
        return {"lr": self.lr}

    def update(self, param, grad, state: dict[str, Any], scalars: dict[str, Any]):
        """(new parameter, new state) from one parameter, its gradient and its state. Pure:
        the inputs are not modified. ``scalars`` are :meth:`scalars`' values, as Python floats
        or (in a compiled step) 0-d arrays."""
        raise NotImplementedError

    def to(self, target) -> Optimizer:
        """Move every state array to ``target`` (a backend name or device, as ``model.to``)."""
        backend = resolve_target(target)
        self.map_state(lambda a: to_device(a, backend))
        return self

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters, step counter and state arrays (of the model's backend)."""
        return {"hyper": self.hyper(), "steps": self.steps, "state": {k: dict(v) for k, v in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output: step counter, per-parameter state arrays and, when it
        has them, the hyper-parameters (the learning rate...), as PyTorch's ``load_state_dict``."""
        steps = state.get("steps") if isinstance(state, dict) else None
        buffers = state.get("state") if isinstance(state, dict) else None
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or not isinstance(buffers, dict):
            raise ArgumentError("state: expected a dict with an int 'steps' >= 0 and a 'state' dict (from "
                                f"state_dict()), got {state!r:.200}")
        if not all(isinstance(v, dict) for v in buffers.values()):
            raise ArgumentError("state['state']: expected a dict of per-parameter dicts of arrays")
        if "hyper" in state:  # as PyTorch's, the hyper-parameters too, checked as the constructor checks them
            try:
                vars(self).update({k: getattr(type(self)(**state["hyper"]), k) for k in state["hyper"]})
            except TypeError as e:
                raise ArgumentError(f"state['hyper']: not {type(self).__name__}'s hyper-parameters ({e})") from None
        self.steps = steps
        self.state = {k: dict(v) for k, v in buffers.items()}
        self._flat = self._model = None  # checked against the parameters of the next step's model

    def map_state(self, fn) -> None:
        """Apply ``fn`` to every state array (used to move optimizer state with the model)."""
        self.state = {k: {n: fn(a) for n, a in v.items()} for k, v in self.state.items()}
        self._flat = None  # the flat arrays stay where they were: the next step starts over

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyper().items())})"


class _Flat(NamedTuple):
    """The last flat update: the parameter keys in order, the views handed out (parameters by
    key, state dicts by key) and the flat arrays behind them."""

    keys: tuple
    param_views: dict
    params: Any
    state: dict
    state_views: dict


def _same_arrays(a: dict, b: dict) -> bool:
    """The same names bound to the very same arrays (identity, not values)."""
    return a.keys() == b.keys() and all(a[n] is b[n] for n in a)


def concat_flat(xp, arrays):
    """The arrays flattened and concatenated: (sum of sizes,)."""
    return xp.concat([xp.reshape(a, (-1,)) for a in arrays])


def _zeros_like(param):
    return namespace_of(param).zeros_like(param)


class SGD(Optimizer):
    """SGD with optional momentum / Nesterov / L2 weight decay, exactly ``torch.optim.SGD``:
    g += wd*p; b = momentum*b + g (b = g on the first step); g = g + momentum*b (Nesterov) or b; p -= lr*g."""

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.momentum = _check_hyper("momentum", momentum)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)
        self.nesterov = flag(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0.0:
            raise ArgumentError("nesterov: needs momentum > 0 (as torch.optim.SGD), got momentum=0")

    def hyper(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def initial_state(self, param):
        # momentum * 0 + g == g exactly: the zero buffer reproduces torch's "b = g" first step.
        return {"momentum": _zeros_like(param)} if self.momentum else {}

    def update(self, param, grad, state, scalars):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            buf = self.momentum * state["momentum"] + grad
            state = {"momentum": buf}
            grad = grad + self.momentum * buf if self.nesterov else buf
        return param - scalars["lr"] * grad, state


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly ``torch.optim.Adam`` (bias-corrected, eps outside the sqrt;
    ``weight_decay`` is L2: added to the gradient)."""

    def __init__(self, lr: float = 1e-3, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.betas = _check_betas(betas)
        self.eps = _check_hyper("eps", eps)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)

    def hyper(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def initial_state(self, param):
        # beta * 0 + (1 - beta) * g is exactly torch's first moment update from its zero state.
        return {"m": _zeros_like(param), "v": _zeros_like(param)}

    def scalars(self, t):
        beta1, beta2 = self.betas
        # As torch (non-capturable): bias corrections in Python floats, on the host.
        return {"lr": self.lr, "step_size": self.lr / (1.0 - beta1**t),
                "bias_correction2_sqrt": math.sqrt(1.0 - beta2**t)}

    def update(self, param, grad, state, scalars):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        return self._adam(param, grad, state, scalars)

    def _adam(self, param, grad, state, scalars):
        """The moment updates and the bias-corrected step (shared with AdamW)."""
        beta1, beta2 = self.betas
        m = beta1 * state["m"] + (1.0 - beta1) * grad
        v = beta2 * state["v"] + (1.0 - beta2) * grad * grad
        xp = namespace_of(param, grad)
        denom = xp.sqrt(v) / scalars["bias_correction2_sqrt"] + self.eps
        return param - scalars["step_size"] * (m / denom), {"m": m, "v": v}


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter), exactly ``torch.optim.AdamW``: decoupled weight decay
    ``p = p * (1 - lr * weight_decay)`` before the Adam step, the gradient left untouched."""

    def __init__(self, lr: float = 1e-3, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(lr, betas, eps, weight_decay)

    def update(self, param, grad, state, scalars):
        if self.weight_decay:
            param = param * (1.0 - scalars["lr"] * self.weight_decay)
        return self._adam(param, grad, state, scalars)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "OPTIMIZERS"]
_ELEMENTWISE_RULES = (SGD.update, Adam.update, AdamW.update)
