"""A whole resnet8 against PyTorch autograd in float64: ``from_torch(torch_net)`` then forward and
backward (input and every parameter gradient) in training and inference mode, the BatchNorm
running statistics after a training forward, and 20 SGD-momentum steps against torch.optim."""

import numpy as np
import pytest

from xpcnn import interop, optim, zoo

from .tolerances import FLOAT64_RTOL

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # see tests/conftest.py single_threaded_torch

SHAPE = (1, 12, 12)  # 12 -> 12 -> 6 -> 3: every stage, both shortcut kinds, a 3x3 map into the pool
BATCH = 6


def relative_error(got, expected):
    expected = np.asarray(expected)
    return float(np.abs(np.asarray(got) - expected).max() / np.abs(expected).max())


def random_torch_resnet8(seed=0):
    """interop.torch_resnet8 in float64 with torch's initialisation, then random BatchNorm affine
    parameters and running statistics (the defaults, ones and zeros, would hide a swapped tensor)."""
    torch.manual_seed(seed)
    net = interop.torch_resnet8().double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(c, generator=g, dtype=torch.float64))
                module.bias.copy_(0.1 * torch.randn(c, generator=g, dtype=torch.float64))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=g, dtype=torch.float64))
                module.running_var.copy_(0.5 + torch.rand(c, generator=g, dtype=torch.float64))
    return net


def data(seed=2, n=BATCH):
    rng = np.random.default_rng(seed)
    return rng.random((n, *SHAPE)), rng.integers(0, 10, n)


def test_the_zoo_network_is_the_torch_network():
    """zoo.resnet8 and interop.torch_resnet8 have the same layers, parameters and buffers."""
    model = zoo.resnet8().build(SHAPE, dtype="float64", backend="numpy")
    net = interop.torch_resnet8()
    assert model.get_config()["layers"] == interop.from_torch(net, SHAPE).get_config()["layers"]
    shapes = {k: tuple(p.shape) for k, p in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    mine = {key: tuple(layer.params[n].shape) for key, layer, n in model.named_parameters()}
    mine.update({key: tuple(layer.buffers[n].shape) for key, layer, n in model.named_buffers()})
    mine["10.weight"] = mine["10.weight"][::-1]  # Dense (in, out) vs Linear (out, in)
    assert shapes == mine
    assert sum(p.numel() for p in net.parameters()) == sum(w.size for w in model.get_weights()) == 77754


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_backward_and_running_statistics_match_torch(training):
    net = random_torch_resnet8()
    model = interop.from_torch(net, SHAPE, dtype="float64", backend="numpy")
    x, _ = data()
    grad_y = np.random.default_rng(3).standard_normal((BATCH, 10))
    before = [np.array(b) for b in model.get_buffers()]

    net.train(training)
    xt = torch.tensor(x, requires_grad=True)
    yt = net(xt)
    yt.backward(torch.from_numpy(grad_y))
    y = model.forward(x, training=training)
    model.needs_input_grad = True
    grad_x = model.backward(grad_y)

    assert relative_error(y, yt.detach().numpy()) <= FLOAT64_RTOL
    assert relative_error(grad_x, xt.grad.numpy()) <= FLOAT64_RTOL
    torch_params = dict(net.named_parameters())
    assert len(model.named_parameters()) == len(torch_params) == 29
    for key, layer, name in model.named_parameters():
        expected = torch_params[key].grad.numpy()
        got = layer.grads[name].T if key == "10.weight" else layer.grads[name]
        assert relative_error(got, expected) <= FLOAT64_RTOL, f"gradient of {key}"
    torch_buffers = dict(net.named_buffers())
    for key, layer, name in model.named_buffers():
        expected = torch_buffers[key].numpy()
        assert relative_error(layer.buffers[name], expected) <= FLOAT64_RTOL, f"buffer {key}"
    # The running statistics moved in training mode only (and the comparison above saw that).
    moved = [not np.array_equal(a, b) for a, b in zip(before, model.get_buffers())]
    assert len(moved) == 2 * 9 and (all(moved) if training else not any(moved))


def test_twenty_sgd_momentum_steps_match_torch_optim():
    """Weights within FLOAT64_RTOL of the largest weight after 20 steps (the issue asks for 1e-8;
    the float64 step keeps to the single-op bound, so the stricter one is used)."""
    net = random_torch_resnet8(seed=5)
    model = interop.from_torch(net, SHAPE, dtype="float64", backend="numpy")
    batches = [data(seed) for seed in range(4)]
    lr, momentum = 0.05, 0.9
    opt_t = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    opt_x = optim.SGD(lr, momentum=momentum)
    net.train()
    losses = []
    for step in range(20):
        x, y = batches[step % len(batches)]
        opt_t.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt_t.step()
        losses.append((model.train_step(x, y, opt_x), loss.item()))

    assert losses[-1][1] < losses[0][1]  # it trained, so the comparison is not of two idle models
    for got, expected in losses:
        assert abs(got - expected) <= FLOAT64_RTOL * abs(expected)
    state = net.state_dict()
    scale = max(float(p.detach().abs().max()) for p in net.parameters())
    for key, layer, name in model.named_parameters():
        expected = state[key].numpy().T if key == "10.weight" else state[key].numpy()
        err = float(np.abs(layer.params[name] - expected).max())
        assert err <= FLOAT64_RTOL * scale, f"{key}: error {err:.3g} relative to the largest weight {scale:.3g}"
    for key, layer, name in model.named_buffers():
        assert relative_error(layer.buffers[name], state[key].numpy()) <= FLOAT64_RTOL, f"buffer {key}"
    x, _ = batches[0]
    net.eval()
    with torch.no_grad():
        assert relative_error(model(x), net(torch.from_numpy(x)).numpy()) <= FLOAT64_RTOL
