"""Sequential: the issue's interface, training step, dtype discipline, movement between backends."""

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim
from xpcnn.errors import DTypeError, LabelError, ShapeError


def notebook_net():
    return xpcnn.Sequential([layers.Conv2D(16, 3, bias=False), layers.AvgPool2D(2), layers.Flatten(), layers.Dense(10)])


def batch(n=8, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n)


def test_interface_as_written():
    model = notebook_net().build((1, 28, 28), seed=0, dtype="float64", backend="numpy")
    ws = model.get_weights()
    assert [tuple(w.shape) for w in ws] == [(16, 1, 3, 3), (2704, 10), (10,)]
    model.set_weights(ws)
    assert len(model.layers) == 4
    x, y = batch(4, np.float64)
    logits = model(x)
    assert logits.shape == (4, 10)
    model.layers[0](x)  # each layer runs on its own too
    grad_x = model.layers[0].backward(np.ones((4, 16, 26, 26)))
    assert grad_x.shape == (4, 1, 28, 28) and model.layers[0].grads["weight"].shape == (16, 1, 3, 3)
    loss = model.train_step(x, y, optim.SGD(lr=0.05))
    assert isinstance(loss, float)
    probs = model.predict(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


def test_same_seed_same_weights_on_every_backend():
    a = notebook_net().build((1, 28, 28), seed=3, backend="numpy")
    b = notebook_net().build((1, 28, 28), seed=3, backend="array_api_strict")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(xpcnn.to_numpy(wa), xpcnn.to_numpy(wb))
    c = notebook_net().build((1, 28, 28), seed=4, backend="numpy")
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@pytest.mark.parametrize("opt",
                         [optim.SGD(lr=0.05), optim.SGD(lr=0.02, momentum=0.9, nesterov=True), optim.Adam(lr=1e-3)],
                         ids=["sgd", "nesterov", "adam"])
def test_training_step_lowers_loss_on_a_fixed_batch_float32_stays_float32(opt):
    model = notebook_net().build((1, 28, 28), seed=0, dtype="float32", backend="numpy")
    x, y = batch(16)
    first = model.train_step(x, y, opt)
    for _ in range(10):
        last = model.train_step(x, y, opt)
    assert last < 0.5 * first
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert model(x).dtype == np.float32
    assert all(g.dtype == np.float32 for layer in model.layers for g in layer.grads.values())
    for state in opt.state.values():
        assert all(a.dtype == np.float32 for a in state.values())


def test_train_step_does_not_mutate_inputs():
    model = notebook_net().build((1, 28, 28), backend="numpy")
    x, y = batch(4)
    x0, y0 = x.copy(), y.copy()
    model.train_step(x, y, optim.SGD(lr=0.1))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_model_to_moves_parameters_and_back():
    pytest.importorskip("torch")
    model = notebook_net().build((1, 28, 28), seed=1, dtype="float64", backend="numpy")
    x, _ = batch(2, np.float64)
    expected = model.predict(x)
    assert model.to("torch") is model
    import torch

    probs = model.predict(torch.from_numpy(x))
    assert isinstance(probs, torch.Tensor)
    np.testing.assert_allclose(probs.numpy(), expected, rtol=1e-12)
    model.to("numpy")
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12)


def test_set_weights_accepts_other_backends_and_casts():
    model = notebook_net().build((1, 28, 28), dtype="float32", backend="numpy")
    strict = notebook_net().build((1, 28, 28), seed=9, dtype="float64", backend="array_api_strict:device1")
    model.set_weights(strict.get_weights())
    assert all(w.dtype == np.float32 for w in model.get_weights())
    np.testing.assert_allclose(model.get_weights()[1], xpcnn.to_numpy(strict.get_weights()[1]), rtol=1e-6)


def test_bad_inputs_have_clear_errors():
    model = notebook_net().build((1, 28, 28), backend="numpy")
    x, y = batch(4)
    with pytest.raises(ShapeError, match=r"x: expected shape \(N, 1, 28, 28\), got \(4, 28, 28\).*channel axis"):
        model(x[:, 0])
    with pytest.raises(DTypeError, match="x: expected a float32 or float64 array, got dtype int64"):
        model(x.astype(np.int64))
    with pytest.raises(LabelError, match=r"^y: expected values in \[0, 9\], got values from 0 to 10"):
        model.train_step(x, np.array([0, 1, 2, 10]), optim.SGD(lr=0.1))
    with pytest.raises(LabelError, match="integer dtype"):
        model.train_step(x, y.astype(np.float32), optim.SGD(lr=0.1))
    with pytest.raises(ShapeError, match=r"x: expected shape \(N, 1, 28, 28\), got \(1, 3, 28, 28\)"):
        model.layers[0](np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        xpcnn.functional.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ShapeError, match="expected a 4-d array"):
        xpcnn.functional.conv2d(np.zeros((1, 2, 2)), np.zeros((1, 1, 1, 1)))


def test_summary_and_config_round_trip():
    model = notebook_net().build((1, 28, 28), backend="numpy")
    table = model.summary(print_fn=None)
    assert table.splitlines()[-1].split() == ["total", "27,194"]
    assert [len(line) for line in table.splitlines()[1:]] == sorted(len(line) for line in table.splitlines()[1:])[::1] \
        or len({line.index("parameters") for line in table.splitlines()[1:2]}) == 1
    clone = xpcnn.Sequential.from_config(model.get_config())
    assert repr(clone) == repr(model)


@pytest.mark.parametrize("name", ["sgd", "sgd_nesterov_wd", "adam_wd"])
def test_training_matches_torch_optim_step_for_step(name):
    """20 steps of Sequential.train_step against the same torch network and torch.optim (float64)."""
    torch = pytest.importorskip("torch")
    from tests.tolerances import FLOAT64_RTOL

    ours, theirs = {
        "sgd": (lambda: optim.SGD(0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
        "sgd_nesterov_wd": (lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
        "adam_wd": (lambda: optim.Adam(1e-2, weight_decay=1e-3),
                    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3)),
    }[name]
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 1, 12, 12)), rng.integers(0, 10, 16)
    model = xpcnn.Sequential([layers.Conv2D(4, 3, padding=1, stride=2), layers.ReLU(), layers.MaxPool2D(2),
                              layers.Flatten(), layers.Dense(10)]).build((1, 12, 12), dtype="float64", backend="numpy")
    conv_w, conv_b, dense_w, dense_b = model.get_weights()
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, stride=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(36, 10)).double()
    with torch.no_grad():
        for p, w in zip(net.parameters(), (conv_w, conv_b, dense_w.T, dense_b)):
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))
    opt, torch_opt = ours(), theirs(net.parameters())
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
