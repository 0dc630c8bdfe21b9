"""Optimizers with PyTorch's update rules. They rebind parameters (``p = p - lr * g``)
rather than mutating them, so they work on immutable array libraries too, and keep
Python-float hyper-parameters so float32 stays float32."""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

from .backend import namespace_of
from .errors import NotBuiltError
from .errors import ArgumentError


def _check_hyper(name: str, value: Any, *, low: float = 0.0, high: float | None = None, strict_low: bool = False) -> float:
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


class Optimizer:
    """Base: ``step(model)`` updates every parameter from ``layer.grads``; per-parameter state
    is keyed by ``"<layer index>.<name>"`` so it can be saved and restored."""

    def __init__(self, lr: float) -> None:
        self.lr = _check_hyper("lr", lr, strict_low=True)
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0

    def step(self, model) -> None:
        """One update of all of ``model``'s parameters from their gradients."""
        if not callable(getattr(model, "named_parameters", None)):
            raise ArgumentError(f"model: expected an xpcnn Sequential, got {type(model).__name__}")
        missing = [key for key, layer, name in model.named_parameters() if name not in layer.grads]
        if missing:
            raise NotBuiltError(f"optimizer: parameters {', '.join(missing)} have no gradient; run backward (or train_step) first")
        self.steps += 1
        for key, layer, name in model.named_parameters():
            layer.params[name] = self.update(key, layer.params[name], layer.grads[name])

    def update(self, key: str, param, grad):
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters, step counter and state arrays (of the model's backend)."""
        return {"hyper": self.hyper(), "steps": self.steps, "state": {k: dict(v) for k, v in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (step counter and per-parameter state arrays)."""
        steps = state.get("steps") if isinstance(state, dict) else None
        buffers = state.get("state") if isinstance(state, dict) else None
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or not isinstance(buffers, dict):
            raise ArgumentError(f"state: expected a dict with an int 'steps' >= 0 and a 'state' dict (from state_dict()), got {state!r:.200}")
        if not all(isinstance(v, dict) for v in buffers.values()):
            raise ArgumentError("state['state']: expected a dict of per-parameter dicts of arrays")
        self.steps = steps
        self.state = {k: dict(v) for k, v in buffers.items()}

    def map_state(self, fn) -> None:
        """Apply ``fn`` to every state array (used to move optimizer state with the model)."""
        self.state = {k: {n: fn(a) for n, a in v.items()} for k, v in self.state.items()}

    def hyper(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.hyper().items())})"


class SGD(Optimizer):
    """SGD with optional momentum / Nesterov / L2 weight decay, exactly ``torch.optim.SGD``:
    g += wd*p; b = momentum*b + g (b = g on the first step); g = g + momentum*b (Nesterov) or b; p -= lr*g."""

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.momentum = _check_hyper("momentum", momentum)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ArgumentError("nesterov: needs momentum > 0 (as torch.optim.SGD), got momentum=0")

    def hyper(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def update(self, key, param, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            state = self.state.setdefault(key, {})
            buf = grad if "momentum" not in state else self.momentum * state["momentum"] + grad
            state["momentum"] = buf
            grad = grad + self.momentum * buf if self.nesterov else buf
        return param - self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly ``torch.optim.Adam`` (bias-corrected, eps outside the sqrt)."""

    def __init__(self, lr: float = 1e-3, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.betas = _check_betas(betas)
        self.eps = _check_hyper("eps", eps)
        self.weight_decay = _check_hyper("weight_decay", weight_decay)

    def hyper(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def update(self, key, param, grad):
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        state = self.state.setdefault(key, {})
        m = (1.0 - beta1) * grad if "m" not in state else beta1 * state["m"] + (1.0 - beta1) * grad
        v = (1.0 - beta2) * grad * grad if "v" not in state else beta2 * state["v"] + (1.0 - beta2) * (grad * grad)
        state["m"], state["v"] = m, v
        t = self.steps
        step_size = self.lr / (1.0 - beta1**t)
        xp = namespace_of(param, grad)
        return param - step_size * (m / (xp.sqrt(v) / math.sqrt(1.0 - beta2**t) + self.eps))


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
