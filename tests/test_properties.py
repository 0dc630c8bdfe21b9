"""Property tests (issue 6, item 5): Hypothesis over layer shapes, strides, paddings, dilations and
dtypes. For every drawn configuration:

- output shapes are PyTorch's ``floor((size + 2p - d(k-1) - 1) / s) + 1`` (and torch's own, values
  included, when torch is installed), and a window larger than the padded input is a ShapeError
  exactly when that formula gives less than 1;
- gradients match central finite differences in float64 along random directions
  (``<grad, v>`` against ``(f(x + hv) - f(x - hv)) / 2h`` for ``f = sum(y * g)``);
- no input (data, incoming gradient, parameters) is modified by forward or backward;
- float32 in gives float32 out (outputs, input gradients and parameter gradients).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xpcnn
from tests.tolerances import FINITE_DIFF_ROUNDING_ULPS, FINITE_DIFF_RTOL, FINITE_DIFF_STEP, FLOAT64_RTOL, rtol_for
from xpcnn import functional as F
from xpcnn import layers
from xpcnn.backend import load_backend
from xpcnn.errors import ShapeError

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover - torch is a test extra
    torch = TF = None

NUMPY = load_backend("numpy")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from(["float32", "float64"])


def torch_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """PyTorch's documented output size (Conv2d / MaxPool2d / AvgPool2d, ceil_mode=False)."""
    return math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1)


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values with distinct magnitudes in [0.1, 1] and random signs: pairwise at least 0.9/size
    apart and at least 0.1 from 0, so no max-pool tie and no ReLU kink lies within a
    finite-difference step of any input."""
    size = math.prod(shape)
    magnitude = 0.1 + 0.9 * (rng.permutation(size) + 0.5) / size
    return (magnitude * rng.choice([-1.0, 1.0], size)).reshape(shape)


def as_pair(draw, low: int, high: int):
    """An int or an (h, w) pair: both spellings of a size are accepted everywhere."""
    a, b = draw(st.integers(low, high)), draw(st.integers(low, high))
    return draw(st.sampled_from([a, (a, b)]))


def pair_of(v):
    return v if isinstance(v, tuple) else (v, v)


# --- layer configurations --------------------------------------------------------------------------


@st.composite
def conv_configs(draw, valid: bool = True):
    kernel, stride = as_pair(draw, 1, 4), as_pair(draw, 1, 3)
    padding, dilation = as_pair(draw, 0, 2), as_pair(draw, 1, 3)
    kh, kw = pair_of(kernel)
    (ph, pw), (dh, dw) = pair_of(padding), pair_of(dilation)
    if valid:  # the smallest input the window fits in, plus some
        h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, 5))
        w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, 5))
    else:
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), h=h, w=w, out_channels=draw(st.integers(1, 4)),
                kernel=kernel, stride=stride, padding=padding, dilation=dilation, bias=draw(st.booleans()))


@st.composite
def pool_configs(draw, valid: bool = True, dilated: bool = True):
    kernel = as_pair(draw, 1, 4)
    kh, kw = pair_of(kernel)
    padding = draw(st.sampled_from([(0, 0), (kh // 2, kw // 2), 0]))  # PyTorch: padding <= kernel // 2
    stride = draw(st.one_of(st.none(), st.just(as_pair(draw, 1, 3))))
    dilation = as_pair(draw, 1, 3) if dilated else 1
    (ph, pw), (dh, dw) = pair_of(padding), pair_of(dilation)
    if valid:
        h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, 5))
        w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, 5))
    else:
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), h=h, w=w,
                kernel=kernel, stride=stride, padding=padding, dilation=dilation)


def expected_hw(cfg, stride):
    (kh, kw), (sh, sw) = pair_of(cfg["kernel"]), pair_of(stride)
    (ph, pw), (dh, dw) = pair_of(cfg["padding"]), pair_of(cfg["dilation"])
    return torch_out(cfg["h"], kh, sh, ph, dh), torch_out(cfg["w"], kw, sw, pw, dw)


def make_conv(cfg):
    return layers.Conv2D(cfg["out_channels"], cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"],
                         dilation=cfg["dilation"], bias=cfg["bias"])


def build(layer, input_shape, dtype, seed=0):
    """Build ``layer`` on NumPy and give every parameter random non-zero values (biases too)."""
    rng = np.random.default_rng(seed)
    layer.build(input_shape, rng=rng, backend=NUMPY, dtype=dtype)
    for name, p in layer.params.items():
        layer.params[name] = distinct(rng, tuple(p.shape)).astype(dtype)
    return layer


# --- output shapes ---------------------------------------------------------------------------------


@PROPERTY
@given(cfg=conv_configs(valid=False), dtype=DTYPES)
def test_conv2d_output_shape_is_pytorchs(cfg, dtype):
    oh, ow = expected_hw(cfg, cfg["stride"])
    layer = make_conv(cfg)
    shape = (cfg["c"], cfg["h"], cfg["w"])
    if oh < 1 or ow < 1:
        with pytest.raises(ShapeError, match="larger than the padded input"):
            layer.output_shape(shape)
        return
    assert layer.output_shape(shape) == (cfg["out_channels"], oh, ow)
    build(layer, shape, dtype)
    x = distinct(np.random.default_rng(1), (cfg["n"], *shape)).astype(dtype)
    y = layer(x)
    assert y.shape == (cfg["n"], cfg["out_channels"], oh, ow)
    if torch is not None and dtype == "float64":
        bias = torch.from_numpy(layer.params["bias"]) if cfg["bias"] else None
        ref = TF.conv2d(torch.from_numpy(x), torch.from_numpy(layer.params["weight"]), bias,
                        stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"]).numpy()
        assert ref.shape == y.shape
        assert np.abs(y - ref).max() <= FLOAT64_RTOL * np.abs(ref).max()


@PROPERTY
@given(cfg=pool_configs(valid=False), dtype=DTYPES, kind=st.sampled_from(["max", "avg"]))
def test_pool_output_shape_is_pytorchs(cfg, dtype, kind):
    if kind == "avg":
        cfg["dilation"] = 1  # AvgPool2d has no dilation (in PyTorch either)
    stride = cfg["kernel"] if cfg["stride"] is None else cfg["stride"]
    oh, ow = expected_hw(cfg, stride)
    shape = (cfg["c"], cfg["h"], cfg["w"])
    x = distinct(np.random.default_rng(1), (cfg["n"], *shape)).astype(dtype)
    layer = (layers.MaxPool2D if kind == "max" else layers.AvgPool2D)(cfg["kernel"], cfg["stride"], cfg["padding"])
    op = (lambda: F.max_pool2d(x, cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])) if kind == "max" \
        else (lambda: F.avg_pool2d(x, cfg["kernel"], cfg["stride"], cfg["padding"]))
    if oh < 1 or ow < 1:
        with pytest.raises(ShapeError, match="larger than the padded input"):
            op()
        return
    y = op()
    assert y.shape == (cfg["n"], cfg["c"], oh, ow)
    if cfg["dilation"] == 1:
        assert layer.output_shape(shape) == (cfg["c"], oh, ow) == tuple(layer(x).shape[1:])
    if torch is not None and dtype == "float64":
        t = torch.from_numpy(x)
        ref = (TF.max_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"]) if kind == "max"
               else TF.avg_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"])).numpy()
        assert ref.shape == y.shape
        # A dilated max-pool window can fall entirely in the padding: -inf, in PyTorch too.
        np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
        finite = np.isfinite(ref)
        assert np.abs(y[finite] - ref[finite]).max(initial=0.0) <= FLOAT64_RTOL * np.abs(ref[finite]).max(initial=0.0)


@PROPERTY
@given(n=st.integers(1, 4), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), units=st.integers(1, 6))
def test_flatten_and_dense_output_shapes(n, shape, units):
    flat = layers.Flatten()
    assert flat.output_shape(tuple(shape)) == (math.prod(shape),)
    x = distinct(np.random.default_rng(0), (n, *shape))
    y = flat(x)
    assert y.shape == (n, math.prod(shape))
    np.testing.assert_array_equal(y, x.reshape(n, -1))  # C, H, W order, as torch.flatten(x, 1)
    dense = build(layers.Dense(units), (math.prod(shape),), "float64")
    assert dense.output_shape((math.prod(shape),)) == (units,) == tuple(dense(y).shape[1:])


# --- gradients against finite differences (float64) ------------------------------------------------


def weighted(y, g) -> tuple[float, float]:
    """f = sum(y * g) and the size of what was summed, sum(|y * g|) (its rounding scale)."""
    terms = np.asarray(y) * g
    return float(np.sum(terms)), float(np.sum(np.abs(terms)))


def loss_value(loss) -> tuple[float, float]:
    """A cross-entropy and its rounding scale: log-sum-exp of max-shifted logits sums terms >= 1,
    so the loss is off by ulps of max(loss, 1), not of the loss (tiny when the model is sure)."""
    return float(loss), max(float(loss), 1.0)


def directional_check(evaluate, point: dict, analytic: dict, rng) -> None:
    """For each named array in ``point``: ``<analytic, v>`` against the central difference of the
    scalar f along a random normal ``v``, where ``evaluate(point) -> (f, size)`` and ``size`` is
    the magnitude f was computed from. The error is relative to ``max(|<analytic, v>|, ||analytic||)``:
    ``||analytic||`` is the typical size of ``<analytic, v>`` for normal ``v``, so a directional
    derivative that happens to be ~0 is not divided by ~0. The finite difference's own rounding
    floor (a few ulps of ``size`` over 2h) is added to the bound."""
    h = FINITE_DIFF_STEP
    ulp = np.finfo(np.float64).eps
    for name, base in point.items():
        v = rng.standard_normal(base.shape)
        plus, size_plus = evaluate({**point, name: base + h * v})
        minus, size_minus = evaluate({**point, name: base - h * v})
        numeric = (plus - minus) / (2 * h)
        dot = float(np.sum(analytic[name] * v))
        scale = max(abs(dot), float(np.linalg.norm(analytic[name])))
        rounding = FINITE_DIFF_ROUNDING_ULPS * ulp * max(size_plus, size_minus) / (2 * h)
        assert abs(numeric - dot) <= FINITE_DIFF_RTOL * scale + rounding, (
            f"{name}: <grad, v> = {dot!r}, finite difference {numeric!r} "
            f"(scale {scale:.3g}, rounding floor {rounding:.3g})"
        )


def check_layer_gradients(layer, x, seed=0):
    """Finite-difference check of a built float64 layer's input and parameter gradients."""
    rng = np.random.default_rng(seed)
    y = layer(x)
    g = rng.standard_normal(y.shape)
    grad_x = layer.backward(g)
    analytic = {"x": grad_x, **{f"param {k}": v for k, v in layer.grads.items()}}
    assert set(layer.grads) == set(layer.params)
    params = dict(layer.params)

    def evaluate(point):
        layer.params.update({k: point[f"param {k}"] for k in params})
        try:
            return weighted(layer(point["x"]), g)
        finally:
            layer.params.update(params)

    directional_check(evaluate, {"x": x, **{f"param {k}": v for k, v in params.items()}}, analytic, rng)


@PROPERTY
@given(cfg=conv_configs(), seed=st.integers(0, 2**16))
def test_conv2d_gradients_match_finite_differences(cfg, seed):
    layer = build(make_conv(cfg), (cfg["c"], cfg["h"], cfg["w"]), "float64", seed)
    x = distinct(np.random.default_rng(seed), (cfg["n"], cfg["c"], cfg["h"], cfg["w"]))
    check_layer_gradients(layer, x, seed)


@PROPERTY
@given(cfg=pool_configs(), seed=st.integers(0, 2**16), kind=st.sampled_from(["max", "avg"]))
def test_pool_gradients_match_finite_differences(cfg, seed, kind):
    x = distinct(np.random.default_rng(seed), (cfg["n"], cfg["c"], cfg["h"], cfg["w"]))
    k, s, p, d = cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"]
    rng = np.random.default_rng(seed + 1)
    if kind == "max":
        y = F.max_pool2d(x, k, s, p, d)
        assume(np.all(np.isfinite(y)))  # no window entirely in the padding (its max is -inf)
        g = rng.standard_normal(y.shape)
        grad = F.max_pool2d_backward(g, x, k, s, p, d)
        directional_check(lambda q: weighted(F.max_pool2d(q["x"], k, s, p, d), g), {"x": x}, {"x": grad}, rng)
    else:
        y = F.avg_pool2d(x, k, s, p)
        g = rng.standard_normal(y.shape)
        grad = F.avg_pool2d_backward(g, x, k, s, p)
        directional_check(lambda q: weighted(F.avg_pool2d(q["x"], k, s, p), g), {"x": x}, {"x": grad}, rng)
    if d == 1 or d == (1, 1):  # the layers (no dilation argument) agree with the functions
        layer = (layers.MaxPool2D if kind == "max" else layers.AvgPool2D)(k, s, p)
        check_layer_gradients(layer, x, seed)


@PROPERTY
@given(n=st.integers(1, 4), features=st.integers(1, 8), units=st.integers(1, 6), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_dense_gradients_match_finite_differences(n, features, units, bias, seed):
    layer = build(layers.Dense(units, bias=bias), (features,), "float64", seed)
    check_layer_gradients(layer, distinct(np.random.default_rng(seed), (n, features)), seed)


@PROPERTY
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_relu_and_flatten_gradients_match_finite_differences(shape, seed):
    x = distinct(np.random.default_rng(seed), tuple(shape))
    check_layer_gradients(layers.ReLU(), x, seed)
    check_layer_gradients(layers.Flatten(), x, seed)


@PROPERTY
@given(n=st.integers(1, 5), k=st.integers(1, 6), seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 4.0]))
def test_softmax_and_cross_entropy_gradients_match_finite_differences(n, k, seed, scale):
    # Logits up to +-4: saturated softmax (|z| ~ 30) has gradients below the finite difference's
    # own rounding floor (eps * |f| / h ~ 1e-10); stability there is checked by the next test.
    rng = np.random.default_rng(seed)
    z = distinct(rng, (n, k)) * scale
    labels = rng.integers(0, k, n)
    for forward, backward in ((F.softmax, F.softmax_backward), (F.log_softmax, F.log_softmax_backward)):
        y = forward(z, axis=1)
        g = rng.standard_normal(y.shape)
        directional_check(lambda q, forward=forward, g=g: weighted(forward(q["z"], axis=1), g), {"z": z},
                          {"z": backward(g, y, axis=1)}, rng)
    loss, grad = F.cross_entropy_with_grad(z, labels)
    directional_check(lambda q: loss_value(F.cross_entropy(q["z"], labels)), {"z": z}, {"z": grad}, rng)


@PROPERTY
@given(n=st.integers(1, 5), k=st.integers(1, 6), seed=st.integers(0, 2**16), scale=st.sampled_from([1e2, 1e4, 1e30]),
       dtype=DTYPES)
def test_softmax_and_cross_entropy_finite_at_huge_logits(n, k, seed, scale, dtype):
    rng = np.random.default_rng(seed)
    z = (distinct(rng, (n, k)) * scale).astype(dtype)
    loss, grad = F.cross_entropy_with_grad(z, rng.integers(0, k, n))
    p = F.softmax(z, axis=1)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad)) and np.all(np.isfinite(F.log_softmax(z, axis=1)))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=rtol_for(dtype))
    assert loss.dtype == grad.dtype == p.dtype == np.dtype(dtype)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=conv_configs(), pool=st.integers(1, 2), units=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_model_parameter_gradients_match_finite_differences(cfg, pool, units, seed):
    """A whole Sequential: loss_and_grad's parameter gradients against finite differences of the loss."""
    model = xpcnn.Sequential(
        [make_conv(cfg), layers.MaxPool2D(pool), layers.ReLU(), layers.Flatten(), layers.Dense(units)]
    )
    shape = (cfg["c"], cfg["h"], cfg["w"])
    oh, ow = expected_hw(cfg, cfg["stride"])
    assume(oh >= pool and ow >= pool)
    model.build(shape, seed=seed, dtype="float64", backend="numpy")
    rng = np.random.default_rng(seed)
    # Continuous random values, not the grid of distinct(): grid values can cancel exactly in a
    # convolution and put a ReLU input on its kink at 0.
    model.set_weights([rng.uniform(-1.0, 1.0, tuple(w.shape)) for w in model.get_weights()])
    x = rng.uniform(-1.0, 1.0, (cfg["n"], *shape))
    labels = rng.integers(0, units, cfg["n"])
    pre_relu = model.layers[1](model.layers[0](x))
    assume(np.abs(pre_relu).min() > 1e-3)  # no ReLU input within a finite-difference step of its kink
    model.loss_and_grad(x, labels)
    keys = [key for key, _, _ in model.named_parameters()]
    analytic = {key: layer.grads[name] for key, layer, name in model.named_parameters()}
    start = dict(zip(keys, model.get_weights()))

    def evaluate(point):
        model.set_weights([point[k] for k in keys])
        return loss_value(F.cross_entropy(model(x), labels))

    directional_check(evaluate, start, analytic, rng)


# --- no input mutated; float32 stays float32 -------------------------------------------------------


@st.composite
def any_layer(draw):
    """A layer and one input batch for it, in float32 or float64, on NumPy or torch."""
    kind = draw(st.sampled_from(["Conv2D", "MaxPool2D", "AvgPool2D", "Dense", "ReLU", "Flatten"]))
    if kind == "Conv2D":
        cfg = draw(conv_configs())
        layer, shape = make_conv(cfg), (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    elif kind in ("MaxPool2D", "AvgPool2D"):
        cfg = draw(pool_configs(dilated=False))
        layer = getattr(layers, kind)(cfg["kernel"], cfg["stride"], cfg["padding"])
        shape = (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    elif kind == "Dense":
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 8)))
        layer = layers.Dense(draw(st.integers(1, 5)), bias=draw(st.booleans()))
    else:
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=4)))
        layer = getattr(layers, kind)()
    return layer, shape, draw(DTYPES), draw(st.sampled_from(["numpy", "torch"]))


def host(a):
    return np.array(xpcnn.to_numpy(a), copy=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=any_layer(), seed=st.integers(0, 2**16))
def test_no_input_mutated_and_dtype_preserved(case, seed):
    layer, shape, dtype, library = case
    if library == "torch" and torch is None:
        pytest.skip("torch not installed")
    backend = load_backend(library)
    rng = np.random.default_rng(seed)
    layer.build(shape[1:], rng=rng, backend=backend, dtype=dtype)
    x = backend.asarray(distinct(rng, shape), dtype=dtype)
    params_before = {k: host(v) for k, v in layer.params.items()}
    x_before = host(x)

    y = layer(x)
    np.testing.assert_array_equal(host(x), x_before)
    g = backend.asarray(rng.standard_normal(tuple(y.shape)), dtype=dtype)
    g_before = host(g)
    y_before = host(y)
    grad_x = layer.backward(g)

    for name, (a, before) in {"x": (x, x_before), "grad_y": (g, g_before), "y": (y, y_before),
                              **{f"param {k}": (layer.params[k], v) for k, v in params_before.items()}}.items():
        np.testing.assert_array_equal(host(a), before, err_msg=f"{type(layer).__name__} modified {name}")
    for name, out in {"y": y, "grad_x": grad_x, **{f"grad {k}": v for k, v in layer.grads.items()}}.items():
        assert xpcnn.backend.library_of(out) == library, name
        assert xpcnn.backend.dtype_name(out.dtype) == dtype, (
            f"{type(layer).__name__}: {dtype} in, {name} is {out.dtype}"
        )
    assert tuple(grad_x.shape) == tuple(x.shape)
    assert set(layer.grads) == set(layer.params)
    assert all(tuple(layer.grads[k].shape) == tuple(layer.params[k].shape) for k in layer.params)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), k=st.integers(1, 6), dtype=DTYPES, seed=st.integers(0, 2**16))
def test_functional_ops_do_not_mutate_and_keep_dtype(n, k, dtype, seed):
    rng = np.random.default_rng(seed)
    z = distinct(rng, (n, k)).astype(dtype)
    labels = rng.integers(0, k, n)
    g = rng.standard_normal((n, k)).astype(dtype)
    before = [a.copy() for a in (z, labels, g)]
    outs = [F.softmax(z), F.log_softmax(z), F.softmax_backward(g, F.softmax(z)),
            F.log_softmax_backward(g, F.log_softmax(z)), *F.cross_entropy_with_grad(z, labels), F.relu(z),
            F.relu_backward(g, z)]
    for a, b in zip((z, labels, g), before):
        np.testing.assert_array_equal(a, b)
    assert all(o.dtype == np.dtype(dtype) for o in outs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), dtype=DTYPES)
def test_train_step_leaves_data_alone_and_keeps_dtype(seed, dtype):
    model = xpcnn.Sequential([layers.Conv2D(3, 3, padding=1), layers.MaxPool2D(2), layers.ReLU(), layers.Flatten(),
                              layers.Dense(4)]).build((1, 6, 6), seed=seed, dtype=dtype, backend="numpy")
    rng = np.random.default_rng(seed)
    x, y = distinct(rng, (5, 1, 6, 6)).astype(dtype), rng.integers(0, 4, 5)
    x0, y0 = x.copy(), y.copy()
    loss = model.train_step(x, y, xpcnn.optim.Adam(lr=1e-2))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    assert isinstance(loss, float) and math.isfinite(loss)
    assert all(w.dtype == np.dtype(dtype) for w in model.get_weights())
    assert model.predict(x).dtype == np.dtype(dtype)
