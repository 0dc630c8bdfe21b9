"""AdamW: torch.optim.AdamW's rule (decoupled weight decay), step for step in float64."""

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim
from xpcnn.errors import ArgumentError

from .tolerances import FLOAT64_RTOL


def _pair(torch):
    """The same small network in xpcnn (float64, NumPy) and torch, with equal weights."""
    model = xpcnn.Sequential([layers.Conv2D(4, 3, padding=1, stride=2), layers.ReLU(), layers.MaxPool2D(2),
                              layers.Flatten(), layers.Dense(10)])
    model.build((1, 12, 12), seed=1, dtype="float64", backend="numpy")
    conv_w, conv_b, dense_w, dense_b = model.get_weights()
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, stride=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(36, 10)).double()
    with torch.no_grad():
        for p, w in zip(net.parameters(), (conv_w, conv_b, dense_w.T, dense_b)):
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    return model, net


@pytest.mark.parametrize("kwargs", [{}, {"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.3},
                                    {"lr": 1e-2, "weight_decay": 0.0}], ids=["defaults", "custom", "no_decay"])
def test_adamw_matches_torch_optim_adamw_for_20_steps(kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 1, 12, 12)), rng.integers(0, 10, 16)
    model, net = _pair(torch)
    opt = optim.AdamW(**kwargs)
    torch_opt = torch.optim.AdamW(net.parameters(), **kwargs)
    for _ in range(20):
        loss = model.train_step(x, y, opt)
        torch_opt.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        torch_loss.backward()
        torch_opt.step()
        assert abs(loss - torch_loss.item()) <= FLOAT64_RTOL * abs(torch_loss.item())
    expected = [p.detach().numpy() for p in net.parameters()]
    expected[2] = expected[2].T
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT64_RTOL * np.abs(want).max())
    # The moments too: torch's exp_avg / exp_avg_sq are Adam's m / v.
    for (key, _, _), p in zip(model.named_parameters(), net.parameters()):
        m, v = torch_opt.state[p]["exp_avg"].numpy(), torch_opt.state[p]["exp_avg_sq"].numpy()
        if key.startswith("4.weight"):
            m, v = m.T, v.T
        np.testing.assert_allclose(opt.state[key]["m"], m, rtol=0, atol=FLOAT64_RTOL * np.abs(m).max())
        np.testing.assert_allclose(opt.state[key]["v"], v, rtol=0, atol=FLOAT64_RTOL * np.abs(v).max())


def test_adamw_decay_is_decoupled_from_adam_l2():
    """Same hyper-parameters, different rules: Adam's L2 goes through the moments, AdamW's does not."""
    rng = np.random.default_rng(2)
    x, y = rng.random((8, 1, 12, 12)), rng.integers(0, 10, 8)
    runs = {}
    for cls in (optim.Adam, optim.AdamW):
        model = xpcnn.Sequential([layers.Flatten(), layers.Dense(10)])
        model.build((1, 12, 12), seed=0, dtype="float64", backend="numpy")
        opt = cls(lr=1e-2, weight_decay=0.5)
        for _ in range(3):
            model.train_step(x, y, opt)
        runs[cls.__name__] = model.get_weights()[0]
    assert not np.allclose(runs["Adam"], runs["AdamW"], rtol=1e-6, atol=0)


def test_adamw_float32_stays_float32_and_state_is_saved_by_name():
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 4, 4), backend="numpy")
    opt = optim.AdamW()
    x = np.random.default_rng(0).random((4, 1, 4, 4)).astype(np.float32)
    model.train_step(x, np.array([0, 1, 2, 0]), opt)
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert all(a.dtype == np.float32 for s in opt.state.values() for a in s.values())
    assert repr(opt) == "AdamW(lr=0.001, betas=[0.9, 0.999], eps=1e-08, weight_decay=0.01)"
    assert optim.OPTIMIZERS["adamw"] is optim.AdamW
    assert optim.AdamW(**opt.hyper()).hyper() == opt.hyper()


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -1e-3}, "lr: expected a value >= 0"), ({"weight_decay": -1}, "weight_decay"),
    ({"betas": (0.9,)}, "betas: expected a pair"), ({"eps": float("nan")}, "eps")])
def test_adamw_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        optim.AdamW(**kwargs)
