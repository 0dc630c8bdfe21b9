"""The round-2 layers at the layer and model level: BatchNorm (vs PyTorch, both modes, running
statistics), Dropout (reproducible masks on every backend, across a checkpoint resume), Residual
(shapes, names, files, devices), custom layers, and which calls run in training mode."""

import pickle

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim
from xpcnn.errors import ArgumentError, ShapeError

from .docs_blocks import python_blocks, run_blocks
from .tolerances import FLOAT64_RTOL

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # see tests/conftest.py single_threaded_torch


def assert_close(name, got, expected):
    got, expected = np.asarray(xpcnn.to_numpy(got)), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    err, scale = np.abs(got - expected).max(), np.abs(expected).max()
    assert err <= FLOAT64_RTOL * scale, f"{name}: max abs error {err:.3g}, relative {err / scale:.3g}"


# ---------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("kind, shape", [("2d", (3, 4, 5)), ("1d", (6,))])
def test_batch_norm_layer_matches_torch_in_both_modes(kind, shape):
    rng = np.random.default_rng(0)
    xp_layer = (layers.BatchNorm2D if kind == "2d" else layers.BatchNorm1D)(momentum=0.3, eps=1e-3)
    model = xpcnn.Sequential([xp_layer]).build(shape, dtype="float64", backend="numpy")
    c = shape[0]
    weight, bias = 1 + 0.3 * rng.standard_normal(c), 0.2 * rng.standard_normal(c)
    mean, var = 0.5 * rng.standard_normal(c), 0.5 + rng.random(c)
    model.set_weights([weight, bias])
    model.set_buffers([mean, var])
    ref = (torch.nn.BatchNorm2d if kind == "2d" else torch.nn.BatchNorm1d)(c, momentum=0.3, eps=1e-3).double()
    with torch.no_grad():
        for t, a in ((ref.weight, weight), (ref.bias, bias), (ref.running_mean, mean), (ref.running_var, var)):
            t.copy_(torch.from_numpy(a))

    for step, training in enumerate([True, True, False]):  # two training steps: the running averages compound
        x = 2 + 3 * rng.standard_normal((5, *shape))
        grad_y = rng.standard_normal((5, *shape))
        ref.train(training)
        xt = torch.tensor(x, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(grad_y))
        y = xp_layer.forward(x, training=training)
        grad_x = xp_layer.backward(grad_y)
        where = f"step {step} ({'train' if training else 'eval'})"
        assert_close(f"{where} y", y, yt.detach().numpy())
        assert_close(f"{where} grad_x", grad_x, xt.grad.numpy())
        assert_close(f"{where} grad weight", xp_layer.grads["weight"], ref.weight.grad.numpy())
        assert_close(f"{where} grad bias", xp_layer.grads["bias"], ref.bias.grad.numpy())
        assert_close(f"{where} running_mean", xp_layer.buffers["running_mean"], ref.running_mean.numpy())
        assert_close(f"{where} running_var", xp_layer.buffers["running_var"], ref.running_var.numpy())
        ref.weight.grad = ref.bias.grad = None
    assert not np.allclose(xp_layer.buffers["running_mean"], mean)  # the statistics did move


@pytest.mark.parametrize("kind, x_shape", [("2d", (1, 3, 1, 1)), ("1d", (1, 4))])
def test_batch_norm_refuses_one_value_per_channel_when_training(kind, x_shape):
    layer = layers.BatchNorm2D() if kind == "2d" else layers.BatchNorm1D()
    model = xpcnn.Sequential([layer]).build(x_shape[1:], dtype="float64", backend="numpy")
    x = np.arange(float(np.prod(x_shape))).reshape(x_shape)
    with pytest.raises(ShapeError, match=r"^x: .*more than 1 value per channel"):
        model.forward(x, training=True)
    np.testing.assert_allclose(model(x), x / np.sqrt(1 + 1e-5), rtol=FLOAT64_RTOL)  # inference takes it


# ---------------------------------------------------------------- Dropout


def dropout_model(backend, seed=7, p=0.4):
    return xpcnn.Sequential([layers.Dropout(p)]).build((4, 8, 8), seed=seed, dtype="float32", backend=backend)


def test_dropout_is_identity_in_inference_and_refuses_bad_p():
    model = dropout_model("numpy")
    x = np.random.default_rng(0).random((3, 4, 8, 8)).astype(np.float32)
    assert np.array_equal(model(x), x) and np.array_equal(model.forward(x, training=False), x)
    assert model.layers[0].counter == 0
    for p in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ArgumentError, match="p: expected a probability"):
            layers.Dropout(p)


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_dropout_masks_are_the_same_on_every_backend(backend):
    ones = np.ones((3, 4, 8, 8), dtype=np.float32)
    reference = dropout_model("numpy")
    other = dropout_model(backend)
    x_other = xpcnn.to_device(ones, backend)
    for step in range(3):
        want = reference.forward(ones, training=True)
        got = other.forward(x_other, training=True)
        assert xpcnn.backend.library_of(got) == backend.split(":")[0]
        assert np.array_equal(xpcnn.to_numpy(got), want), f"step {step}: masks differ"
    masks = [dropout_model("numpy", seed=s).forward(ones, training=True) for s in (7, 8)]
    assert not np.array_equal(masks[0], masks[1])  # the seed matters
    assert not np.array_equal(want, masks[0])  # and so does the counter (the third mask is not the first)
    kept = float(np.mean(want != 0))
    assert abs(kept - 0.6) < 4 * np.sqrt(0.6 * 0.4 / want.size)
    assert np.allclose(want[want != 0], 1 / 0.6)


def test_dropout_backward_uses_the_forward_mask():
    model = dropout_model("numpy", p=0.5)
    layer = model.layers[0]
    x = np.random.default_rng(1).random((2, 4, 8, 8)).astype(np.float32) + 1
    y = layer.forward(x, training=True)
    g = np.random.default_rng(2).random(x.shape).astype(np.float32)
    grad = layer.backward(g)
    mask = y / x
    assert set(np.unique(np.round(mask, 5))) == {0.0, 2.0}
    assert np.array_equal(grad, g * mask.astype(np.float32))
    t = torch.tensor(x, requires_grad=True)
    (t * torch.from_numpy(mask)).backward(torch.from_numpy(g))  # the same mask fed to torch
    assert np.array_equal(grad, t.grad.numpy())


def dropout_net():
    return xpcnn.Sequential([layers.Conv2D(4, 3), layers.ReLU(), layers.Dropout(0.3), layers.Flatten(),
                             layers.Dropout(0.2), layers.Dense(10)])


def fit_dropout(epochs, directory=None, resume=False):
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 1, 8, 8)), rng.integers(0, 10, 48)
    model = dropout_net()
    if not resume:
        model.build((1, 8, 8), seed=3, dtype="float64", backend="numpy")
    model.fit(x, y, epochs=epochs, batch_size=16, seed=5, verbose=0, optimizer=None if resume else optim.Adam(1e-2),
              checkpoint_dir=directory, resume_from=directory if resume else None)
    return model


def test_dropout_masks_continue_across_a_checkpoint_resume(tmp_path):
    """A resumed epoch that restarted the mask counters would reuse epoch 1's masks and end
    with other weights."""
    reference = fit_dropout(2)
    fit_dropout(1, tmp_path)
    resumed = fit_dropout(2, tmp_path, resume=True)
    assert [layer.counter for layer in resumed.layers if isinstance(layer, layers.Dropout)] == [6, 6]
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------- Residual


def residual_model():
    return xpcnn.Sequential([
        layers.Conv2D(4, 3, padding=1), layers.BatchNorm2D(), layers.ReLU(),
        layers.Residual([layers.Conv2D(4, 3, padding=1, bias=False), layers.BatchNorm2D(), layers.ReLU(),
                         layers.Conv2D(8, 3, stride=2, padding=1)],
                        [layers.Conv2D(8, 1, stride=2, bias=False), layers.BatchNorm2D()]),
        layers.Dropout(0.25), layers.GlobalAvgPool2D(), layers.Dense(10),
    ])


def test_residual_shape_mismatch_names_the_block():
    bad = xpcnn.Sequential([layers.Conv2D(2, 1), layers.Residual([layers.Conv2D(4, 3)])])
    with pytest.raises(ShapeError, match=r"Residual: block output \(4, 4, 4\) and shortcut output \(2, 6, 6\) differ"):
        bad.build((1, 6, 6))
    with pytest.raises(ShapeError, match=r"shortcut output \(3, 3, 3\)"):
        residual = layers.Residual([layers.Conv2D(3, 3, padding=1)], [layers.Conv2D(3, 2, stride=2)])
        xpcnn.Sequential([residual]).build((1, 6, 6))


def test_residual_parameters_gradients_and_buffers_are_named_by_path():
    model = residual_model().build((2, 6, 6), dtype="float64", backend="numpy")
    keys = [key for key, _, _ in model.named_parameters()]
    assert keys == ["0.weight", "0.bias", "1.weight", "1.bias", "3.block.0.weight", "3.block.1.weight",
                    "3.block.1.bias", "3.block.3.weight", "3.block.3.bias", "3.shortcut.0.weight",
                    "3.shortcut.1.weight", "3.shortcut.1.bias", "6.weight", "6.bias"]
    assert [key for key, _, _ in model.named_buffers()] == [
        "1.running_mean", "1.running_var", "3.block.1.running_mean", "3.block.1.running_var",
        "3.shortcut.1.running_mean", "3.shortcut.1.running_var"]
    res = model.layers[3]
    assert {key: layer for key, layer, _ in res.named_parameters()}["block.0.weight"] is res.block[0]
    x, y = np.random.default_rng(0).random((4, 2, 6, 6)), np.arange(4)
    model.train_step(x, y, optim.SGD(0.1))
    assert all(name in layer.grads for _, layer, name in model.named_parameters())
    assert res.shortcut[0].grads["weight"].shape == (8, 4, 1, 1)
    assert set(model.state_tensors()) == set(keys) | {key for key, _, _ in model.named_buffers()}


def test_save_and_load_restore_buffers_and_predictions(tmp_path):
    model = residual_model().build((2, 6, 6), seed=1, dtype="float64", backend="numpy")
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 2, 6, 6)), rng.integers(0, 10, 32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert not np.array_equal(model.get_buffers()[1], np.ones(4))  # trained statistics, not the initial ones
    model.save(tmp_path / "m.safetensors")
    loaded = xpcnn.load(tmp_path / "m.safetensors", backend="numpy")
    for a, b in zip(model.get_weights() + model.get_buffers(), loaded.get_weights() + loaded.get_buffers()):
        assert np.array_equal(a, b)
    assert loaded.layers[4].p == 0.25 and loaded.layers[1].momentum == 0.1
    assert np.array_equal(model.predict(x), loaded.predict(x))


def test_model_to_moves_buffers():
    model = residual_model().build((2, 6, 6), seed=1, dtype="float64", backend="numpy")
    x = np.random.default_rng(0).random((3, 2, 6, 6))
    model.fit(x, np.arange(3), epochs=1, batch_size=3, verbose=0)
    expected, buffers = model(x), [np.array(b) for b in model.get_buffers()]
    model.to("torch")
    assert all(isinstance(b, torch.Tensor) for b in model.get_buffers())
    assert all(isinstance(layer.buffers["running_var"], torch.Tensor) for layer in model.layers[3].block[1:2])
    assert_close("torch forward", model(xpcnn.to_device(x, "torch")), expected)
    model.train_step(xpcnn.to_device(x, "torch"), xpcnn.to_device(np.arange(3), "torch"), optim.SGD(0.1))
    moved = [xpcnn.to_numpy(b) for b in model.get_buffers()]
    assert all(not np.array_equal(a, b) for a, b in zip(buffers, moved))
    model.to("numpy")
    assert all(isinstance(b, np.ndarray) for b in model.get_buffers())


# ---------------------------------------------------------------- custom layers


class Swish(layers.Layer):
    """x * sigmoid(x), written as docs/layers.md shows."""

    def forward(self, x, training=False):
        xp = xpcnn.namespace_of(x)
        s = 1 / (1 + xp.exp(-x))
        self.save_for_backward(x, s)
        return x * s

    def backward(self, grad_y):
        x, s = self.saved
        return grad_y * (s + x * s * (1 - s))


class Cube(layers.Layer):
    def forward(self, x, training=False):
        self.save_for_backward(x)
        return x * x * x

    def backward(self, grad_y):
        (x,) = self.saved
        return 3 * x * x * grad_y


@pytest.fixture
def registered_swish():
    layers.register(Swish)
    yield Swish
    layers.LAYERS.pop("Swish", None)


def test_custom_layer_trains_saves_and_loads_once_registered(tmp_path, registered_swish):
    model = xpcnn.Sequential([layers.Conv2D(3, 3), Swish(), layers.Flatten(), layers.Dense(10)])
    model.build((1, 6, 6), seed=0, dtype="float64", backend="numpy")
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 1, 6, 6)), rng.integers(0, 10, 16)
    # The layer's own gradient against torch's SiLU.
    h = rng.standard_normal((4, 3, 4, 4))
    layer = model.layers[1]
    out, grad = layer(h), layer.backward(np.ones_like(h))
    t = torch.tensor(h, requires_grad=True)
    torch.nn.functional.silu(t).sum().backward()
    assert_close("swish", out, torch.nn.functional.silu(torch.from_numpy(h)).numpy())
    assert_close("swish grad", grad, t.grad.numpy())
    history = model.fit(x, y, epochs=3, batch_size=8, optimizer=optim.Adam(1e-2), verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "swish.safetensors")
    loaded = xpcnn.load(tmp_path / "swish.safetensors", backend="numpy")
    assert type(loaded.layers[1]) is Swish
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_unregistered_custom_layer_refuses_to_be_saved_or_pickled_saying_to_register(tmp_path):
    model = xpcnn.Sequential([layers.Flatten(), Cube(), layers.Dense(3)]).build((1, 2, 2), backend="numpy")
    for write in (lambda: model.save(tmp_path / "cube.safetensors"), lambda: pickle.dumps(model)):
        with pytest.raises(ArgumentError, match=r"layer 1 \(Cube\): its class is not registered.*layers\.register"):
            write()
    assert not (tmp_path / "cube.safetensors").exists()


def test_a_layer_without_forward_says_what_to_override():
    class Empty(layers.Layer):
        pass

    model = xpcnn.Sequential([Empty()]).build((2,), backend="numpy")
    with pytest.raises(NotImplementedError, match="must override forward"):
        model(np.ones((1, 2), dtype=np.float32))


# ---------------------------------------------------------------- modes


def test_inference_calls_keep_running_statistics_and_training_calls_move_them():
    model = residual_model().build((2, 6, 6), seed=1, dtype="float64", backend="numpy")
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 2, 6, 6)), rng.integers(0, 10, 8)

    def buffers():
        return [np.array(b) for b in model.get_buffers()]

    start = buffers()
    first = model(x)
    model.predict(x)
    model.evaluate(x, y)
    model.forward(x)
    assert all(np.array_equal(a, b) for a, b in zip(start, buffers()))
    assert np.array_equal(model(x), first)  # inference is deterministic: no dropout
    assert not np.array_equal(model.forward(x, training=True), first)
    after_forward = buffers()
    assert all(not np.array_equal(a, b) for a, b in zip(start, after_forward))
    model.train_step(x, y, optim.SGD(0.01))
    after_step = buffers()
    assert all(not np.array_equal(a, b) for a, b in zip(after_forward, after_step))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert all(not np.array_equal(a, b) for a, b in zip(after_step, buffers()))
    assert model.layers[4].counter == 1 + 1 + 2  # forward(training=True), train_step, two fit steps


# ---------------------------------------------------------------- docs


def test_docs_layers_examples_run(tmp_path, monkeypatch, capsys):
    """The Python blocks of docs/layers.md, in order, in one namespace (they build on each other)."""
    assert len(python_blocks("layers.md")) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        run_blocks("layers.md", namespace)
    finally:
        for name in ("Swish", "ChannelScale"):
            layers.LAYERS.pop(name, None)
    assert "['0.weight', '0.bias', '2.block.0.weight', '2.block.1.weight']" in capsys.readouterr().out
    assert namespace["converted"].layers[3].shortcut == [] and (tmp_path / "swish.safetensors").exists()
