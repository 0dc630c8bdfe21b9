"""A Residual inside another Residual's block works everywhere a flat one does: weights, files,
fit, pickling, PyTorch interop (forward and every gradient against torch autograd)."""

import numpy as np
import pytest

import xpcnn
from xpcnn import interop, layers, optim

from .tolerances import FLOAT64_RTOL


def nested():
    inner = layers.Residual([layers.Conv2D(4, 3, padding=1, bias=False), layers.BatchNorm2D(), layers.ReLU()])
    outer = layers.Residual([inner, layers.Conv2D(4, 3, padding=1)], [layers.Conv2D(4, 1)])
    return xpcnn.Sequential([layers.Conv2D(4, 3, padding=1), outer, layers.ReLU(), layers.Flatten(), layers.Dense(3)])


def data(n=12):
    rng = np.random.default_rng(0)
    return rng.random((n, 2, 6, 6)), rng.integers(0, 3, n)


def test_weights_files_and_fit(tmp_path):
    model = nested().build((2, 6, 6), seed=1, dtype="float64", backend="numpy")
    keys = [key for key, _, _ in model.named_parameters()]
    assert "1.block.0.block.0.weight" in keys and "1.block.0.block.1.bias" in keys
    assert "1.block.0.block.0.bias" not in keys
    assert [key for key, _, _ in model.named_buffers()] == ["1.block.0.block.1.running_mean",
                                                           "1.block.0.block.1.running_var"]
    model.set_weights([w * 2 for w in model.get_weights()])
    x, y = data()
    history = model.fit(x, y, epochs=3, batch_size=4, optimizer=optim.Adam(1e-2), verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "nested.safetensors")
    loaded = xpcnn.load(tmp_path / "nested.safetensors", backend="numpy")
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert np.array_equal(xpcnn.to_numpy(loaded.get_buffers()[0]), model.get_buffers()[0])


def test_against_torch_autograd():
    torch = pytest.importorskip("torch")
    model = nested().build((2, 6, 6), seed=2, dtype="float64", backend="numpy")
    net = interop.to_torch(model)
    back = interop.from_torch(net, (2, 6, 6), dtype="float64", backend="numpy")
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))
    x, _ = data(5)
    grad_y = np.random.default_rng(3).standard_normal((5, 3))
    xt = torch.tensor(x, requires_grad=True)
    net.train()
    yt = net(xt)
    yt.backward(torch.from_numpy(grad_y))
    model.needs_input_grad = True
    y = model.forward(x, training=True)
    grad_x = model.backward(grad_y)

    def close(a, b):
        return np.abs(a - b).max() <= FLOAT64_RTOL * np.abs(b).max()

    assert close(y, yt.detach().numpy()) and close(grad_x, xt.grad.numpy())
    torch_grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
    for key, layer, name in model.named_parameters():
        got = layer.grads[name].T if isinstance(layer, layers.Dense) and name == "weight" else layer.grads[name]
        assert close(got, torch_grads[key]), key
