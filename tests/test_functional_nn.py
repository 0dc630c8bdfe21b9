"""The new element-wise activations (tanh, sigmoid, leaky_relu, gelu), batch_norm, dropout and
cross_entropy's label_smoothing / ignore_index, forward and backward against PyTorch CPU
autograd (float64 within FLOAT64_RTOL, float32 within the single-op tolerances), finite
differences for batch_norm, dropout masks that are the same on every backend, the bad-input
errors, and the backward passes on JAX arrays (immutable: no item assignment anywhere).
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import functional as F
from xpcnn.backend import dtype_name
from xpcnn.errors import ArgumentError, DTypeError, LabelError, ShapeError
from xpcnn.testing import gradcheck

from .test_ops import Unchanged, autograd, check, on
from .tolerances import FINITE_DIFF_RTOL, FINITE_DIFF_STEP, FLOAT32_ATOL, FLOAT32_RTOL, FLOAT64_RTOL

examples = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
fd_examples = settings(max_examples=10, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DTYPES = ["float64", "float32"]


def compare(names, got, expected, like, dtype):
    """float64: within FLOAT64_RTOL of the largest reference value (test_ops.check); float32:
    element-wise within FLOAT32_RTOL / FLOAT32_ATOL of the float64 reference."""
    for name, g, e in zip(names, got, expected):
        if dtype == "float64":
            check(name, g, e, like)
        else:
            assert dtype_name(g.dtype) == "float32", f"{name}: dtype {dtype_name(g.dtype)}"
            np.testing.assert_allclose(np.asarray(xpcnn.to_numpy(g), np.float64), e, rtol=FLOAT32_RTOL,
                                       atol=FLOAT32_ATOL, err_msg=name)


def cast(dtype, *arrays):
    return [None if a is None else a.astype(dtype) for a in arrays]


# ---------------------------------------------------------------- activations


def activations(torch):
    """name -> (PyTorch function, forward, backward, whether the backward takes the output y)."""
    tf = torch.nn.functional
    return {
        "tanh": (torch.tanh, F.tanh, F.tanh_backward, True),
        "sigmoid": (torch.sigmoid, F.sigmoid, F.sigmoid_backward, True),
        "leaky_relu": (tf.leaky_relu, F.leaky_relu, F.leaky_relu_backward, False),
        "leaky_relu_0.2": (lambda x: tf.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2),
                           lambda g, x: F.leaky_relu_backward(g, x, 0.2), False),
        "gelu": (lambda x: tf.gelu(x, approximate="tanh"), F.gelu, F.gelu_backward, False),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "leaky_relu", "leaky_relu_0.2", "gelu"])
@examples
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), scale=st.sampled_from([1.0, 4.0, 40.0]),
       seed=st.integers(0, 2**32 - 1))
def test_activations_match_torch(torch, sweep_backend, dtype, name, shape, scale, seed):
    reference, forward, backward, takes_output = activations(torch)[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    x.flat[::3] = 0.0  # exact zeros: the kink of leaky_relu (PyTorch's gradient there is the slope)
    g = rng.standard_normal(shape)
    y_ref, (gx_ref,) = autograd(torch, reference, g, x)
    X, G = on(sweep_backend, *cast(dtype, x, g))
    with Unchanged(X, G), warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings at large |x|
        y = forward(X)
        gx = backward(G, y if takes_output else X)
    compare(["y", "grad_x"], [y, gx], [y_ref, gx_ref], X, dtype)


def test_sigmoid_is_finite_at_huge_inputs(backend):
    """exp is only taken of -|x|: no overflow (nor its warning) at +-800, exact 0, 1/2 and 1."""
    (x,) = on(backend, np.array([-800.0, -40.0, 0.0, 40.0, 800.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = xpcnn.to_numpy(F.sigmoid(x))
    assert np.array_equal(y[[0, 2, 4]], [0.0, 0.5, 1.0])
    tail = math.exp(-40.0) / (1.0 + math.exp(-40.0))
    assert abs(y[1] - tail) <= FLOAT64_RTOL * tail and y[3] == 1.0 / (1.0 + math.exp(-40.0))


# ---------------------------------------------------------------- batch_norm


@st.composite
def bn_configs(draw):
    """(N, C, H, W) or (N, C); in training at least 3 values per channel: with 2 the normalised
    values are +-1 whatever x is, the true input gradient is eps-small and both libraries
    return rounding noise (test_batch_norm_two_values_per_channel checks that case)."""
    four_d = draw(st.booleans())
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 4)), *((draw(st.integers(1, 4)), draw(st.integers(1, 4)))
                                                                  if four_d else ()))
    training = draw(st.booleans())
    if training and math.prod(shape) // shape[1] < 3:
        shape = (3, *shape[1:])
    return dict(shape=shape, training=training, affine=draw(st.booleans()),
                momentum=draw(st.sampled_from([0.1, 0.0, 0.5, 1.0])), eps=draw(st.sampled_from([1e-5, 1e-3])),
                shift=draw(st.sampled_from([0.0, 3.0])), seed=draw(st.integers(0, 2**32 - 1)))


def bn_inputs(cfg):
    rng = np.random.default_rng(cfg["seed"])
    c = cfg["shape"][1]
    x = rng.standard_normal(cfg["shape"]) * 2 + cfg["shift"]
    w, b = (rng.standard_normal(c), rng.standard_normal(c)) if cfg["affine"] else (None, None)
    mean, var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    return rng, x, w, b, mean, var


@pytest.mark.parametrize("dtype", DTYPES)
@examples
@given(cfg=bn_configs())
def test_batch_norm_matches_torch(torch, sweep_backend, dtype, cfg):
    """Output, input/weight/bias gradients and the new running statistics (PyTorch updates its
    buffers in place; xpcnn returns new ones and leaves its inputs alone)."""
    rng, x, w, b, mean, var = bn_inputs(cfg)
    torch_mean, torch_var = torch.tensor(mean), torch.tensor(var)
    opts = dict(training=cfg["training"], momentum=cfg["momentum"], eps=cfg["eps"])

    def ref(x, w, b):
        return torch.nn.functional.batch_norm(x, torch_mean, torch_var, w, b, **opts)

    g = rng.standard_normal(x.shape)
    y_ref, grads_ref = autograd(torch, ref, g, x, w, b)
    X, W, B, M, V, G = on(sweep_backend, *cast(dtype, x, w, b, mean, var, g))
    with Unchanged(X, W, B, M, V, G):
        y, saved, new_mean, new_var = F.batch_norm(X, W, B, M, V, **opts)
        grads = F.batch_norm_backward(G, X, W, saved, training=cfg["training"], bias=cfg["affine"])
    names = ["y", "new running_mean", "new running_var", "grad_x"]
    got, expected = [y, new_mean, new_var, grads[0]], [y_ref, torch_mean.numpy(), torch_var.numpy(), grads_ref[0]]
    if cfg["affine"]:
        names += ["grad_weight", "grad_bias"]
        got += list(grads[1:])
        expected += grads_ref[1:]
    else:
        assert grads[1] is None and grads[2] is None
    compare(names, got, expected, X, dtype)


def test_batch_norm_two_values_per_channel(torch, backend):
    """Batch of 2 on (N, C): the smallest batch PyTorch trains on."""
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    mean, var = np.zeros(5), np.ones(5)
    y_ref, grads_ref = autograd(
        torch, lambda x, w, b: torch.nn.functional.batch_norm(x, torch.zeros(5, dtype=torch.float64),
                                                              torch.ones(5, dtype=torch.float64), w, b, training=True),
        g, x, w, b)
    X, W, B, M, V, G = on(backend, x, w, b, mean, var, g)
    y, saved, _, _ = F.batch_norm(X, W, B, M, V, training=True)
    compare(["y", "grad_x", "grad_weight", "grad_bias"], [y, *F.batch_norm_backward(G, X, W, saved, training=True)],
            [y_ref, *grads_ref], X, "float64")


def test_batch_norm_without_running_statistics(torch, backend):
    """running_mean = running_var = None: batch statistics only (PyTorch's track_running_stats=False)."""
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))
    y_ref, (gx_ref,) = autograd(torch, lambda x: torch.nn.functional.batch_norm(x, None, None, training=True), g, x)
    X, G = on(backend, x, g)
    y, saved, new_mean, new_var = F.batch_norm(X, None, None, None, None, training=True)
    gx, gw, gb = F.batch_norm_backward(G, X, None, saved, training=True, bias=False)
    assert new_mean is None and new_var is None and gw is None and gb is None
    compare(["y", "grad_x"], [y, gx], [y_ref, gx_ref], X, "float64")


@fd_examples
@given(cfg=bn_configs())
def test_batch_norm_finite_differences(sweep_backend, cfg):
    _, x, w, b, mean, var = bn_inputs({**cfg, "affine": True})
    X, W, B, M, V = on(sweep_backend, x, w, b, mean, var)
    opts = dict(training=cfg["training"], momentum=cfg["momentum"], eps=cfg["eps"])

    def forward(x, w, b):
        return F.batch_norm(x, w, b, M, V, **opts)[0]

    def backward(g, x, w, b):
        return F.batch_norm_backward(g, x, w, F.batch_norm(x, w, b, M, V, **opts)[1], training=cfg["training"])

    gradcheck(forward, (X, W, B), backward=backward, eps=FINITE_DIFF_STEP, rtol=FINITE_DIFF_RTOL, max_elements=48)


# ---------------------------------------------------------------- dropout


def test_dropout_mask_is_the_same_on_every_backend(backend):
    like = np.zeros((3, 4, 5, 6), np.float32)
    expected = F.dropout_mask(like, 0.25, seed=12345, counter=7)
    (on_backend,) = on(backend, like)
    got = F.dropout_mask(on_backend, 0.25, seed=12345, counter=7)
    assert xpcnn.backend.library_of(got) == xpcnn.backend.library_of(on_backend)
    assert xpcnn.backend.device_of(got) == xpcnn.backend.device_of(on_backend)
    assert dtype_name(got.dtype) == "float32" and tuple(got.shape) == like.shape
    assert np.array_equal(xpcnn.to_numpy(got), expected)


def test_dropout_mask_statistics():
    """Values are exactly 0 or 1/(1-p); the keep fraction is 1-p within 5 binomial sigmas; another
    counter or seed gives a mask that agrees with this one as often as an independent one would."""
    like, p = np.zeros((1000, 1000)), 0.3
    mask = F.dropout_mask(like, p, seed=1, counter=0)
    kept = mask > 0
    assert set(np.unique(mask)) == {0.0, 1.0 / (1.0 - p)}
    sigma = math.sqrt(p * (1 - p) / kept.size)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    assert abs(np.mean(kept[:, :-1] & kept[:, 1:]) - (1 - p) ** 2) < 0.005  # neighbours are independent
    independent = p * p + (1 - p) * (1 - p)
    for other in (F.dropout_mask(like, p, seed=1, counter=1), F.dropout_mask(like, p, seed=2, counter=0)):
        agree = ((other > 0) == kept).mean()
        assert abs(agree - independent) < 5 * math.sqrt(independent * (1 - independent) / kept.size)
    assert np.array_equal(F.dropout_mask(like, p, seed=1, counter=0), mask)
    assert np.array_equal(F.dropout_mask(like[:10], 0.0, seed=1, counter=0), np.ones((10, 1000)))


def test_dropout_mask_on_jax_is_the_numpy_mask():
    jax = pytest.importorskip("jax")
    like = np.zeros((7, 9, 11), np.float32)
    got = F.dropout_mask(jax.numpy.asarray(like), 0.5, seed=2**63 + 5, counter=2**40)
    assert np.array_equal(np.asarray(got), F.dropout_mask(like, 0.5, seed=2**63 + 5, counter=2**40))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_with_the_mask_fed_to_both_sides_matches_torch(torch, backend, dtype):
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((4, 3, 5, 5)), rng.standard_normal((4, 3, 5, 5))
    X, G = on(backend, *cast(dtype, x, g))
    mask = F.dropout_mask(X, 0.4, seed=9, counter=3)
    m = xpcnn.to_numpy(mask).astype(np.float64)
    y_ref, (gx_ref,) = autograd(torch, lambda x: x * torch.as_tensor(m), g, x)
    with Unchanged(X, G, mask):
        y, gx = F.dropout(X, mask), F.dropout_backward(G, mask)
    compare(["y", "grad_x"], [y, gx], [y_ref, gx_ref], X, dtype)


# ---------------------------------------------------------------- cross_entropy options


@pytest.mark.parametrize("dtype", DTYPES)
@examples
@given(n=st.integers(1, 6), k=st.integers(1, 7), label_smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       ignore=st.sampled_from([None, -100, 0, 3]), shift=st.sampled_from([0.0, 600.0]), seed=st.integers(0, 2**32 - 1))
def test_cross_entropy_options_match_torch(torch, sweep_backend, dtype, n, k, label_smoothing, ignore, shift, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * 3
    z[0] += shift  # log-sum-exp must stay finite
    labels = rng.integers(0, k, n)
    if ignore is not None:
        labels[rng.random(n) < 0.4] = ignore
        labels[0] = 0 if ignore != 0 else min(1, k - 1)  # at least one sample counted ...
        if ignore == 0 and k == 1:
            ignore = None  # ... which needs another class
    kw = dict(label_smoothing=label_smoothing, ignore_index=ignore)
    torch_ignore = -100 if ignore is None else ignore
    loss_ref, (gz_ref,) = autograd(
        torch, lambda z: torch.nn.functional.cross_entropy(z, torch.as_tensor(labels), label_smoothing=label_smoothing,
                                                           ignore_index=torch_ignore), 1.0, z)
    Z, Y = on(sweep_backend, z.astype(dtype), labels)
    with Unchanged(Z, Y):
        loss, gz = F.cross_entropy_with_grad(Z, Y, **kw)
        loss2, gz2 = F.cross_entropy(Z, Y, **kw), F.cross_entropy_backward(Z, Y, **kw)
    assert tuple(loss.shape) == ()
    compare(["loss", "grad_logits", "cross_entropy", "cross_entropy_backward"], [loss, gz, loss2, gz2],
            [loss_ref, gz_ref, loss_ref, gz_ref], Z, dtype)


def test_cross_entropy_with_narrow_labels_and_masked_classes_matches_torch(torch):
    rng = np.random.default_rng(0)
    z, labels = rng.standard_normal((4, 300)), np.array([0, 5, 40, 200])
    z[:, 299] = -np.inf  # a class masked out: its zero target weight adds nothing (torch), not 0 * -inf
    for smoothing in (0.0, 0.1):
        expected, (grad,) = autograd(torch, lambda t, s=smoothing: torch.nn.functional.cross_entropy(
            t, torch.as_tensor(labels), label_smoothing=s), 1.0, z)
        for dtype in (np.uint8, np.int16, np.int64):  # uint8 labels of 300 classes: an arange of 300 wraps in uint8
            loss, g = F.cross_entropy_with_grad(z, labels.astype(dtype), label_smoothing=smoothing)
            np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
            np.testing.assert_allclose(g, grad, rtol=1e-12, atol=1e-15)
    for library in ("torch", "array_api_strict"):  # the labels' range check widens them too
        xp = pytest.importorskip(library)
        on_lib = F.cross_entropy(xp.asarray(z), xp.asarray(labels.astype(np.uint8)))
        np.testing.assert_allclose(float(xpcnn.to_numpy(on_lib)), float(F.cross_entropy(z, labels)), rtol=1e-12)
    assert F.one_hot(np.array([0, 299], np.uint16), 300, np.float64).sum() == 2
    assert F.one_hot(np.array([0, 255], np.uint8), 300, np.float64).sum(axis=1).tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- bad input


X4 = np.ones((2, 3, 4, 4))
C3 = np.ones(3)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: F.dropout_mask(X4, 1.0, seed=0, counter=0), ArgumentError,
         r"^p: expected a drop probability in \[0, 1\)"),
        (lambda: F.dropout_mask(X4, -0.1, seed=0, counter=0), ArgumentError, r"^p: .*got -0.1"),
        (lambda: F.dropout_mask(X4, "0.5", seed=0, counter=0), ArgumentError, r"^p: "),
        (lambda: F.dropout_mask(X4, 0.5, seed=-1, counter=0), ArgumentError,
         r"^seed: expected an int in \[0, 2\*\*64\)"),
        (lambda: F.dropout_mask(X4, 0.5, seed=0, counter=1.5), ArgumentError, r"^counter: expected an int"),
        (lambda: F.dropout(X4, np.ones((2, 3))), ShapeError, r"^mask: expected shape \(2, 3, 4, 4\)"),
        (lambda: F.batch_norm(np.ones((1, 3, 1, 1)), C3, C3, C3, C3, training=True), ShapeError,
         r"^x: expected more than 1 value per channel when training"),
        (lambda: F.batch_norm(np.ones((1, 3)), C3, C3, C3, C3, training=True), ShapeError,
         r"^x: expected more than 1 value per channel when training .*\(1, 3\)"),
        (lambda: F.batch_norm(X4, C3, C3, C3, C3, training=True, momentum=1.5), ArgumentError,
         r"^momentum: expected a number in \[0.0, 1.0\]"),
        (lambda: F.batch_norm(X4, C3, C3, C3, C3, training=True, eps=0), ArgumentError, r"^eps: expected a positive"),
        (lambda: F.batch_norm(X4, np.ones(4), C3, C3, C3, training=True), ShapeError,
         r"^weight: expected shape \(3,\)"),
        (lambda: F.batch_norm(X4, C3, C3, C3, None, training=True), ArgumentError, r"^running_mean, running_var: "),
        (lambda: F.batch_norm(X4, C3, C3, None, None, training=False), ArgumentError, r"^running_mean: inference"),
        (lambda: F.batch_norm(X4, C3, C3, C3, C3, training=1), ArgumentError, r"^training: expected True or False"),
        (lambda: F.batch_norm(X4[0], C3, C3, C3, C3, training=True), ShapeError, r"^x: expected a 4-d .* or 2-d"),
        (lambda: F.batch_norm_backward(X4, X4, C3, (1, 2), training=True), ArgumentError, r"^saved: expected"),
        (lambda: F.batch_norm_backward(X4, X4, C3, F.batch_norm(X4[:1], C3, C3, None, None, training=True)[1],
                                       training=True), ArgumentError, r"^saved: from a forward of \(1, 3, 4, 4\)"),
        (lambda: F.batch_norm(np.ones((2, 0)), None, None, None, None, training=True), ShapeError,
         r"^x: expected a non-zero size"),
        (lambda: F.linear_backward(np.ones((2, 5)), np.ones((2, 3)), np.ones((4, 5))), ShapeError,
         r"^x: has 3 features but weight of shape \(4, 5\) expects 4"),
        (lambda: F.linear_backward(np.ones((2, 5), np.float32), np.ones((2, 3), np.float32), np.ones((3, 5))),
         DTypeError, r"^weight: dtype float64 differs from x dtype float32"),
        (lambda: F.conv_transpose2d(np.ones((1, 3, 0, 4)), np.ones((3, 2, 3, 3))), ShapeError,
         r"^x: expected H and W >= 1"),
        (lambda: F.conv2d_backward(np.ones((1, 2, 2, 2)), np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3)),
                                   bias=np.ones(2)), ArgumentError, r"^bias: expected True or False"),
        (lambda: F.leaky_relu(X4, "0.1"), ArgumentError, r"^negative_slope: expected a real number"),
        (lambda: F.cross_entropy(np.ones((2, 3)), np.array([0, 1]), label_smoothing=1.5), ArgumentError,
         r"^label_smoothing: expected a number in \[0, 1\]"),
        (lambda: F.cross_entropy(np.ones((2, 3)), np.array([0, 1]), ignore_index=1.0), ArgumentError,
         r"^ignore_index: expected None or an int"),
        (lambda: F.cross_entropy(np.ones((2, 3)), np.array([-1, -1]), ignore_index=-1), LabelError,
         r"^labels: every label equals ignore_index -1"),
        (lambda: F.cross_entropy(np.ones((2, 3)), np.array([-2, 0]), ignore_index=-1), LabelError,
         r"^labels: expected values in \[0, 2\] or ignore_index -1"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- JAX (immutable arrays)


def test_backward_passes_run_on_jax_arrays_and_match_numpy():
    """JAX arrays cannot be assigned into: padding and the backward's slice sums go through
    array-api-extra's functional updates (JAX's ``.at[]``). Float64 via jax.enable_x64 (scoped
    to this test). Run under jax.jit: one compilation instead of one per op (eager JAX compiles
    every distinct slice update on first use, ~1 s each here), and the stricter case: traced
    arrays take the same ``.at[]`` path as eager ones and may not be read as Python values."""
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 5, 6))
    conv = dict(stride=(2, 1), padding=((1, 0), (0, 1)), groups=2)
    transpose = dict(stride=2, padding=1, output_padding=1, groups=2)
    pool = dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)
    w, wt, b = rng.standard_normal((6, 2, 2, 1)), rng.standard_normal((4, 3, 2, 2)), rng.standard_normal(6)
    bn = [rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4), np.ones(4)]

    def run(x, w, wt, b, bn_w, bn_b, bn_m, bn_v, g_conv, g_t, g_pool):
        y, cols = F.conv2d_forward(x, w, b, **conv)
        y_bn, saved, new_m, new_v = F.batch_norm(x, bn_w, bn_b, bn_m, bn_v, training=True)
        return {
            "conv y": (y,), "conv grads": F.conv2d_backward(g_conv, x, w, cols=cols, **conv),
            "transpose y": (F.conv_transpose2d(x, wt, b, **transpose),),
            "transpose grads": F.conv_transpose2d_backward(g_t, x, wt, **transpose),
            "max pool": (F.max_pool2d(x, **pool), F.max_pool2d_backward(g_pool, x, **pool)),
            "avg pool": (F.avg_pool2d(x, **pool), F.avg_pool2d_backward(g_pool, x, **pool, count_include_pad=False)),
            "batch norm": (y_bn, new_m, new_v, *F.batch_norm_backward(x, x, bn_w, saved, training=True)),
        }

    shapes = [F.conv2d(x, w, **conv).shape, F.conv_transpose2d(x, wt, **transpose).shape, F.max_pool2d(x, **pool).shape]
    host = (x, w, wt, b, *bn, *(rng.standard_normal(s) for s in shapes))
    expected = run(*host)
    with jax.enable_x64(True):
        arrays = [jax.numpy.asarray(a) for a in host]
        got = jax.jit(run)(*arrays)
        for key, values in expected.items():
            for i, (e, g) in enumerate(zip(values, got[key])):
                assert type(g).__module__.startswith("jax"), f"{key} {i}: {type(g)}"
                g = np.asarray(g)
                assert g.dtype == np.float64 and g.shape == e.shape, f"{key} {i}: {g.dtype} {g.shape}"
                assert np.abs(g - e).max() <= FLOAT64_RTOL * np.abs(e).max(), f"{key} {i}"
