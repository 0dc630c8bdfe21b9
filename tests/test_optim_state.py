"""Optimizer state moves with the model: fit, model.to(other backend), fit again continues the
same run as if nothing had moved (float64, every backend pair available here)."""

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim
from xpcnn.backend import library_of
from xpcnn.errors import BackendMismatchError

from .tolerances import FLOAT64_RTOL


def net():
    return xpcnn.Sequential([layers.Conv2D(3, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
                             layers.Flatten(), layers.Dense(4)])


def data(n=48):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 8, 8)), rng.integers(0, 4, n)


@pytest.fixture
def jax_x64():
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _two_fits(route, make_opt):
    """fit one epoch, move along ``route`` (backend names), fit another epoch; returns the model."""
    x, y = data()
    model = net().build((1, 8, 8), seed=1, dtype="float64", backend="numpy")
    model.fit(x, y, epochs=1, batch_size=16, optimizer=make_opt(), verbose=0, seed=3)
    for target in route:
        model.to(target)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=4)
    return model


OPTIMIZERS = {"adam": lambda: optim.Adam(1e-2), "sgd_momentum": lambda: optim.SGD(0.1, momentum=0.9),
              "adamw": lambda: optim.AdamW(1e-2)}


@pytest.mark.parametrize("opt", list(OPTIMIZERS), ids=list(OPTIMIZERS))
@pytest.mark.parametrize("route", [("torch",), ("torch", "numpy"), ("array_api_strict",), ("array_api_strict:device1",),
                                   ("jax",)], ids=["torch", "torch-numpy", "strict", "strict-device1", "jax"])
def test_fit_move_fit_matches_an_uninterrupted_run(route, opt, request):
    for name in {r.split(":")[0] for r in route}:
        pytest.importorskip(name)
    if "jax" in route:
        request.getfixturevalue("jax_x64")
    moved = _two_fits(route, OPTIMIZERS[opt])
    still = _two_fits((), OPTIMIZERS[opt])
    final = route[-1].split(":")[0]
    assert moved.optimizer.steps == still.optimizer.steps == 6
    for key, state in still.optimizer.state.items():
        for name, want in state.items():
            got = moved.optimizer.state[key][name]
            assert library_of(got) == final
            np.testing.assert_allclose(xpcnn.to_numpy(got), want, rtol=0, atol=FLOAT64_RTOL * np.abs(want).max())
    for got, want in zip(moved.get_weights(), still.get_weights()):
        assert library_of(got) == final
        np.testing.assert_allclose(xpcnn.to_numpy(got), want, rtol=0, atol=FLOAT64_RTOL * np.abs(want).max())


def test_optimizer_to_moves_its_state_and_a_stale_one_is_named():
    pytest.importorskip("torch")
    x, y = data(16)
    model = net().build((1, 8, 8), dtype="float64", backend="numpy")
    opt = optim.Adam(1e-2)
    model.train_step(x, y, opt)
    model.to("torch")  # opt is not model.optimizer (train_step does not keep it): its state stays behind
    stale = r"optimizer: its state is on numpy .* parameters are on torch.*optimizer\.to"
    with pytest.raises(BackendMismatchError, match=stale):
        model.train_step(xpcnn.to_device(x, "torch"), xpcnn.to_device(y, "torch"), opt)
    assert opt.to("torch") is opt
    assert all(library_of(a) == "torch" for s in opt.state.values() for a in s.values())
    model.train_step(xpcnn.to_device(x, "torch"), xpcnn.to_device(y, "torch"), opt)
    assert opt.steps == 2


# ---------------------------------------------------------------- state belongs to one model


def test_an_optimizer_that_stepped_on_one_model_is_refused_by_another():
    """As a PyTorch optimizer belongs to its parameters: reusing one would move the new model's
    weights with the old one's moments (same shapes), or reshape them (other shapes)."""
    x, y = data()
    first = net().build((1, 8, 8), seed=1, dtype="float64", backend="numpy")
    adam = optim.Adam(1e-2)
    first.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)
    for other in (net(), xpcnn.Sequential([layers.Flatten(), layers.Dense(4)])):
        other.build((1, 8, 8), seed=2, dtype="float64", backend="numpy")
        before = [w.copy() for w in other.get_weights()]
        with pytest.raises(xpcnn.errors.ArgumentError, match=r"taken 3 steps on another model"):
            other.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)
        assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))  # nothing moved
    first.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)  # its own model goes on
    assert adam.steps == 6


def test_loaded_state_must_fit_the_parameters_slot_for_slot():
    x, y = data()
    model = net().build((1, 8, 8), seed=1, dtype="float64", backend="numpy")
    adam = optim.Adam(1e-2)
    model.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)
    sgd = optim.SGD(0.1, momentum=0.9)
    with pytest.raises(xpcnn.errors.ArgumentError, match=r"state\['hyper'\]: not SGD's hyper-parameters"):
        sgd.load_state_dict(adam.state_dict())  # betas, eps: Adam's
    sgd.load_state_dict({k: v for k, v in adam.state_dict().items() if k != "hyper"})  # moments m, v where SGD
    # keeps a momentum buffer
    fresh = net().build((1, 8, 8), seed=1, dtype="float64", backend="numpy")
    with pytest.raises(xpcnn.errors.ArgumentError, match=r"SGD needs \['momentum'\]"):
        fresh.fit(x, y, epochs=1, batch_size=16, optimizer=sgd, verbose=0)
    small = xpcnn.Sequential([layers.Conv2D(3, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(),
                              layers.Dense(4)]).build((1, 6, 6), seed=1, dtype="float64", backend="numpy")
    other = optim.Adam(1e-2)
    other.load_state_dict(adam.state_dict())  # the Dense weight is (27, 4) here, (48, 4) there
    with pytest.raises(xpcnn.errors.ArgumentError, match=r"state of '4.weight' .* of shape \(27, 4\)"):
        small.fit(data()[0][:, :, :6, :6], y, epochs=1, batch_size=16, optimizer=other, verbose=0)
    same = optim.Adam(1e-2)
    same.load_state_dict(adam.state_dict())  # fits: with the same weights it continues as the original does
    fresh.set_weights(model.get_weights())
    fresh.fit(x, y, epochs=1, batch_size=16, optimizer=same, verbose=0, seed=4)
    model.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), model.get_weights()))


def test_the_compiled_jax_step_refuses_another_models_optimizer_too(jax_x64):
    x, y = data()
    first, second = (net().build((1, 8, 8), seed=s, dtype="float64", backend="jax") for s in (1, 2))
    adam = optim.Adam(1e-2)
    first.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)  # jax: the compiled step by default
    with pytest.raises(xpcnn.errors.ArgumentError, match="taken 3 steps on another model"):
        second.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)


def test_load_state_dict_restores_the_hyper_parameters_as_pytorch_does():
    x, y = data()
    model = net().build((1, 8, 8), seed=1, dtype="float64", backend="numpy")
    adam = optim.Adam(1e-3, betas=(0.8, 0.99), weight_decay=0.01)
    model.fit(x, y, epochs=1, batch_size=16, optimizer=adam, verbose=0)
    other = optim.Adam(0.5)
    other.load_state_dict(adam.state_dict())
    assert (other.lr, other.betas, other.eps, other.weight_decay) == (1e-3, (0.8, 0.99), adam.eps, 0.01)
    with pytest.raises(xpcnn.errors.ArgumentError, match="lr"):
        other.load_state_dict({**adam.state_dict(), "hyper": {**adam.hyper(), "lr": -1.0}})
