"""The optimizers' flat update (xpcnn.optim.Optimizer._step_flat, their GPU form): one update
over the concatenation of every parameter, gradient and state array. The built-in rules are
element-wise, so it must give exactly (bitwise) the numbers of the update one parameter at a
time; it must reuse its flat arrays while nobody rebinds a parameter or a state array, and
start over from the current values when somebody does."""

import contextlib

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim

OPTIMIZERS = [
    ("sgd", lambda: optim.SGD(lr=0.05)),
    ("sgd nesterov, weight decay", lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam, weight decay", lambda: optim.Adam(lr=1e-2, weight_decay=1e-2)),
    ("adamw", lambda: optim.AdamW(lr=1e-2)),
]


def net(backend, dtype="float64"):
    # No max pool and no stride-1 input gradient: the layers' own two forms round differently,
    # so only the optimizer's form changes between the runs compared here.
    return xpcnn.Sequential([layers.Conv2D(4, 3, stride=2), layers.ReLU(), layers.Flatten(), layers.Dense(16),
                             layers.BatchNorm1D(),
                             layers.Dense(5)]).build((1, 9, 9), dtype=dtype, backend=backend.name, seed=3)


def data(backend, n=12, dtype="float64"):
    rng = np.random.default_rng(0)
    return (xpcnn.to_device(rng.random((n, 1, 9, 9)).astype(dtype), backend.name),
            xpcnn.to_device(rng.integers(0, 5, n), backend.name))


def snapshot(model, opt):
    return [xpcnn.to_numpy(w) for w in model.get_weights()] + \
        [xpcnn.to_numpy(a) for key in sorted(opt.state) for _, a in sorted(opt.state[key].items())]


def run(backend, make_opt, fewest, steps=3, between=None):
    model, opt = net(backend), make_opt()
    x, y = data(backend)
    with xpcnn.fewest_operations(fewest):
        for i in range(steps):
            model.train_step(x, y, opt)
            if between is not None:
                between(i, model, opt)
    assert opt.updates_flat == fewest
    return snapshot(model, opt)


def assert_bitwise(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape and np.array_equal(u, v)


@pytest.mark.parametrize("name, make_opt", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_flat_update_is_bitwise_the_per_parameter_update(backend, name, make_opt):
    if backend.name == "jax":
        jax = pytest.importorskip("jax")
        previous = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
    try:
        assert_bitwise(run(backend, make_opt, fewest=True), run(backend, make_opt, fewest=False))
    finally:
        if backend.name == "jax":
            jax.config.update("jax_enable_x64", previous)


def test_flat_arrays_are_reused_while_nothing_is_rebound(monkeypatch):
    """After the first step no concatenation at all: the parameters and the momentum are still
    the views of the last update, and the gradients come concatenated from the NaN guard."""
    concatenations = []
    real = optim.concat_flat
    monkeypatch.setattr(optim, "concat_flat",
                        lambda xp, arrays: concatenations.append(len(arrays)) or real(xp, arrays))
    backend = xpcnn.backend.load_backend("numpy")
    model, opt = net(backend), optim.SGD(lr=0.05, momentum=0.9)
    x, y = data(backend)
    with xpcnn.fewest_operations():
        model.train_step(x, y, opt)
        first = list(concatenations)
        model.train_step(x, y, opt)
        model.train_step(x, y, opt)
    assert first == [len(model.get_weights())]  # the parameters once; the state starts as zeros of the flat
    assert concatenations == first


@pytest.mark.parametrize("change", ["set_weights", "load_state_dict", "one parameter rebound"])
def test_rebinding_starts_over_from_the_current_values(change):
    """What a user (or a checkpoint restore) puts in place between steps is what the next flat
    update starts from: the same numbers as the per-parameter update given the same changes."""
    backend = xpcnn.backend.load_backend("numpy")
    make_opt = OPTIMIZERS[2][1]  # Adam: two state arrays per parameter

    def between(i, model, opt):
        if i != 0:
            return
        if change == "set_weights":
            model.set_weights([w * 0.5 for w in model.get_weights()])
        elif change == "load_state_dict":
            state = opt.state_dict()
            state["state"] = {k: {n: a * 2.0 for n, a in v.items()} for k, v in state["state"].items()}
            opt.load_state_dict(state)
        else:
            model.layers[-1].params["bias"] = model.layers[-1].params["bias"] + 1.0

    assert_bitwise(run(backend, make_opt, True, between=between), run(backend, make_opt, False, between=between))


def test_a_rule_of_its_own_is_applied_per_parameter():
    """A subclass with its own update may not be element-wise (LARS, say, takes norms)."""
    class Scaled(optim.SGD):
        def update(self, param, grad, state, scalars):
            return param - scalars["lr"] * grad / (1.0 + float(np.abs(xpcnn.to_numpy(grad)).max())), state

    backend = xpcnn.backend.load_backend("numpy")
    model, opt = net(backend), Scaled(lr=0.1)
    x, y = data(backend)
    with xpcnn.fewest_operations():
        model.train_step(x, y, opt)
    assert not opt.updates_flat


@pytest.mark.parametrize("fewest", [False, True], ids=["plain", "gpu-forms"])
def test_gradients_changed_in_place_after_loss_and_grad_are_the_ones_stepped(fewest):
    with xpcnn.fewest_operations() if fewest else contextlib.nullcontext():
        numpy = xpcnn.backend.load_backend("numpy")
        model = net(numpy)
        x, y = data(numpy)
        before = [np.array(w, copy=True) for w in model.get_weights()]
        model.loss_and_grad(x, y)
        for _, layer, name in model.named_parameters():
            layer.grads[name] *= 0.0  # as manual gradient clipping might, in place
        optim.SGD(0.1).step(model)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
