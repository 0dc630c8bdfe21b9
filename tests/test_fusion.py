"""Layer pairs a container runs as one op (xpcnn.layers.fused, swapped in at build): Conv2D then AvgPool2D
(xpcnn.functional.conv_pool: the pool applied to the im2col columns, then the weight) and ReLU
then MaxPool2D (max pooling, then the ReLU on the pooled values). Checked against PyTorch
autograd (float64: output, input gradient, every parameter gradient) for networks where the
pairs fuse, in a Sequential and inside a Residual block, and where they must not (a padded or
ceil_mode average pool, where the bias would not pass through the average). Each case also
asserts which pairs ran fused, so a silently disabled fusion fails here."""

import copy

import numpy as np
import pytest

import xpcnn
from xpcnn import interop, layers
from xpcnn.functional import conv_pool, pool
from xpcnn.functional.conv import conv2d_geometry
from xpcnn.layers import fused

from .tolerances import FLOAT32_ATOL, FLOAT32_RTOL, FLOAT64_RTOL

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # see tests/conftest.py single_threaded_torch
nn = torch.nn


def relative_error(got, expected):
    expected = np.asarray(expected)
    return float(np.abs(np.asarray(got) - expected).max() / np.abs(expected).max())


def networks():
    """(id, torch network, input shape (C, H, W), the indices of the Conv2D layers that fuse)."""
    yield "notebook", nn.Sequential(nn.Conv2d(1, 16, 3, bias=False), nn.AvgPool2d(2), nn.Flatten(),
                                    nn.Linear(16 * 13 * 13, 10)), (1, 28, 28), (0,)
    # A second conv needs its input gradient: the pool's backward, then the conv's.
    yield "two stages", nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=1),
                                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12 * 4 * 4, 10)), (2, 10, 10), (2,)
    yield "groups, stride, dilation, overlapping pool", nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, dilation=2, padding=2, groups=2), nn.AvgPool2d(3, stride=2), nn.Flatten(),
        nn.Linear(8 * 3 * 3, 10)), (4, 15, 15), (0,)
    yield "padded pool (not fused)", nn.Sequential(nn.Conv2d(1, 6, 3), nn.AvgPool2d(2, padding=1), nn.Flatten(),
                                                   nn.Linear(6 * 5 * 5, 10)), (1, 10, 10), ()
    yield "ceil_mode pool (not fused)", nn.Sequential(nn.Conv2d(1, 6, 3), nn.AvgPool2d(2, ceil_mode=True),
                                                      nn.Flatten(), nn.Linear(6 * 5 * 5, 10)), (1, 11, 11), ()
    # ReLU then MaxPool2D: the default network's pattern, twice.
    yield "relu max pool", nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3),
                                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 5 * 5, 10)), \
        (1, 28, 28), (1, 4)
    yield "relu max pool: overlapping, padded, ceil_mode", nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 10)), (2, 12, 12), (1,)
    yield "max pool then relu (not fused)", nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(),
                                                          nn.Flatten(), nn.Linear(4 * 4 * 4, 10)), (1, 10, 10), ()


CASES = list(networks())


# Max pooling has two forms (xpcnn.functional.max_pool_method): per-tap masks on a CPU, one
# argmax per window on a GPU. xpcnn.fewest_operations() runs the GPU form here.
FORMS = pytest.mark.parametrize("fewest", [False, True], ids=["cpu form", "fewest-operations form"])


def fused_at(container):
    """The indices (in ``container.layers``) of the first layer of each pair run fused."""
    out, i = [], 0
    for layer in container.chains[""] if "" in container.chains else container.chains["block"]:
        if isinstance(layer, (fused.ConvAvgPool, fused.ReLUMaxPool)):
            out.append(i)
        i += 2 if isinstance(layer, (fused.ConvAvgPool, fused.ReLUMaxPool)) else 1
    return tuple(out)


def max_pool_forms(model):
    """The form each max pool's backward will take, from what its forward kept."""
    forms = []
    for layer in model.chains[""]:
        if isinstance(layer, (fused.ReLUMaxPool, layers.MaxPool2D)):
            forms.append("argmax" if isinstance(layer.saved[2], pool.WindowArgmax) else "taps")
    return forms


@FORMS
@pytest.mark.parametrize("net, shape, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sequential_matches_torch_and_fuses_where_expected(net, shape, expected, fewest):
    torch.manual_seed(0)
    net = copy.deepcopy(net).double()  # a fresh copy per form: backward accumulates into .grad
    with xpcnn.fewest_operations(fewest):
        model = check_against_torch(net, shape, seed=1)
        assert set(max_pool_forms(model)) <= {"argmax" if fewest else "taps"}
    # ReLU then MaxPool2D fuses only where the kernels take their fewest-operations forms.
    assert fused_at(model) == tuple(i for i in expected if fewest or not isinstance(net[i], nn.ReLU))


def test_inside_a_residual_block():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.AvgPool2d(2))
    shortcut = nn.Sequential(nn.Conv2d(3, 6, 1), nn.AvgPool2d(2))
    net = nn.Sequential(interop.TorchResidual(block, shortcut), nn.Flatten(), nn.Linear(6 * 4 * 4, 10)).double()
    model = check_against_torch(net, (3, 8, 8), seed=2)
    residual = model.layers[0]
    assert [type(layer) for chain in residual.chains.values() for layer in chain] == [fused.ConvAvgPool] * 2


def check_against_torch(net, shape, seed):
    """Convert the float64 torch ``net``, run a training forward and a backward of random grad_y
    through both, compare output, input gradient and every parameter gradient; returns the model."""
    model = interop.from_torch(net, shape, dtype="float64", backend="numpy")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, *shape))
    grad_y = rng.standard_normal((5, 10))
    xt = torch.tensor(x, requires_grad=True)
    yt = net(xt)
    yt.backward(torch.from_numpy(grad_y))

    model.needs_input_grad = True
    y = model.forward(x, training=True)
    grad_x = model.backward(grad_y)
    assert relative_error(y, yt.detach().numpy()) <= FLOAT64_RTOL
    assert relative_error(grad_x, xt.grad.numpy()) <= FLOAT64_RTOL
    torch_params = dict(net.named_parameters())
    for key, layer, name in model.named_parameters():
        got = layer.grads[name]
        got = got.T if isinstance(layer, layers.Dense) and name == "weight" else got
        assert relative_error(got, torch_params[key].grad.numpy()) <= FLOAT64_RTOL, f"gradient of {key}"
    return model


@FORMS
def test_relu_max_pool_ties_go_where_torch_sends_them(fewest):
    """Windows of equal values (the ReLU makes many: negative inputs become 0) and windows whose
    maximum is repeated: PyTorch sends each window's gradient to its first maximum of relu(x),
    and the ReLU then zeroes it where x <= 0."""
    net = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()).double()
    model = interop.from_torch(net, (2, 6, 6), dtype="float64", backend="numpy")
    model.needs_input_grad = True
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (4, 2, 6, 6)).astype(np.float64)  # many ties, zeros and negatives
    grad_y = rng.standard_normal((4, 2 * 3 * 3))
    xt = torch.tensor(x, requires_grad=True)
    net(xt).backward(torch.from_numpy(grad_y))
    with xpcnn.fewest_operations(fewest):
        model = interop.from_torch(net, (2, 6, 6), dtype="float64", backend="numpy")
        model.needs_input_grad = True
        y = model.forward(x, training=True)
        assert max_pool_forms(model) == ["argmax" if fewest else "taps"]
        grad_x = model.backward(grad_y)
    assert fused_at(model) == ((0,) if fewest else ())
    assert np.array_equal(y, net(xt).detach().numpy())
    assert np.array_equal(grad_x, xt.grad.numpy())


def test_float32_within_the_per_op_tolerance_of_float64():
    net = CASES[1][1]
    torch.manual_seed(0)
    model64 = interop.from_torch(net.double(), (2, 10, 10), dtype="float64", backend="numpy")
    model32 = interop.from_torch(net.float(), (2, 10, 10), dtype="float32", backend="numpy")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 10, 10))
    grad_y = rng.standard_normal((6, 10))
    model64.needs_input_grad = model32.needs_input_grad = True
    y64, y32 = model64.forward(x, training=True), model32.forward(x.astype(np.float32), training=True)
    assert fused_at(model32) == (2,)
    g64 = model64.backward(grad_y)
    g32 = model32.backward(grad_y.astype(np.float32))
    for got, ref in [(y32, y64), (g32, g64), (model32.layers[2].grads["weight"], model64.layers[2].grads["weight"])]:
        assert np.all(np.abs(got - ref) <= FLOAT32_ATOL + FLOAT32_RTOL * np.abs(ref))


def zoo_and_more():
    yield "default", xpcnn.zoo.default_cnn(), (1, 28, 28)
    yield "notebook", xpcnn.zoo.notebook_cnn(), (1, 28, 28)
    yield "resnet8", xpcnn.zoo.resnet8(), (1, 28, 28)
    yield "nested residual", xpcnn.Sequential([
        layers.Conv2D(4, 3, padding=1), layers.ReLU(),
        layers.Residual([layers.Residual([layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(1)]),
                         layers.Conv2D(4, 3, padding=1), layers.AvgPool2D(1)]),
        layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10)]), (2, 8, 8)


@pytest.mark.parametrize("name, model, shape", list(zoo_and_more()), ids=[c[0] for c in zoo_and_more()])
def test_every_zoo_network_fused_and_unfused_gives_the_same_numbers(name, model, shape):
    """The rewrite changes no number: output, input gradient, every parameter gradient and the
    BatchNorm statistics of a training step agree within 1e-12 relative (float64)."""
    plain = copy.deepcopy(model)
    with xpcnn.fewest_operations():  # where every fused form is swapped in
        model.build(shape, seed=3, dtype="float64", backend="numpy")
        plain.build(shape, seed=3, dtype="float64", backend="numpy", fuse=False)
    assert any(isinstance(layer, (fused.ConvAvgPool, fused.ReLUMaxPool)) for layer in model.chains[""]) \
        or name == "resnet8"  # resnet8 fuses inside nothing: its pools are global
    assert not any(isinstance(layer, (fused.ConvAvgPool, fused.ReLUMaxPool)) for layer in plain.chains[""])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, *shape))
    grad_y = rng.standard_normal((3, 10))
    results = []
    for m in (model, plain):
        m.needs_input_grad = True
        y = m.forward(x, training=True)
        results.append([y, m.backward(grad_y), *(layer.grads[n] for _, layer, n in m.named_parameters()),
                        *m.get_buffers()])
    for got, ref in zip(*results):
        assert relative_error(got, ref) <= 1e-12


def test_a_fused_form_shares_the_parameters_and_leaves_the_originals_alone():
    model = xpcnn.zoo.notebook_cnn().build((1, 28, 28), seed=0, dtype="float64", backend="numpy")
    conv, pooling = model.layers[:2]
    pair = model.chains[""][0]
    assert isinstance(pair, fused.ConvAvgPool) and pair.params is conv.params and pair.grads is conv.grads
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    model.train_step(x, np.array([1, 2]), xpcnn.optim.SGD(0.1))
    assert conv.saved_values == () and pooling.saved_values == ()  # nothing written into the originals
    assert pair.params["weight"] is conv.params["weight"]  # the update rebinds the one shared entry


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode, w_shape, expected", [
    (2, None, 0, False, (16, 1, 3, 3), True),        # the notebook's pair
    (2, None, 1, False, (16, 1, 3, 3), False),       # padded zeros would scale the bias
    (2, None, 0, True, (16, 1, 3, 3), False),        # the last window runs over: a smaller divisor
    (3, 2, 0, False, (8, 2, 3, 3), True),            # overlapping windows inside the input
    (2, None, 0, False, (8, 64, 3, 3), True),        # columns 72x taller than the output: still faster
])
def test_fuses_only_when_exact(kernel, stride, padding, ceil_mode, w_shape, expected):
    conv = conv2d_geometry((1, w_shape[1], 11, 11), w_shape)
    pooled = pool.pool_geometry((1, w_shape[0], *conv.out_hw), kernel, stride, padding, ceil_mode=ceil_mode)
    assert conv_pool.fuses(pooled) is expected

