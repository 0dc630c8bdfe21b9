"""xpcnn.interop: from_torch / to_torch for every supported module, exact round trips, and the
errors for what cannot be converted (float64, against PyTorch)."""

import subprocess
import sys

import numpy as np
import pytest

import xpcnn
from xpcnn import interop, layers, zoo
from xpcnn.errors import ArgumentError, ArgumentTypeError, BackendUnavailableError, NotBuiltError, ShapeError

from .tolerances import FLOAT64_RTOL

torch = pytest.importorskip("torch")
nn = torch.nn
torch.set_num_threads(1)  # see tests/conftest.py single_threaded_torch


def assert_close(name, got, expected):
    """Within FLOAT64_RTOL of ``expected`` relative to its largest magnitude."""
    got, expected = np.asarray(xpcnn.to_numpy(got)), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, PyTorch {expected.shape}"
    scale = np.abs(expected).max()
    err = np.abs(got - expected).max()
    assert err <= FLOAT64_RTOL * scale, f"{name}: max abs error {err:.3g}, relative {err / scale:.3g}"


def randomise(net, seed=0):
    """Random weights, BN affine parameters and running statistics (the defaults are ones and
    zeros, which would hide a swapped or dropped tensor)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
    return net


def residual(block, shortcut=None):
    return interop.TorchResidual(block, shortcut)


# name -> (torch modules, input sample shape, has training-mode behaviour to compare)
CASES = {
    "conv": (lambda: [nn.Conv2d(2, 4, 3, stride=2, padding=1)], (2, 7, 8)),
    "conv_groups_same_dilated": (lambda: [nn.Conv2d(4, 6, (3, 2), padding="same", dilation=(2, 1), groups=2)],
                                 (4, 7, 8)),
    "conv_depthwise_valid": (lambda: [nn.Conv2d(3, 3, 3, padding="valid", groups=3, bias=False)], (3, 6, 6)),
    "conv_transpose": (lambda: [nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)],
                       (4, 4, 5)),
    "batchnorm2d": (lambda: [nn.BatchNorm2d(3, momentum=0.3, eps=1e-3)], (3, 4, 5)),
    "batchnorm1d_linear": (lambda: [nn.Flatten(), nn.BatchNorm1d(12, momentum=0.05), nn.Linear(12, 5),
                                    nn.Linear(5, 3, bias=False)], (3, 2, 2)),
    "activations": (lambda: [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.LeakyReLU(0.2), nn.GELU(approximate="tanh")],
                    (2, 3, 3)),
    "leaky_negative": (lambda: [nn.LeakyReLU(0.3), nn.Conv2d(2, 2, 1), nn.LeakyReLU()], (2, 3, 3)),
    "gelu_exact": (lambda: [nn.GELU(), nn.Conv2d(2, 2, 1), nn.GELU(approximate="none")], (2, 3, 3)),
    "padded_conv": (lambda: [interop.PaddedConv2d(2, 3, (3, 2), pads=(0, 1, 2, 0), stride=(2, 1)), nn.ReLU(),
                             interop.PaddedConv2d(3, 2, 3, pads=(1, 1, 0, 2), bias=False)], (2, 7, 6)),
    "maxpool": (lambda: [nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.MaxPool2d(2)], (2, 8, 9)),
    "avgpool": (lambda: [nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
                         nn.AvgPool2d(2, padding=1)], (2, 8, 9)),
    "global_pool_flatten": (lambda: [nn.Conv2d(2, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)],
                            (2, 6, 6)),
    "global_pool_nested": (lambda: [nn.Conv2d(2, 5, 3), nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())],
                           (2, 6, 6)),
    "dropout_flatten": (lambda: [nn.Dropout(0.25), nn.Flatten(), nn.Linear(18, 4)], (2, 3, 3)),
    "residual_identity": (lambda: [residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3),
                                                          nn.ReLU()))], (3, 5, 5)),
    "residual_shortcut": (lambda: [residual(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4)),
                                            nn.Sequential(nn.Conv2d(2, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))),
                                   nn.ReLU()], (2, 6, 6)),
    "nested_sequential": (lambda: [nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))),
                                   nn.Flatten(), nn.Linear(8, 2)], (1, 6, 6)),
}


def make(name, seed=0):
    modules, shape = CASES[name]
    return randomise(nn.Sequential(*modules()).double(), seed), shape


def batch(shape, n=5, seed=1):
    return np.random.default_rng(seed).standard_normal((n, *shape))


def torch_forward(net, x, training):
    net.train(training)
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def torch_tensors(net):
    """Parameters then buffers (no num_batches_tracked, which xpcnn does not keep), in order."""
    return [p.detach() for p in net.parameters()] + \
           [b for name, b in net.named_buffers() if not name.endswith("num_batches_tracked")]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name", sorted(CASES))
def test_from_torch_forward_matches_in_both_modes(name):
    net, shape = make(name)
    model = interop.from_torch(net, shape, dtype="float64", backend="numpy")
    x = batch(shape)
    assert_close(f"{name} eval", model(x), torch_forward(net, x, False))
    if "dropout" not in name:  # dropout masks are the library's own in training mode
        assert_close(f"{name} train", model.forward(x, training=True), torch_forward(net, x, True))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name", sorted(CASES))
def test_to_torch_forward_matches_and_round_trip_is_exact(name):
    net, shape = make(name)
    model = interop.from_torch(net, shape, dtype="float64", backend="numpy")
    back = interop.to_torch(model)
    x = batch(shape)
    assert_close(f"{name} to_torch eval", torch_forward(back, x, False), model(x))
    originals, copies = torch_tensors(net), torch_tensors(back)
    assert len(originals) == len(copies)
    for a, b in zip(originals, copies):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{name}: a tensor changed in the round trip"
    again = interop.from_torch(back, shape, dtype="float64", backend="numpy")
    for a, b in zip(model.get_weights() + model.get_buffers(), again.get_weights() + again.get_buffers()):
        assert np.array_equal(a, b)


def test_round_trip_float32_is_bit_identical_and_keys_match_xpcnn_names():
    model = zoo.resnet8().build((1, 12, 12), seed=3, dtype="float32", backend="numpy")
    # Give the buffers values that are not the initial ones.
    model.fit(batch((1, 12, 12), n=16).astype(np.float32), np.arange(16) % 10, epochs=1, batch_size=8, verbose=0)
    net = interop.to_torch(model)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    mine = {key: layer.params[n] for key, layer, n in model.named_parameters()}
    mine.update({key: layer.buffers[n] for key, layer, n in model.named_buffers()})
    assert set(state) == set(mine)
    for key, value in mine.items():
        expected = value.T if key == "10.weight" else value  # Dense (in, out) is Linear's (out, in) transposed
        assert state[key].dtype == torch.float32 and np.array_equal(state[key].numpy(), expected), key
    back = interop.from_torch(net, (1, 12, 12), dtype="float32", backend="numpy")
    for a, b in zip(model.get_weights() + model.get_buffers(), back.get_weights() + back.get_buffers()):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    x = batch((1, 12, 12)).astype(np.float32)
    assert np.array_equal(model(x), back(x))


def test_options_are_carried_both_ways():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding="same", groups=2, bias=False),
                        nn.BatchNorm2d(4, momentum=0.2, eps=1e-4), nn.LeakyReLU(0.07),
                        nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                        nn.AvgPool2d(2, 1, 1, ceil_mode=True, count_include_pad=False), nn.Dropout(0.35), nn.Flatten())
    model = interop.from_torch(net, (2, 8, 8), backend="numpy")
    conv, bn, leaky, maxpool, avgpool, drop, _ = model.layers
    assert (conv.padding, conv.groups, conv.bias) == ("same", 2, False)
    assert (bn.momentum, bn.eps, leaky.negative_slope, drop.p) == (0.2, 1e-4, 0.07, 0.35)
    assert (maxpool.kernel_size, maxpool.stride, maxpool.padding, maxpool.ceil_mode) == ((3, 3), (2, 2), (1, 1), True)
    assert (avgpool.stride, avgpool.ceil_mode, avgpool.count_include_pad) == ((1, 1), True, False)
    back = interop.to_torch(model)
    assert (back[0].padding, back[0].groups, back[0].bias) == ("same", 2, None)
    assert (back[1].momentum, back[1].eps, back[2].negative_slope, back[5].p) == (0.2, 1e-4, 0.07, 0.35)
    assert (back[3].ceil_mode, back[4].ceil_mode, back[4].count_include_pad) == (True, True, False)
    assert type(back[6]) is nn.Flatten


def test_padding_whose_sides_differ_goes_to_torch():
    # torch's modules pad both sides alike: a Conv2D becomes PaddedConv2d (same parameter keys), a
    # pool nn.ConstantPad2d then the pool in floor mode (ceil_mode's extension in the pads).
    model = xpcnn.Sequential([layers.Conv2D(3, 3, padding=((1, 1), (1, 1))),
                              layers.Conv2D(3, 3, padding=((2, 0), (0, 1))),
                              layers.MaxPool2D(3, 2, ((1, 0), (0, 1)), ceil_mode=True),
                              layers.AvgPool2D(2, 1, ((0, 1), (1, 0))), layers.Flatten()])
    model.build((2, 9, 8), seed=2, dtype="float64", backend="numpy")
    net = interop.to_torch(model)
    assert type(net[0]) is nn.Conv2d and net[0].padding == (1, 1) and type(net[1]) is interop.PaddedConv2d
    assert [type(m) for m in net[2]] == [nn.ConstantPad2d, nn.MaxPool2d] and net[2][0].value == -float("inf")
    assert {k for k, _ in net.named_parameters()} == {key for key, _, _ in model.named_parameters()}
    x = batch((2, 9, 8))
    assert_close("asymmetric padding", torch_forward(net, x, False), model(x))
    back = interop.from_torch(net[:2], (2, 9, 8), dtype="float64", backend="numpy")
    assert back.layers[1].padding == ((2, 0), (0, 1))
    counted = xpcnn.Sequential([layers.AvgPool2D(2, 1, ((0, 1), (1, 0)), count_include_pad=False)])
    with pytest.raises(ArgumentError, match=r"layer 0 \(AvgPool2D\) with padding .* counts fewer cells"):
        interop.to_torch(counted.build((1, 4, 4), backend="numpy"))


def test_residual_becomes_torch_residual_and_back():
    model = xpcnn.Sequential([layers.Residual([layers.Conv2D(3, 3, padding=1), layers.ReLU()]),
                              layers.Residual([layers.Conv2D(4, 1)], [layers.Conv2D(4, 1, bias=False)])])
    model.build((3, 4, 4), seed=1, dtype="float64", backend="numpy")
    net = interop.to_torch(model)
    assert type(net[0]) is interop.TorchResidual and type(net[0].shortcut) is nn.Identity
    assert type(net[1].shortcut) is nn.Sequential
    x = batch((3, 4, 4))
    assert_close("residual", torch_forward(net, x, False), model(x))
    back = interop.from_torch(net, (3, 4, 4), dtype="float64", backend="numpy")
    assert back.layers[0].shortcut == [] and len(back.layers[1].shortcut) == 1


@pytest.mark.parametrize("modules, path, what", [
    (lambda: [nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Softmax(dim=1))], "1.1", "Softmax"),
    (lambda: [residual(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ELU()))], "0.block.1", "ELU"),
    (lambda: [residual(nn.Sequential(nn.ReLU()), nn.Sequential(nn.Upsample(scale_factor=1)))], "0.shortcut.0",
     "Upsample"),
    (lambda: [nn.AdaptiveAvgPool2d(1), nn.ReLU()], "0", "followed by nn.Flatten"),
    (lambda: [nn.AdaptiveAvgPool2d(2), nn.Flatten()], "0", "AdaptiveAvgPool2d(1)"),
    (lambda: [nn.BatchNorm2d(1, momentum=None)], "0", "momentum=None"),
    (lambda: [nn.BatchNorm2d(1, affine=False)], "0", "affine=False"),
    (lambda: [nn.BatchNorm2d(1, track_running_stats=False)], "0", "track_running_stats=False"),
    (lambda: [nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")], "0", "padding_mode='reflect'"),
    (lambda: [nn.MaxPool2d(2, dilation=2)], "0", "dilation"),
    (lambda: [nn.Flatten(0)], "0", "start_dim=1"),
], ids=["nested", "in-block", "in-shortcut", "adaptive-no-flatten", "adaptive-2", "bn-cumulative",
        "bn-no-affine", "bn-no-stats", "reflect-padding", "pool-dilation", "flatten-dim0"])
def test_unsupported_modules_are_named_with_their_path(modules, path, what):
    net = nn.Sequential(*modules())
    with pytest.raises(ArgumentError, match="module: ") as info:
        interop.from_torch(net, (1, 6, 6), backend="numpy")
    message = str(info.value)
    assert f"module: {path} (" in message and what in message, message


def test_a_module_subclass_is_not_taken_for_the_builtin():
    class Doubled(nn.ReLU):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ArgumentError, match=r"module: 0 \(.*Doubled"):
        interop.from_torch(nn.Sequential(Doubled()), (1, 2, 2), backend="numpy")


def test_shapes_that_do_not_fit_name_the_torch_path():
    with pytest.raises(ShapeError, match=r"module: 1\.weight: torch shape \(3, 10\) .* needs \(3, 9\)"):
        interop.from_torch(nn.Sequential(nn.Flatten(), nn.Linear(10, 3)), (1, 3, 3), backend="numpy")
    with pytest.raises(ArgumentTypeError, match="module: expected a torch.nn.Module"):
        interop.from_torch([nn.ReLU()], (1, 3, 3))
    with pytest.raises(ArgumentError, match="empty"):
        interop.from_torch(nn.Sequential(), (1, 3, 3))


def test_to_torch_refuses_custom_layers_and_unbuilt_models():
    class Square(layers.Layer):
        def forward(self, x, training=False):
            self.save_for_backward(x)
            return x * x

        def backward(self, grad_y):
            return 2 * self.saved[0] * grad_y

    model = xpcnn.Sequential([layers.Residual([layers.ReLU(), Square()])]).build((2, 3, 3), backend="numpy")
    with pytest.raises(ArgumentError, match=r"model: layer 0\.block\.1 .*Square"):
        interop.to_torch(model)
    with pytest.raises(NotBuiltError, match="model: not built"):
        interop.to_torch(xpcnn.Sequential([layers.ReLU()]))
    with pytest.raises(ArgumentTypeError, match="model: expected an xpcnn Sequential"):
        interop.to_torch(nn.Sequential())


def test_missing_torch_is_a_clear_error(monkeypatch):
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(2)]).build((1, 2, 2), backend="numpy")
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees when it is not installed
    for call in (lambda: interop.to_torch(model), lambda: interop.from_torch(object(), (1, 2, 2)),
                 lambda: interop.TorchResidual, interop.torch_resnet8):
        with pytest.raises(BackendUnavailableError, match=r"torch is not installed.*pip install -e '\.\[torch\]'"):
            call()


def test_interop_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import xpcnn, xpcnn.interop as interop, xpcnn.zoo\n"
            "model = xpcnn.zoo.get('default').build((1, 28, 28))\n"
            "try:\n    interop.to_torch(model)\nexcept xpcnn.BackendUnavailableError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused: torch is not installed" in out.stdout and "pip install -e '.[torch]'" in out.stdout
