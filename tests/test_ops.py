"""Every functional op, forward and backward, against PyTorch CPU autograd (float64) and against
central finite differences, over randomised configurations: batch 1-4, channels 1-5, sizes up
to 16, kernel 1-4, stride 1-3, padding 0-2, dilation 1-2 (Hypothesis, derandomised so CI sees
the same examples every run).

Each test runs on every selected backend (tests/conftest.py: numpy, array_api_strict on its CPU
device and on "device1", torch CPU, and the GPU rows where present): inputs go to the backend,
outputs must come back in the same library, on the same device, in float64, and the inputs
must be unchanged afterwards.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import functional as F
from xpcnn import layers
from xpcnn.backend import device_of, dtype_name, library_of
from xpcnn.testing import gradcheck

from .tolerances import FINITE_DIFF_RTOL, FINITE_DIFF_STEP, FLOAT64_RTOL

TORCH_EXAMPLES = 100  # per op and backend
FD_EXAMPLES = 25
FD_MAX_ELEMENTS = 48  # larger inputs are checked along random directions

torch_settings = settings(max_examples=TORCH_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
fd_settings = settings(max_examples=FD_EXAMPLES, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------- configurations


pairs = st.tuples


@st.composite
def conv_configs(draw, max_size=16, max_batch=4, max_channels=5):
    kernel = draw(pairs(st.integers(1, 4), st.integers(1, 4)))
    dilation = draw(pairs(st.integers(1, 2), st.integers(1, 2)))
    padding = draw(pairs(st.integers(0, 2), st.integers(0, 2)))
    stride = draw(pairs(st.integers(1, 3), st.integers(1, 3)))
    size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), max_size)) for k, d, p in zip(kernel, dilation, padding)
    )
    return dict(
        n=draw(st.integers(1, max_batch)), c=draw(st.integers(1, max_channels)), o=draw(st.integers(1, max_channels)),
        size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def pool_configs(draw, dilation=True, max_size=16, max_batch=4):
    kernel = draw(pairs(st.integers(1, 4), st.integers(1, 4)))
    dil = draw(pairs(st.integers(1, 2), st.integers(1, 2))) if dilation else (1, 1)
    padding = tuple(draw(st.integers(0, min(2, k // 2))) for k in kernel)  # PyTorch: at most half the kernel
    stride = draw(st.none() | pairs(st.integers(1, 3), st.integers(1, 3)))
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), max_size)) for k, d, p in zip(kernel, dil, padding))
    return dict(
        n=draw(st.integers(1, max_batch)), c=draw(st.integers(1, 5)), size=size, kernel=kernel, stride=stride,
        padding=padding, dilation=dil, ties=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
    )


row_configs = st.fixed_dictionaries({
    "n": st.integers(1, 4), "k": st.integers(1, 12), "shift": st.sampled_from([0.0, 500.0, -500.0]),
    "seed": st.integers(0, 2**32 - 1),
})


# ---------------------------------------------------------------- helpers


def on(backend, *arrays):
    """Host arrays -> the backend (None passes through)."""
    return [None if a is None else xpcnn.to_device(a, backend) for a in arrays]


class Unchanged:
    """Snapshots arrays on entry; on exit asserts none was mutated."""

    def __init__(self, *arrays):
        self.arrays = [a for a in arrays if a is not None]

    def __enter__(self):
        self.before = [np.array(xpcnn.to_numpy(a), copy=True) for a in self.arrays]
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            for i, (a, b) in enumerate(zip(self.arrays, self.before)):
                assert np.array_equal(xpcnn.to_numpy(a), b), f"input {i} was mutated"


def check(name, got, expected, like):
    """``got`` is on ``like``'s library and device, float64, and within FLOAT64_RTOL of ``expected``
    relative to the largest magnitude of ``expected``."""
    assert got is not None, f"{name}: missing"
    assert library_of(got) == library_of(like), f"{name}: {library_of(got)} array, input was {library_of(like)}"
    assert device_of(got) == device_of(like), f"{name}: on {device_of(got)}, input on {device_of(like)}"
    assert dtype_name(got.dtype) == "float64", f"{name}: dtype {dtype_name(got.dtype)}"
    got = xpcnn.to_numpy(got)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, PyTorch {expected.shape}"
    scale = np.abs(expected).max() if expected.size else 0.0
    err = np.abs(got - expected).max() if expected.size else 0.0
    assert err <= FLOAT64_RTOL * scale, (
        f"{name}: max abs error {err:.3g} vs PyTorch, relative {err / scale if scale else err:.3g}"
    )


def autograd(torch, fn, grad_y, *arrays):
    """PyTorch's output and input gradients (None for a None input) of fn(*arrays) given grad_y."""
    leaves = [None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    y = fn(*leaves)
    y.backward(torch.as_tensor(grad_y, dtype=torch.float64))
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in leaves]


def pool_input(rng, shape, ties):
    """Normal values, or small integers (many ties inside each window: the first maximum wins)."""
    return rng.integers(0, 3, shape).astype(np.float64) if ties else rng.standard_normal(shape)


def distinct(rng, shape, gap=0.01):
    """No two values closer than ``gap``: finite differences never cross a max-pool tie."""
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2).reshape(shape) * gap


# ---------------------------------------------------------------- against PyTorch


@torch_settings
@given(cfg=conv_configs())
def test_conv2d_matches_torch(torch, backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["size"]))
    w = rng.standard_normal((cfg["o"], cfg["c"], *cfg["kernel"]))
    b = rng.standard_normal(cfg["o"]) if cfg["bias"] else None
    geom = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    y_shape = torch.nn.functional.conv2d(torch.as_tensor(x), torch.as_tensor(w), **geom).shape
    g = rng.standard_normal(tuple(y_shape))
    y_ref, (gx_ref, gw_ref, gb_ref) = autograd(
        torch, lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **geom), g, x, w, b
    )

    X, W, B, G = on(backend, x, w, b, g)
    with Unchanged(X, W, B, G):
        y = F.conv2d(X, W, B, **geom)
        y2, cache = F.conv2d_forward(X, W, B, **geom)
        gx, gw, gb = F.conv2d_backward(G, X, W, bias=cfg["bias"], **geom)
    check("y", y, y_ref, X)
    check("conv2d_forward y", y2, y_ref, X)
    check("grad_x", gx, gx_ref, X)
    check("grad_weight", gw, gw_ref, X)
    if cfg["bias"]:
        check("grad_bias", gb, gb_ref, X)
    else:
        assert gb is None


@torch_settings
@given(cfg=pool_configs(dilation=False))
def test_avg_pool2d_matches_torch(torch, backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = pool_input(rng, (cfg["n"], cfg["c"], *cfg["size"]), cfg["ties"])
    args = (cfg["kernel"], cfg["stride"], cfg["padding"])

    def ref(x):  # count_include_pad=True and floor rounding are PyTorch's defaults
        return torch.nn.functional.avg_pool2d(x, cfg["kernel"], cfg["stride"], cfg["padding"])

    g = rng.standard_normal(tuple(ref(torch.as_tensor(x)).shape))
    y_ref, (gx_ref,) = autograd(torch, ref, g, x)
    X, G = on(backend, x, g)
    with Unchanged(X, G):
        y = F.avg_pool2d(X, *args)
        gx = F.avg_pool2d_backward(G, X, *args)
    check("y", y, y_ref, X)
    check("grad_x", gx, gx_ref, X)


@torch_settings
@given(cfg=pool_configs(dilation=True))
def test_max_pool2d_matches_torch(torch, backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = pool_input(rng, (cfg["n"], cfg["c"], *cfg["size"]), cfg["ties"])
    args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])

    def ref(x):
        return torch.nn.functional.max_pool2d(x, *args)

    # With dilation a window can hold only padding: PyTorch's output is -inf there and its
    # gradient lands on an unrelated element (test_max_pool2d_window_of_padding_only).
    assume(bool(torch.isfinite(ref(torch.as_tensor(x))).all()))
    g = rng.standard_normal(tuple(ref(torch.as_tensor(x)).shape))
    y_ref, (gx_ref,) = autograd(torch, ref, g, x)
    X, G = on(backend, x, g)
    with Unchanged(X, G):
        y = F.max_pool2d(X, *args)
        y2, cache = F.max_pool2d_forward(X, *args)
        gx = F.max_pool2d_backward(G, X, *args)
    check("y", y, y_ref, X)
    check("max_pool2d_forward y", y2, y_ref, X)
    check("grad_x", gx, gx_ref, X)


def test_max_pool2d_window_of_padding_only(backend):
    """Kernel (1, 2), dilation (1, 2), padding (0, 1) on a 1x1 image: the one window is two padding
    cells. The maximum is -inf, as PyTorch's, and no gradient flows (PyTorch 2.13 CPU sends it to
    another channel's element: not a reference to follow)."""
    (x, g) = on(backend, np.array([[[[0.5]], [[-0.3]]]]), np.array([[[[0.64]], [[0.2]]]]))
    args = ((1, 2), None, (0, 1), (1, 2))
    assert np.array_equal(xpcnn.to_numpy(F.max_pool2d(x, *args)), np.full((1, 2, 1, 1), -np.inf))
    assert np.array_equal(xpcnn.to_numpy(F.max_pool2d_backward(g, x, *args)), np.zeros((1, 2, 1, 1)))


@torch_settings
@given(cfg=conv_configs())
def test_relu_matches_torch(torch, backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["size"]))
    x.flat[:: cfg["o"] + 1] = 0.0  # exact zeros: the gradient there is 0, as PyTorch's
    g = rng.standard_normal(x.shape)
    y_ref, (gx_ref,) = autograd(torch, torch.relu, g, x)
    X, G = on(backend, x, g)
    with Unchanged(X, G):
        y, gx = F.relu(X), F.relu_backward(G, X)
    check("y", y, y_ref, X)
    check("grad_x", gx, gx_ref, X)


@torch_settings
@given(cfg=row_configs, log=st.booleans(), axis=st.sampled_from([1, -1, 0]))
def test_softmax_and_log_softmax_match_torch(torch, backend, cfg, log, axis):
    rng = np.random.default_rng(cfg["seed"])
    z = rng.standard_normal((cfg["n"], cfg["k"])) * 4 + cfg["shift"]
    g = rng.standard_normal(z.shape)
    fn, bwd = (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    ref = torch.log_softmax if log else torch.softmax
    y_ref, (gz_ref,) = autograd(torch, lambda z: ref(z, dim=axis), g, z)
    Z, G = on(backend, z, g)
    with Unchanged(Z, G):
        y = fn(Z, axis=axis)
        gz = bwd(G, y, axis=axis)
    check("y", y, y_ref, Z)
    check("grad_z", gz, gz_ref, Z)


@torch_settings
@given(n=st.integers(1, 4), fin=st.integers(1, 40), fout=st.integers(1, 12), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_linear_matches_torch(torch, backend, n, fin, fout, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, fin)), rng.standard_normal((fin, fout))
    b = rng.standard_normal(fout) if bias else None
    g = rng.standard_normal((n, fout))
    y_ref, (gx_ref, gw_ref, gb_ref) = autograd(torch, lambda x, w, b: x @ w + b if b is not None else x @ w, g, x, w, b)
    X, W, B, G = on(backend, x, w, b, g)
    with Unchanged(X, W, B, G):
        y = F.linear(X, W, B)
        gx, gw, gb = F.linear_backward(G, X, W, bias=bias)
    check("y", y, y_ref, X)
    check("grad_x", gx, gx_ref, X)
    check("grad_weight", gw, gw_ref, X)
    if bias:
        check("grad_bias", gb, gb_ref, X)
    else:
        assert gb is None


@torch_settings
@given(cfg=row_configs)
def test_cross_entropy_matches_torch(torch, backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    z = rng.standard_normal((cfg["n"], cfg["k"])) * 4 + cfg["shift"]
    z[0, 0] += 2 * cfg["shift"]  # one logit far from the rest: log-sum-exp must stay finite
    labels = rng.integers(0, cfg["k"], cfg["n"])
    loss_ref, (gz_ref,) = autograd(
        torch, lambda z: torch.nn.functional.cross_entropy(z, torch.as_tensor(labels)), 1.0, z
    )
    Z, Y = on(backend, z, labels)
    with Unchanged(Z, Y):
        loss, gz = F.cross_entropy_with_grad(Z, Y)
        loss2, gz2 = F.cross_entropy(Z, Y), F.cross_entropy_backward(Z, Y)
    assert tuple(loss.shape) == ()
    for name, got in [("loss", loss), ("cross_entropy", loss2)]:
        check(name, got, loss_ref, Z)
    for name, got in [("grad_logits", gz), ("cross_entropy_backward", gz2)]:
        check(name, got, gz_ref, Z)


# ---------------------------------------------------------------- against finite differences


def fd(fn, inputs, backward, **kw):
    return gradcheck(fn, inputs, backward=backward, eps=FINITE_DIFF_STEP, rtol=FINITE_DIFF_RTOL,
                     max_elements=FD_MAX_ELEMENTS, **kw)


@fd_settings
@given(cfg=conv_configs(max_size=9, max_batch=2, max_channels=3))
def test_conv2d_finite_differences(backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["size"]))
    w = rng.standard_normal((cfg["o"], cfg["c"], *cfg["kernel"]))
    b = rng.standard_normal(cfg["o"])
    geom = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"])
    fd(lambda x, w, b: F.conv2d(x, w, b, **geom), tuple(on(backend, x, w, b)),
       lambda g, x, w, b: F.conv2d_backward(g, x, w, **geom))


@fd_settings
@given(cfg=pool_configs(dilation=True, max_size=9, max_batch=2))
def test_pools_finite_differences(backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    (x,) = on(backend, distinct(rng, (cfg["n"], cfg["c"], *cfg["size"])))
    pool = (cfg["kernel"], cfg["stride"], cfg["padding"])
    fd(lambda x: F.avg_pool2d(x, *pool), x, lambda g, x: F.avg_pool2d_backward(g, x, *pool))
    pool += (cfg["dilation"],)
    assume(bool(np.isfinite(xpcnn.to_numpy(F.max_pool2d(x, *pool))).all()))  # no window of padding only
    fd(lambda x: F.max_pool2d(x, *pool), x, lambda g, x: F.max_pool2d_backward(g, x, *pool))


@fd_settings
@given(cfg=row_configs)
def test_activations_and_loss_finite_differences(backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    z = rng.standard_normal((cfg["n"], cfg["k"])) * 3 + cfg["shift"]
    labels = rng.integers(0, cfg["k"], cfg["n"])
    Z, Y = on(backend, z, labels)
    fd(lambda z: F.softmax(z, axis=1), Z, lambda g, z: F.softmax_backward(g, F.softmax(z, axis=1), axis=1))
    fd(lambda z: F.log_softmax(z, axis=1), Z, lambda g, z: F.log_softmax_backward(g, F.log_softmax(z, axis=1), axis=1))
    fd(lambda z: F.cross_entropy(z, Y), Z, lambda g, z: g * F.cross_entropy_backward(z, Y))
    # away from ReLU's kink
    (X,) = on(backend, rng.choice([-1.0, 1.0], z.shape) * (0.1 + np.abs(rng.standard_normal(z.shape))))
    fd(F.relu, X, F.relu_backward)


@fd_settings
@given(n=st.integers(1, 4), fin=st.integers(1, 12), fout=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_linear_finite_differences(backend, n, fin, fout, seed):
    rng = np.random.default_rng(seed)
    X, W, B = on(backend, rng.standard_normal((n, fin)), rng.standard_normal((fin, fout)), rng.standard_normal(fout))
    fd(F.linear, (X, W, B), lambda g, x, w, b: F.linear_backward(g, x, w))


LAYER_CASES = {
    "Conv2D": (lambda: layers.Conv2D(3, 3, stride=2, padding=1, dilation=(1, 2)), (2, 7, 8)),
    "Conv2D_nobias": (lambda: layers.Conv2D(2, (2, 3), bias=False), (3, 6, 5)),
    "AvgPool2D": (lambda: layers.AvgPool2D(3, stride=2, padding=1), (2, 7, 6)),
    "MaxPool2D": (lambda: layers.MaxPool2D(2), (2, 7, 6)),
    "Dense": (lambda: layers.Dense(4), (9,)),
    "ReLU": (lambda: layers.ReLU(), (2, 4, 4)),
    "Flatten": (lambda: layers.Flatten(), (2, 3, 4)),
}


@pytest.mark.parametrize("name", LAYER_CASES)
def test_layers_finite_differences(backend, name):
    """Each layer's backward (input gradient and every parameter gradient) through the layer API,
    which also exercises the forward caches the layers pass to the functional backwards."""
    make, shape = LAYER_CASES[name]
    rng = np.random.default_rng(0)
    layer = make()
    layer.build(shape, rng=rng, backend=backend, dtype="float64")
    x = distinct(rng, (2, *shape), gap=0.05) + 0.01  # no ties and no exact zeros
    (X,) = on(backend, x)
    with Unchanged(X):
        result = gradcheck(layer, X, eps=FINITE_DIFF_STEP, rtol=FINITE_DIFF_RTOL, max_elements=FD_MAX_ELEMENTS)
    assert set(result.errors) == {"x", *(f"param {k}" for k in layer.params)}
