"""Asymmetric pool padding ((top, bottom), (left, right)) against PyTorch (float64, forward and
autograd backward): max pooling as ``F.pad(x, (left, right, top, bottom), value=-inf)`` then
``max_pool2d`` without padding; average pooling as ``F.pad`` with zeros then ``avg_pool2d``
(count_include_pad=True), or the padded sums over the number of input cells in each window
(count_include_pad=False). With ``ceil_mode`` PyTorch's own rule holds: no window starts in the
bottom/right padding, so xpcnn's output is the padded route's, less such a last window. Where
the padding is symmetric, PyTorch's padded pools give the same numbers.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xpcnn import functional as F
from xpcnn.errors import ArgumentError, ArgumentTypeError, ShapeError
from xpcnn.functional.pool import pool_geometry

from .test_ops import Unchanged, autograd, check, on, pool_input

pool_settings = settings(max_examples=40, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def padded_pools(draw, dilation=True):
    """A pool with each of its four paddings drawn alone (at most half the kernel, as PyTorch)."""
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(2))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(2)) if dilation else (1, 1)
    padding = tuple(tuple(draw(st.integers(0, k // 2)) for _ in range(2)) for k in kernel)
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - sum(p)), 9)) for k, d, p in zip(kernel, dil, padding))
    return dict(
        n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), size=size, kernel=kernel, stride=stride,
        padding=padding, dilation=dil, ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
        ties=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
    )


def torch_pad(cfg):
    """F.pad's (left, right, top, bottom) from ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = cfg["padding"]
    return (left, right, top, bottom)


def symmetric(cfg) -> bool:
    return all(before == after for before, after in cfg["padding"])


def crop_to(y, out_hw, cfg):
    """The padded route's output cut to xpcnn's size, after checking that any window cut off
    starts in the bottom/right padding (PyTorch's ceil_mode rule) and that no other is."""
    stride = cfg["stride"] or cfg["kernel"]
    for a in range(2):
        ref, mine, size, before = y.shape[2 + a], out_hw[a], cfg["size"][a], cfg["padding"][a][0]
        assert mine in (ref, ref - 1), f"axis {a}: {mine} windows, the padded route {ref}"
        assert ((ref - 1) * stride[a] >= size + before) == (mine == ref - 1), f"axis {a}: ceil_mode rule"
    return y[..., : out_hw[0], : out_hw[1]]


def geometry(cfg, x, **options):
    return pool_geometry(x.shape, cfg["kernel"], cfg["stride"], cfg["padding"], name="test", **options)


@pool_settings
@given(cfg=padded_pools(dilation=True), method=st.sampled_from(["taps", "argmax"]))
def test_max_pool2d_asymmetric_padding_matches_torch(torch, backend, cfg, method):
    rng = np.random.default_rng(cfg["seed"])
    x = pool_input(rng, (cfg["n"], cfg["c"], *cfg["size"]), cfg["ties"])
    pool = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])
    *_, out_hw = pool_geometry(x.shape, *pool, ceil_mode=cfg["ceil_mode"])
    tf = torch.nn.functional

    def ref(x):
        padded = tf.pad(x, torch_pad(cfg), value=-float("inf"))
        y = tf.max_pool2d(padded, cfg["kernel"], cfg["stride"], 0, cfg["dilation"], ceil_mode=cfg["ceil_mode"])
        return crop_to(y, out_hw, cfg)

    # With dilation a window can hold only padding (-inf; see test_ops.test_max_pool2d_window_of_padding_only).
    assume(bool(torch.isfinite(ref(torch.as_tensor(x))).all()))
    g = rng.standard_normal((cfg["n"], cfg["c"], *out_hw))
    y_ref, (gx_ref,) = autograd(torch, ref, g, x)
    if symmetric(cfg):
        native = tf.max_pool2d(torch.as_tensor(x), cfg["kernel"], cfg["stride"], [p for p, _ in cfg["padding"]],
                               cfg["dilation"], ceil_mode=cfg["ceil_mode"])
        np.testing.assert_array_equal(native.numpy(), y_ref)
    X, G = on(backend, x, g)
    with Unchanged(X, G):
        y = F.max_pool2d(X, *pool, ceil_mode=cfg["ceil_mode"])
        y2, saved = F.max_pool2d_forward(X, *pool, ceil_mode=cfg["ceil_mode"], method=method)
        gx = F.max_pool2d_backward(G, X, *pool, y=y2, taps=saved, ceil_mode=cfg["ceil_mode"])
    check("y", y, y_ref, X)
    check(f"max_pool2d_forward y ({method})", y2, y_ref, X)
    check(f"grad_x ({method})", gx, gx_ref, X)


@pool_settings
@given(cfg=padded_pools(dilation=False))
def test_avg_pool2d_asymmetric_padding_matches_torch(torch, backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = pool_input(rng, (cfg["n"], cfg["c"], *cfg["size"]), cfg["ties"])
    pool = (cfg["kernel"], cfg["stride"], cfg["padding"])
    options = dict(ceil_mode=cfg["ceil_mode"], count_include_pad=cfg["count_include_pad"])
    *_, out_hw = pool_geometry(x.shape, *pool, **options)
    tf = torch.nn.functional

    def padded_mean(x):
        y = tf.avg_pool2d(tf.pad(x, torch_pad(cfg)), cfg["kernel"], cfg["stride"], 0, ceil_mode=cfg["ceil_mode"])
        return crop_to(y, out_hw, cfg)

    def ref(x):
        if cfg["count_include_pad"]:
            return padded_mean(x)
        # Both means divide by the same clipped window size: the ratio is the sum over the
        # window's input cells divided by their number.
        return padded_mean(x) / padded_mean(torch.ones_like(x).detach())

    g = rng.standard_normal((cfg["n"], cfg["c"], *out_hw))
    y_ref, (gx_ref,) = autograd(torch, ref, g, x)
    if symmetric(cfg):
        native = tf.avg_pool2d(torch.as_tensor(x), cfg["kernel"], cfg["stride"], [p for p, _ in cfg["padding"]],
                               **options)
        np.testing.assert_allclose(native.numpy(), y_ref, rtol=1e-12, atol=1e-12)
    X, G = on(backend, x, g)
    with Unchanged(X, G):
        y = F.avg_pool2d(X, *pool, **options)
        gx = F.avg_pool2d_backward(G, X, *pool, **options)
    check("y", y, y_ref, X)
    check("grad_x", gx, gx_ref, X)


@pytest.mark.parametrize("padding, expected", [
    (1, ((1, 1), (1, 1))),
    ((1, 0), ((1, 1), (0, 0))),
    (((0, 1), (1, 0)), ((0, 1), (1, 0))),
    ([[1, 0], [0, 1]], ((1, 0), (0, 1))),
])
def test_pool_geometry_padding_forms(padding, expected):
    """int, (ph, pw) and ((top, bottom), (left, right)) all give the padded input's
    ((top, bottom), (left, right))."""
    assert pool_geometry((1, 1, 6, 6), 3, 1, padding).padding == expected


def test_pool_geometry_grows_the_far_side_for_ceil_mode():
    """Kernel 2, stride 2. Height 5 padded (0, 1): three windows, the last over the last row and
    the bottom padding. Width 6 padded (1, 0): three windows, or with ceil_mode a fourth over the
    last column and one cell past it, which the padded input's right side grows to hold."""
    padding = ((0, 1), (1, 0))
    assert pool_geometry((1, 1, 5, 6), 2, 2, padding).out_hw == (3, 3)
    geometry = pool_geometry((1, 1, 5, 6), 2, 2, padding, ceil_mode=True)
    assert geometry.out_hw == (3, 4) and geometry.padding == ((0, 1), (1, 1))


@pytest.mark.parametrize("padding", [((2, 0), (0, 0)), ((0, 0), (0, 2)), 2, (0, 2)])
def test_pool_padding_more_than_half_the_kernel_is_refused(padding):
    with pytest.raises(ShapeError, match="at most half the kernel"):
        pool_geometry((1, 1, 8, 8), 3, 1, padding)


@pytest.mark.parametrize("padding", [((1, 0), (0,)), ((1, 0), (0, -1)), "same", (1, (0, 1))])
def test_pool_padding_bad_forms_are_refused(padding):
    with pytest.raises((ArgumentError, ArgumentTypeError, ShapeError), match="padding"):
        pool_geometry((1, 1, 8, 8), 3, 1, padding)
