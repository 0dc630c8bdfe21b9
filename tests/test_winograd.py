"""Winograd convolution (xpcnn/functional/winograd.py) against PyTorch autograd: forward, input
gradient and weight gradient, float64 (relative error <= 1e-9) and float32 (the per-op float32
tolerance against float64 of the same float32 inputs), zero padding 0, 1, 2 and asymmetric,
odd and even sizes (whole and partial output tiles), on every selected backend; and the
dispatch: which convolutions take the Winograd path (forward, input gradient), and that
conv2d / conv2d_backward give the same results through it.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import functional as F
from xpcnn.backend import device_of, dtype_name, library_of
from xpcnn.functional import winograd
from xpcnn.functional.conv import conv2d_geometry

from .tolerances import FLOAT32_ATOL, FLOAT32_RTOL, FLOAT64_RTOL

# (N, C, O, H, W, padding): padding 0/1/2 and ((top, bottom), (left, right)); odd and even
# outputs, so the last row/column of 2x2 (and 4x4) tiles is partial in some and whole in others.
CONFIGS = [
    (2, 3, 4, 7, 8, 0),
    (1, 2, 5, 5, 5, 1),
    (3, 4, 2, 6, 9, 2),
    (2, 3, 3, 3, 3, 0),
    (1, 1, 1, 4, 4, 3),
    (2, 2, 3, 6, 5, ((2, 0), (1, 3))),
    (1, 6, 2, 10, 7, 1),
]


def torch_reference(torch, x, w, b, g, padding):
    """PyTorch float64 (y, grad_x, grad_w) of conv2d(x, w, b) with ((t, b), (l, r)) zero padding."""
    (top, bottom), (left, right) = padding
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w)]
    padded = torch.nn.functional.pad(leaves[0], (left, right, top, bottom))
    y = torch.nn.functional.conv2d(padded, leaves[1], torch.tensor(b, dtype=torch.float64))
    y.backward(torch.tensor(g, dtype=torch.float64))
    return y.detach().numpy(), leaves[0].grad.numpy(), leaves[1].grad.numpy()


def case(cfg, seed=0):
    n, c, o, h, w, padding = cfg
    rng = np.random.default_rng(seed)
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, 3, 3)), rng.standard_normal(o)
    geometry = conv2d_geometry(x.shape, wt.shape, 1, padding)
    g = rng.standard_normal((n, o, *geometry.out_hw))
    return x, wt, b, g, geometry


def winograd_all(backend, x, wt, b, g, geometry, m):
    """(y, grad_x, grad_w) of the three Winograd functions on ``backend``, checking that inputs
    are left unchanged and outputs stay in the inputs' library, device and dtype."""
    X, W, B, G = (xpcnn.to_device(a, backend) for a in (x, wt, b, g))
    before = [np.array(xpcnn.to_numpy(a), copy=True) for a in (X, W, B, G)]
    xp = xpcnn.namespace_of(X)
    y, cache = winograd.winograd_conv2d(xp, X, W, B, geometry, m)
    gx = winograd.winograd_conv2d_input_grad(xp, G, W, geometry, tuple(x.shape[2:]), m)
    gw = winograd.winograd_conv2d_weight_grad(xp, G, X, geometry, cache)
    gw_uncached = winograd.winograd_conv2d_weight_grad(xp, G, X, geometry, None, m)
    for a, copy in zip((X, W, B, G), before):
        assert np.array_equal(xpcnn.to_numpy(a), copy), "an input was modified"
    for out in (y, gx, gw, gw_uncached):
        assert library_of(out) == library_of(X) and device_of(out) == device_of(X)
        assert dtype_name(out.dtype) == dtype_name(X.dtype)
    return [xpcnn.to_numpy(a) for a in (y, gx, gw, gw_uncached)]


def assert_float64(name, got, ref):
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, PyTorch {ref.shape}"
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err <= FLOAT64_RTOL, f"{name}: relative error {err:.3g} vs PyTorch float64"


def assert_float32(name, got, ref):
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, PyTorch {ref.shape}"
    bound = FLOAT32_ATOL + FLOAT32_RTOL * np.abs(ref)
    worst = float(np.max(np.abs(got.astype(np.float64) - ref) / bound))
    assert worst <= 1.0, f"{name}: float32 error {worst:.3g}x the per-op tolerance"


@pytest.mark.parametrize("m", [2, 4], ids=["F2x2", "F4x4"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_float64_matches_torch(torch, backend, cfg, m):
    x, wt, b, g, geometry = case(cfg)
    refs = torch_reference(torch, x, wt, b, g, geometry.padding)
    got = winograd_all(backend, x, wt, b, g, geometry, m)
    for name, a, ref in zip(("y", "grad_x", "grad_weight", "grad_weight (no cache)"), got, refs + refs[2:]):
        assert_float64(name, a, ref)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_float32_within_the_op_tolerance(torch, backend, cfg):
    """F(2x2, 3x3), what the dispatch uses, in float32 against float64 of the same inputs."""
    x, wt, b, g, geometry = (a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in case(cfg, seed=1))
    refs = torch_reference(torch, x, wt, b, g, geometry.padding)
    got = winograd_all(backend, x, wt, b, g, geometry, 2)
    for name, a, ref in zip(("y", "grad_x", "grad_weight", "grad_weight (no cache)"), got, refs + refs[2:]):
        assert_float32(name, a, ref)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 3), c=st.integers(1, 4), o=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       pads=st.tuples(*[st.integers(0, 3)] * 4), seed=st.integers(0, 2**32 - 1))
def test_any_size_and_padding(torch, n, c, o, h, w, pads, seed):
    """Hypothesis over sizes and asymmetric paddings (NumPy, float64), including outputs of one
    pixel and paddings larger than the kernel's reach."""
    top, bottom, left, right = pads
    if h + top + bottom < 3 or w + left + right < 3:
        return  # no output: conv2d_geometry refuses it, as PyTorch does
    x, wt, b, g, geometry = case((n, c, o, h, w, ((top, bottom), (left, right))), seed)
    refs = torch_reference(torch, x, wt, b, g, geometry.padding)
    got = winograd_all("numpy", x, wt, b, g, geometry, 2)
    for name, a, ref in zip(("y", "grad_x", "grad_weight"), got, refs):
        assert_float64(name, a, ref)


# ---------------------------------------------------------------- the dispatch


def geometry_of(c, o, *, kernel=3, stride=1, padding=1, dilation=1, groups=1, size=16, n=8):
    return (n, c, size, size), (o, c // groups, kernel, kernel), conv2d_geometry(
        (n, c, size, size), (o, c // groups, kernel, kernel), stride, padding, dilation, groups)


def test_applicable_only_to_3x3_stride_1_dilation_1_one_group():
    wide = winograd.FORWARD_MIN_CHANNELS
    forward, input_grad = winograd.winograd_applicable, winograd.winograd_input_grad_applicable
    for padding in (1, 0, ((0, 2), (1, 0))):
        assert forward(*geometry_of(wide, wide, padding=padding))
        assert input_grad(*geometry_of(wide, wide, padding=padding))
    for other in (dict(kernel=5), dict(kernel=1, padding=0), dict(stride=2), dict(dilation=2), dict(groups=2)):
        assert not forward(*geometry_of(wide, wide, **other)) and not input_grad(*geometry_of(wide, wide, **other))


def test_the_measured_rule():
    """The forward only with many channels on both sides and enough output pixels; the input
    gradient when the layer has at least as many input channels as output channels."""
    forward, input_grad = winograd.winograd_applicable, winograd.winograd_input_grad_applicable
    wide = winograd.FORWARD_MIN_CHANNELS
    assert not forward(*geometry_of(wide - 1, wide)) and not forward(*geometry_of(wide, wide - 1))
    assert not forward(*geometry_of(wide, wide, size=12))  # a 12 x 12 output: too few pixels
    assert not forward(*geometry_of(wide, wide, n=1))  # one image: too little work
    smallest = winograd.INPUT_GRAD_MIN_CHANNELS
    assert input_grad(*geometry_of(smallest, smallest)) and input_grad(*geometry_of(smallest, 1))
    assert not input_grad(*geometry_of(smallest - 1, 1)) and not input_grad(*geometry_of(smallest, smallest + 1))
    assert not forward(*geometry_of(smallest, smallest))


@pytest.mark.parametrize("shape", [(8, winograd.FORWARD_MIN_CHANNELS, winograd.FORWARD_MIN_CHANNELS, 14, 15),
                                   (2, winograd.INPUT_GRAD_MIN_CHANNELS, 3, 6, 5)],
                         ids=["forward-and-input-grad", "input-grad-only"])
def test_conv2d_dispatches_to_winograd(torch, backend, shape):
    """Convolutions the rule sends to Winograd: conv2d, conv2d_forward (which then returns no
    im2col columns) and conv2d_backward (with and without input gradient) match PyTorch in float64."""
    x, wt, b, g, geometry = case((*shape, 1))
    forward = winograd.winograd_applicable(x.shape, wt.shape, geometry)
    assert forward == (shape[1] == winograd.FORWARD_MIN_CHANNELS)  # the first case takes both paths
    assert winograd.winograd_input_grad_applicable(x.shape, wt.shape, geometry)
    y_ref, gx_ref, gw_ref = torch_reference(torch, x, wt, b, g, geometry.padding)
    X, W, B, G = (xpcnn.to_device(a, backend) for a in (x, wt, b, g))
    y, cols = F.conv2d_forward(X, W, B, padding=1)
    assert (cols is None) == forward
    assert_float64("conv2d", xpcnn.to_numpy(F.conv2d(X, W, B, padding=1)), y_ref)
    assert_float64("conv2d_forward", xpcnn.to_numpy(y), y_ref)
    gx, gw, gb = F.conv2d_backward(G, X, W, padding=1, cols=cols)
    assert_float64("grad_x", xpcnn.to_numpy(gx), gx_ref)
    assert_float64("grad_weight", xpcnn.to_numpy(gw), gw_ref)
    assert_float64("grad_bias", xpcnn.to_numpy(gb), g.sum(axis=(0, 2, 3)))
    gx, gw, _ = F.conv2d_backward(G, X, W, padding=1, cols=cols, input_grad=False)
    assert gx is None
    assert_float64("grad_weight (no input grad)", xpcnn.to_numpy(gw), gw_ref)
