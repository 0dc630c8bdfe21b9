"""conv2d's groups and padding forms ("same", "valid", asymmetric), conv_transpose2d, and the
pools' ceil_mode / count_include_pad, forward and backward against PyTorch CPU autograd:
float64 within FLOAT64_RTOL, float32 within the single-op tolerances (tests/tolerances.py),
over Hypothesis configurations on every selected backend; central finite differences for
conv_transpose2d; and the bad-input errors.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import functional as F
from xpcnn.backend import dtype_name
from xpcnn.errors import ArgumentError, ShapeError
from xpcnn.testing import gradcheck

from .test_ops import Unchanged, autograd, check, on, pool_input
from .tolerances import FINITE_DIFF_RTOL, FINITE_DIFF_STEP, FLOAT32_ATOL, FLOAT32_RTOL

EXAMPLES = 30  # per test and backend
examples = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
fd_examples = settings(max_examples=10, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
pairs = st.tuples


def check_float32(name, got, expected):
    """float32 output of the same op within FLOAT32_RTOL / FLOAT32_ATOL of the float64 reference."""
    assert dtype_name(got.dtype) == "float32", f"{name}: dtype {dtype_name(got.dtype)}"
    np.testing.assert_allclose(np.asarray(xpcnn.to_numpy(got), np.float64), expected, rtol=FLOAT32_RTOL,
                               atol=FLOAT32_ATOL, err_msg=name)


def compare(names, got, expected, like, dtype):
    for name, g, e in zip(names, got, expected):
        if dtype == "float64":
            check(name, g, e, like)
        else:
            check_float32(name, g, e)


# ---------------------------------------------------------------- conv2d: groups and padding forms


@st.composite
def conv_configs(draw, max_size=10):
    """Groups 1-3 with 1-3 channels per group each way, any kernel/dilation, and one padding form:
    an int, an (h, w) pair, ((top, bottom), (left, right)), "valid" or "same" (then stride 1)."""
    groups, per_in, per_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = draw(pairs(st.integers(1, 4), st.integers(1, 4)))
    dilation = draw(pairs(st.integers(1, 2), st.integers(1, 2)))
    form = draw(st.sampled_from(["int", "pair", "asymmetric", "valid", "same"]))
    stride = (1, 1) if form == "same" else draw(pairs(st.integers(1, 3), st.integers(1, 3)))
    if form == "int":
        padding = draw(st.integers(0, 2))
        sides = ((padding, padding),) * 2
    elif form == "pair":
        padding = draw(pairs(st.integers(0, 2), st.integers(0, 2)))
        sides = tuple((p, p) for p in padding)
    elif form == "asymmetric":
        padding = draw(pairs(pairs(st.integers(0, 2), st.integers(0, 2)), pairs(st.integers(0, 2), st.integers(0, 2))))
        sides = padding
    else:
        padding, sides = form, ((0, 0), (0, 0))
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - sum(s)), max_size))
                 for k, d, s in zip(kernel, dilation, sides))
    return dict(n=draw(st.integers(1, 3)), groups=groups, c=groups * per_in, o=groups * per_out, size=size,
                kernel=kernel, stride=stride, padding=padding, dilation=dilation, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


def torch_conv2d(torch, cfg):
    """PyTorch's own conv2d for cfg: its "same"/"valid"/int/pair padding, or F.pad for asymmetric."""
    tf = torch.nn.functional
    padding = cfg["padding"]
    opts = dict(stride=cfg["stride"], dilation=cfg["dilation"], groups=cfg["groups"])
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
        return lambda x, w, b: tf.conv2d(tf.pad(x, (left, right, top, bottom)), w, b, **opts)
    return lambda x, w, b: tf.conv2d(x, w, b, padding=padding, **opts)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("fewest", [False, True], ids=["cpu forms", "gpu forms"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@examples
@given(cfg=conv_configs())
def test_conv2d_groups_and_padding_match_torch(torch, sweep_backend, dtype, fewest, cfg):
    """Both forms of the input gradient (the GPU's: grad_y's columns; the CPU's: a fold)."""
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["size"]))
    w = rng.standard_normal((cfg["o"], cfg["c"] // cfg["groups"], *cfg["kernel"]))
    b = rng.standard_normal(cfg["o"]) if cfg["bias"] else None
    ref = torch_conv2d(torch, cfg)
    g = rng.standard_normal(tuple(ref(*(None if a is None else torch.as_tensor(a) for a in (x, w, b))).shape))
    y_ref, grads_ref = autograd(torch, ref, g, x, w, b)
    opts = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])

    X, W, B, G = on(sweep_backend, *(None if a is None else a.astype(dtype) for a in (x, w, b, g)))
    with Unchanged(X, W, B, G), xpcnn.fewest_operations(fewest):
        y, cols = F.conv2d_forward(X, W, B, **opts)
        grads = F.conv2d_backward(G, X, W, bias=cfg["bias"], cols=cols, **opts)
        grads_recomputed = F.conv2d_backward(G, X, W, bias=cfg["bias"], **opts)
    names = ["y", "grad_x", "grad_weight", "grad_bias"][: 3 + cfg["bias"]]
    compare(names, [y, *grads], [y_ref, *grads_ref], X, dtype)
    compare(names[1:], grads_recomputed, grads_ref, X, dtype)
    if not cfg["bias"]:
        assert grads[2] is None


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("opts", [
    dict(padding=1), dict(padding="same", dilation=2, groups=2), dict(padding=((0, 2), (1, 0)), dilation=(1, 2)),
    dict(padding=0, groups=3),
], ids=["pad 1", "same, dilation 2, groups 2", "asymmetric, dilation (1, 2)", "valid, depthwise"])
def test_conv2d_input_grad_gpu_form_matches_torch(torch, backend, monkeypatch, opts):
    """The GPU form of the input gradient (stride 1: grad_y's columns times the flipped weight)
    runs, and gives PyTorch's gradient, in float64."""
    from xpcnn.functional import conv as C

    calls = []
    real = C.input_grad_by_columns
    monkeypatch.setattr(C, "input_grad_by_columns", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(7)
    groups = opts.get("groups", 1)
    x, w = rng.standard_normal((2, 6, 9, 8)), rng.standard_normal((12, 6 // groups, 3, 3))
    cfg = dict(stride=(1, 1), dilation=opts.get("dilation", 1), groups=groups, padding=opts["padding"])
    ref = torch_conv2d(torch, cfg)
    g = rng.standard_normal(tuple(ref(torch.as_tensor(x), torch.as_tensor(w), None).shape))
    _, grads_ref = autograd(torch, lambda x, w: ref(x, w, None), g, x, w)
    X, W, G = on(backend, x, w, g)
    with xpcnn.fewest_operations():
        grad_x, grad_w, _ = F.conv2d_backward(G, X, W, bias=False, **opts)
    assert calls, "the GPU form did not run"
    compare(["grad_x", "grad_weight"], [grad_x, grad_w], grads_ref, X, "float64")


def test_conv2d_depthwise_matches_torch(torch, backend):
    """groups == in_channels (depthwise), with a channel multiplier of 2 and "same" padding."""
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((8, 1, 3, 3)), rng.standard_normal(8)
    g = rng.standard_normal((2, 8, 7, 6))
    y_ref, grads_ref = autograd(torch, lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding="same", groups=4),
                                g, x, w, b)
    X, W, B, G = on(backend, x, w, b, g)
    y = F.conv2d(X, W, B, padding="same", groups=4)
    grads = F.conv2d_backward(G, X, W, padding="same", groups=4)
    compare(["y", "grad_x", "grad_weight", "grad_bias"], [y, *grads], [y_ref, *grads_ref], X, "float64")


def test_same_padding_puts_the_odd_pixel_bottom_right():
    """Kernel 2: PyTorch pads 0 on top/left and 1 on bottom/right, so the output keeps the size
    and its last row/column read the padding."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    y = F.conv2d(x, np.ones((1, 1, 2, 2)), padding="same")
    assert y.shape == (1, 1, 3, 3)
    assert np.array_equal(y[0, 0], [[8.0, 12.0, 7.0], [20.0, 24.0, 13.0], [13.0, 15.0, 8.0]])
    assert np.array_equal(F.conv2d(x, np.ones((1, 1, 2, 2)), padding="valid"), y[:, :, :2, :2])


# ---------------------------------------------------------------- conv_transpose2d


@st.composite
def transpose_configs(draw, max_size=7):
    groups, per_in, per_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = draw(pairs(st.integers(1, 4), st.integers(1, 4)))
    dilation = draw(pairs(st.integers(1, 2), st.integers(1, 2)))
    stride = draw(pairs(st.integers(1, 3), st.integers(1, 3)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = draw(pairs(st.integers(0, 2), st.integers(0, 2)))
    # Input sizes for which the output size is at least 1.
    smallest = [max(1, -((d * (k - 1) + op - 2 * p) // s) + 1)
                for k, d, s, p, op in zip(kernel, dilation, stride, padding, output_padding)]
    size = tuple(draw(st.integers(low, max(low, max_size))) for low in smallest)
    return dict(n=draw(st.integers(1, 3)), groups=groups, c=groups * per_in, o=groups * per_out, size=size,
                kernel=kernel, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


def transpose_opts(cfg):
    return dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"],
                dilation=cfg["dilation"], groups=cfg["groups"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@examples
@given(cfg=transpose_configs())
def test_conv_transpose2d_matches_torch(torch, sweep_backend, dtype, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["size"]))
    w = rng.standard_normal((cfg["c"], cfg["o"] // cfg["groups"], *cfg["kernel"]))
    b = rng.standard_normal(cfg["o"]) if cfg["bias"] else None
    opts = transpose_opts(cfg)

    def ref(x, w, b):
        return torch.nn.functional.conv_transpose2d(x, w, b, **opts)

    g = rng.standard_normal(tuple(ref(torch.as_tensor(x), torch.as_tensor(w), None).shape))
    y_ref, grads_ref = autograd(torch, ref, g, x, w, b)
    X, W, B, G = on(sweep_backend, *(None if a is None else a.astype(dtype) for a in (x, w, b, g)))
    with Unchanged(X, W, B, G):
        y = F.conv_transpose2d(X, W, B, **opts)
        grads = F.conv_transpose2d_backward(G, X, W, bias=cfg["bias"], **opts)
    names = ["y", "grad_x", "grad_weight", "grad_bias"][: 3 + cfg["bias"]]
    compare(names, [y, *grads], [y_ref, *grads_ref], X, dtype)
    if not cfg["bias"]:
        assert grads[2] is None


@fd_examples
@given(cfg=transpose_configs(max_size=4))
def test_conv_transpose2d_finite_differences(sweep_backend, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], *cfg["size"]))
    w = rng.standard_normal((cfg["c"], cfg["o"] // cfg["groups"], *cfg["kernel"]))
    b = rng.standard_normal(cfg["o"])
    opts = transpose_opts(cfg)
    gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, **opts), tuple(on(sweep_backend, x, w, b)),
              backward=lambda g, x, w, b: F.conv_transpose2d_backward(g, x, w, **opts),
              eps=FINITE_DIFF_STEP, rtol=FINITE_DIFF_RTOL, max_elements=48)


def test_conv_transpose2d_is_the_adjoint_of_conv2d(backend):
    """<conv2d(u, w), v> == <u, conv_transpose2d(v, w)> for the same stride/padding/dilation/groups."""
    rng = np.random.default_rng(5)
    opts = dict(stride=(2, 3), padding=(1, 0), dilation=(1, 2), groups=2)
    u, w = rng.standard_normal((2, 4, 9, 11)), rng.standard_normal((6, 2, 3, 2))
    U, W = on(backend, u, w)
    y = xpcnn.to_numpy(F.conv2d(U, W, **opts))
    v = rng.standard_normal(y.shape)
    (V,) = on(backend, v)
    back = xpcnn.to_numpy(F.conv_transpose2d(V, W, output_padding=(0, 0), **opts))
    back = np.pad(back, ((0, 0), (0, 0), (0, u.shape[2] - back.shape[2]), (0, u.shape[3] - back.shape[3])))
    assert abs(np.sum(y * v) - np.sum(u * back)) <= 1e-12 * np.sum(np.abs(y * v))


# ---------------------------------------------------------------- pools: ceil_mode and count_include_pad


@st.composite
def pool_configs(draw, max_size=10):
    kernel = draw(pairs(st.integers(1, 4), st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # PyTorch: at most half the kernel
    stride = draw(st.none() | pairs(st.integers(1, 3), st.integers(1, 3)))
    dilation = draw(pairs(st.integers(1, 2), st.integers(1, 2)))
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), max_size))
                 for k, d, p in zip(kernel, dilation, padding))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), size=size, kernel=kernel, stride=stride,
                padding=padding, dilation=dilation, ceil_mode=draw(st.booleans()),
                count_include_pad=draw(st.booleans()), ties=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@examples
@given(cfg=pool_configs())
def test_avg_pool2d_options_match_torch(torch, sweep_backend, dtype, cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = pool_input(rng, (cfg["n"], cfg["c"], *cfg["size"]), cfg["ties"])
    args = (cfg["kernel"], cfg["stride"], cfg["padding"])
    opts = dict(ceil_mode=cfg["ceil_mode"], count_include_pad=cfg["count_include_pad"])

    def ref(x):
        return torch.nn.functional.avg_pool2d(x, *args, **opts)

    g = rng.standard_normal(tuple(ref(torch.as_tensor(x)).shape))
    y_ref, (gx_ref,) = autograd(torch, ref, g, x)
    X, G = on(sweep_backend, x.astype(dtype), g.astype(dtype))
    with Unchanged(X, G):
        y = F.avg_pool2d(X, *args, **opts)
        gx = F.avg_pool2d_backward(G, X, *args, **opts)
    compare(["y", "grad_x"], [y, gx], [y_ref, gx_ref], X, dtype)


@pytest.mark.parametrize("method", ["taps", "argmax"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@examples
@given(cfg=pool_configs())
def test_max_pool2d_ceil_mode_matches_torch(torch, sweep_backend, dtype, method, cfg):
    """Including ties (first maximum wins). Windows of padding only are left to
    test_ops.test_max_pool2d_window_of_padding_only (PyTorch's gradient there is no reference)."""
    rng = np.random.default_rng(cfg["seed"])
    x = pool_input(rng, (cfg["n"], cfg["c"], *cfg["size"]), cfg["ties"])
    args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"])

    def ref(x):
        return torch.nn.functional.max_pool2d(x, *args, ceil_mode=cfg["ceil_mode"])

    y_ref = ref(torch.as_tensor(x))
    if not bool(torch.isfinite(y_ref).all()):
        return
    g = rng.standard_normal(tuple(y_ref.shape))
    y_ref, (gx_ref,) = autograd(torch, ref, g, x)
    X, G = on(sweep_backend, x.astype(dtype), g.astype(dtype))
    with Unchanged(X, G):
        y, taps = F.max_pool2d_forward(X, *args, ceil_mode=cfg["ceil_mode"], method=method)
        assert isinstance(taps, F.WindowArgmax) == (method == "argmax")
        gx = F.max_pool2d_backward(G, X, *args, y=y, taps=taps, ceil_mode=cfg["ceil_mode"])
        gx_recomputed = F.max_pool2d_backward(G, X, *args, ceil_mode=cfg["ceil_mode"], method=method)
    compare(["y", "grad_x", "grad_x (recomputed)"], [y, gx, gx_recomputed], [y_ref, gx_ref, gx_ref], X, dtype)


def test_ceil_mode_drops_a_window_that_would_start_in_the_right_padding(torch):
    """Size 5, kernel 2, stride 2, padding 1: ceil gives 4 windows, but the 4th would start at
    padded index 6 = size + padding, so PyTorch keeps 3 (as floor does here)."""
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5))
    for pool in (F.avg_pool2d, F.max_pool2d):
        y = pool(x, 2, 2, 1, ceil_mode=True)
        ref = getattr(torch.nn.functional, pool.__name__)(torch.as_tensor(x), 2, 2, 1, ceil_mode=True)
        assert y.shape == tuple(ref.shape) == (1, 1, 3, 3)
    assert F.max_pool2d(x, 2, 2, 0, ceil_mode=True).shape == (1, 1, 3, 3)  # the partial last window is kept
    assert F.max_pool2d(x, 2, 2, 0).shape == (1, 1, 2, 2)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_global_avg_pool2d_matches_torch(torch, backend, dtype):
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((3, 4, 5, 7)), rng.standard_normal((3, 4))
    y_ref, (gx_ref,) = autograd(torch, lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1), g, x)
    X, G = on(backend, x.astype(dtype), g.astype(dtype))
    with Unchanged(X, G):
        y, gx = F.global_avg_pool2d(X), F.global_avg_pool2d_backward(G, X)
    compare(["y", "grad_x"], [y, gx], [y_ref, gx_ref], X, dtype)


# ---------------------------------------------------------------- bad input


X = np.zeros((2, 4, 8, 8))


def w(*shape):
    return np.zeros(shape)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: F.conv2d(X, w(6, 2, 3, 3), groups=3), ArgumentError, r"^groups: expected a divisor of in_channels 4"),
        (lambda: F.conv2d(X, w(3, 2, 3, 3), groups=2), ArgumentError, r"^groups: .*out_channels 3, got 2"),
        (lambda: F.conv2d(X, w(4, 2, 3, 3), groups=0), ArgumentError, r"^groups: expected an int >= 1, got 0"),
        (lambda: F.conv2d(X, w(4, 1, 3, 3), groups=2), ShapeError, r"^x: input has 4 channels .* groups=2 expects 2"),
        (lambda: F.conv2d_backward(w(2, 4, 4, 4), X, w(4, 4, 3, 3), stride=2, padding="same"),
         ArgumentError, r"^padding: 'same' needs stride 1 \(as PyTorch\), got stride \(2, 2\)"),
        (lambda: F.conv2d(X, w(4, 4, 3, 3), padding="full"), ArgumentError,
         r"^padding: expected .*'same' or 'valid', got 'full'"),
        (lambda: F.conv2d(X, w(4, 4, 3, 3), padding=((1, -1), (0, 0))), ShapeError,
         r"^padding: expected integers >= 0"),
        (lambda: F.conv2d(X[:, :, :2], w(4, 4, 4, 3), padding=((0, 1), (0, 0))), ShapeError,
         r"^conv2d kernel_size: .*padded input 3 \(size 2 \+ padding 0 \+ 1\)"),
        (lambda: F.conv_transpose2d(X, w(4, 2, 3, 3), stride=2, output_padding=2), ArgumentError,
         r"^output_padding: expected each side smaller than its stride or its dilation"),
        (lambda: F.conv_transpose2d(X, w(4, 2, 3, 3), groups=3), ArgumentError,
         r"^groups: expected a divisor of in_channels 4"),
        (lambda: F.conv_transpose2d(X, w(3, 2, 3, 3)), ShapeError, r"^x: input has 4 channels but weight .* expects 3"),
        (lambda: F.conv_transpose2d(X, w(4, 2, 1, 1), padding=4), ShapeError, r"^padding: .*expected every size >= 1"),
        (lambda: F.conv_transpose2d(X, w(4, 2, 3, 3), padding="same"), ArgumentError,
         r"^padding: expected an int, a pair"),
        (lambda: F.conv_transpose2d(X, w(4, 2, 3, 3), w(3)), ShapeError, r"^bias: expected shape \(2,\)"),
        (lambda: F.avg_pool2d(X, 2, ceil_mode=1), ArgumentError, r"^ceil_mode: expected True or False, got 1"),
        (lambda: F.avg_pool2d(X, 2, count_include_pad="no"), ArgumentError,
         r"^count_include_pad: expected True or False"),
        (lambda: F.max_pool2d(X, 3, padding=2, ceil_mode=True), ShapeError,
         r"^padding: each side must be at most half the kernel size"),
        (lambda: F.global_avg_pool2d(X[0]), ShapeError, r"^x: expected a 4-d array"),
        (lambda: F.global_avg_pool2d_backward(w(2, 3), X), ShapeError, r"^grad_y: expected shape \(2, 4\)"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


SIDES = st.tuples(st.integers(-1, 2), st.integers(0, 2))
OPTIONS = st.one_of(st.integers(-2, 4), st.sampled_from([None, 1.5, True, "same", "valid", "2"]),
                    st.tuples(st.integers(-1, 3), st.integers(-1, 3)), st.tuples(SIDES, SIDES))
SHAPES = st.lists(st.integers(0, 5), min_size=4, max_size=4)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=SHAPES, w_shape=SHAPES, stride=OPTIONS, padding=OPTIONS, extra=OPTIONS, groups=OPTIONS,
       flag=st.sampled_from([True, False, 0, None]))
def test_new_options_raise_only_xpcnn_errors(shape, w_shape, stride, padding, extra, groups, flag):
    """Whatever comes in, the new options fail with an xpcnn error naming an argument, never
    with an IndexError / ZeroDivisionError / library error from deep inside."""
    x, w = np.ones(shape), np.ones(w_shape)
    calls = [
        lambda: F.conv2d(x, w, stride=stride, padding=padding, groups=groups),
        lambda: F.conv_transpose2d(x, w, stride=stride, padding=padding, output_padding=extra, groups=groups),
        lambda: F.conv_transpose2d_backward(x, x, w, stride=stride, padding=padding, output_padding=extra),
        lambda: F.avg_pool2d(x, extra, stride, padding, ceil_mode=flag, count_include_pad=flag),
        lambda: F.max_pool2d(x, extra, stride, padding, groups, ceil_mode=flag),
        lambda: F.max_pool2d_backward(x, x, extra, stride, padding, ceil_mode=flag),
        lambda: F.global_avg_pool2d_backward(x, x),
    ]
    for call in calls:
        try:
            call()
        except xpcnn.errors.XpcnnError as e:
            assert isinstance(e, (ValueError, TypeError)), repr(e)
            assert ": " in str(e)
