"""Bad input at every public entry point gets an xpcnn error naming the argument (issue 6, item 1).

One test (or one parametrised family) per bad-input class. Each asserts the specific xpcnn error
class, that it is also the builtin a caller would catch (ValueError / TypeError / RuntimeError),
and, with ``match=``, that the message names the argument. The last test throws random garbage at
the functional ops and asserts only xpcnn errors come out (no IndexError, no NumPy traceback).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import functional as F
from xpcnn import layers, optim
from xpcnn.errors import (
    ArgumentError,
    ArgumentTypeError,
    BackendMismatchError,
    DataError,
    DTypeError,
    LabelError,
    NotBuiltError,
    ShapeError,
    XpcnnError,
)

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test extra
    torch = None
try:
    import array_api_strict as xps
except ImportError:  # pragma: no cover
    xps = None

LIBRARIES = ["numpy", "torch", "array_api_strict"]


@contextlib.contextmanager
def raises(error: type, builtin: type, match: str):
    """pytest.raises for an xpcnn error that must also be ``builtin`` and match ``match``."""
    with pytest.raises(error, match=match) as info:
        yield info
    assert isinstance(info.value, XpcnnError), type(info.value).__mro__
    assert isinstance(info.value, builtin), type(info.value).__mro__


def on(library: str, host) -> object:
    """``host`` (NumPy) as an array of ``library``; skips when the library is missing."""
    host = np.asarray(host)
    if library == "numpy":
        return host
    if library == "torch":
        if torch is None:
            pytest.skip("torch not installed")
        return torch.from_numpy(host.copy())
    if xps is None:
        pytest.skip("array_api_strict not installed")
    return xps.asarray(host)


def small_net():
    return xpcnn.Sequential(
        [layers.Conv2D(4, 3), layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10)]
    )


def built(dtype="float32", backend="numpy"):
    return small_net().build((1, 8, 8), seed=0, dtype=dtype, backend=backend)


def batch(n=2, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 8, 8)).astype(dtype), rng.integers(0, 10, n)


X = batch()[0]
W = np.random.default_rng(1).random((3, 1, 3, 3)).astype(np.float32)


def test_every_error_class_is_also_a_builtin():
    assert issubclass(ShapeError, ValueError) and issubclass(DTypeError, TypeError)
    assert issubclass(LabelError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(BackendMismatchError, ValueError) and issubclass(NotBuiltError, RuntimeError)
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, XpcnnError)


# --- wrong rank or shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.conv2d(X[0], W), r"^x: expected a 4-d array \(N, C, H, W\), got shape \(1, 8, 8\)"),
        (lambda: F.conv2d(X, W[0]), r"^weight: expected a 4-d array"),
        (lambda: F.conv2d(X, np.zeros((3, 2, 3, 3), np.float32)), r"^x: input has 1 channels but weight"),
        (lambda: F.conv2d(X, W, np.zeros(4, np.float32)), r"^bias: expected shape \(3,\)"),
        (lambda: F.conv2d(X, W, np.zeros((3, 1), np.float32)), r"^bias: expected a 1-d array"),
        (lambda: F.avg_pool2d(X[0], 2), r"^x: expected a 4-d array"),
        (lambda: F.max_pool2d(X[0, 0], 2), r"^x: expected a 4-d array"),
        (lambda: F.linear(np.zeros((2, 3)), np.zeros((4, 5))), r"^x: has 3 features but weight"),
        (lambda: F.linear(np.zeros((2, 3)), np.zeros((3, 5)), np.zeros(4)), r"^bias: expected shape \(5,\)"),
        (lambda: F.linear(np.zeros(3), np.zeros((3, 5))), r"^x: expected a 2-d array"),
        (lambda: F.cross_entropy(np.zeros(3), np.zeros(3, np.int64)), r"^logits: expected a 2-d array"),
        (lambda: F.softmax(np.zeros((2, 3)), axis=2), r"^axis: expected an int in \[-2, 2\)"),
        (lambda: F.softmax(np.zeros((2, 3)), axis=1.0), r"^axis: expected an int"),
        (lambda: built()(np.zeros((2, 1, 9, 9), np.float32)), r"^x: expected shape \(N, 1, 8, 8\), got \(2, 1, 9, 9\)"),
        (lambda: built()(np.zeros((1, 8, 8), np.float32)), r"^x: expected shape .*add the batch axis"),
        (lambda: built()(np.zeros((3, 8, 8), np.float32)), r"^x: expected shape .*add the channel axis: x\[:, None\]"),
        (lambda: layers.Conv2D(4, 3).output_shape((8, 8)), r"^Conv2D input_shape: expected a shape \(C, H, W\)"),
        (lambda: layers.MaxPool2D(2).output_shape((8,)), r"^MaxPool2D input_shape: expected a shape \(C, H, W\)"),
        (lambda: layers.Dense(3).output_shape((1, 8, 8)), r"^Dense input_shape: expected a flat input .*Flatten"),
        (lambda: xpcnn.Sequential([layers.Dense(2)]).build((1, 8, 8)),
         r"^layer 0, Dense: Dense input_shape: .*Flatten"),
    ],
    ids=lambda v: "" if callable(v) else None,
)
def test_wrong_rank_or_shape(call, match):
    with raises(ShapeError, ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.conv2d_backward(np.zeros((2, 3, 5, 5), np.float32), X, W),
         r"^grad_y: expected shape \(2, 3, 6, 6\)"),
        (lambda: F.avg_pool2d_backward(np.zeros((2, 1, 3, 3), np.float32), X, 2),
         r"^grad_y: expected shape \(2, 1, 4, 4\)"),
        (lambda: F.max_pool2d_backward(np.zeros((2, 1, 3, 3), np.float32), X, 2),
         r"^grad_y: expected shape \(2, 1, 4, 4\)"),
        (lambda: F.relu_backward(np.zeros(4), np.zeros(3)), r"^grad_y: expected shape \(3,\)"),
        (lambda: F.linear_backward(np.zeros((2, 4)), np.zeros((2, 3)), np.zeros((3, 5))),
         r"^grad_y: expected shape \(2, 5\)"),
        (lambda: F.softmax_backward(np.zeros((2, 3)), np.zeros((2, 4))), r"^grad_y: expected shape \(2, 4\)"),
        (lambda: F.log_softmax_backward(np.zeros((2, 3)), np.zeros((2, 4))), r"^grad_y: expected shape \(2, 4\)"),
    ],
)
def test_wrong_gradient_shape_in_backward(call, match):
    with raises(ShapeError, ValueError, match=match):
        call()


# --- wrong dtype, on every array library -----------------------------------------------------------

BAD_DTYPES = ["complex64", "bool", "int32", "int64", "uint8"]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_wrong_dtype_in_functional_ops(library, dtype):
    x = on(library, X.astype(dtype))
    w = on(library, W.astype(dtype))
    for call in (lambda: F.conv2d(x, w), lambda: F.avg_pool2d(x, 2), lambda: F.max_pool2d(x, 2), lambda: F.relu(x)):
        with raises(DTypeError, TypeError, match=r"^x: expected a real floating dtype \(float32 or float64\), got"):
            call()
    z = on(library, np.zeros((2, 3)).astype(dtype))
    with raises(DTypeError, TypeError, match=r"^z: expected a real floating dtype"):
        F.softmax(z)
    with raises(DTypeError, TypeError, match=r"^logits: expected a real floating dtype"):
        F.cross_entropy(z, on(library, np.zeros(2, np.int64)))
    with raises(DTypeError, TypeError, match=r"^x: expected a real floating dtype"):
        F.linear(z, on(library, np.zeros((3, 2)).astype(dtype)))


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", BAD_DTYPES)
def test_wrong_dtype_into_a_float32_model(library, dtype):
    """Integers, bools and complex numbers are refused by every entry point, never converted."""
    model = built("float32", backend=library)
    x = on(library, X.astype(dtype))
    for call in (lambda: model(x), lambda: model.predict(x), lambda: model.evaluate(x, on(library, np.array([1, 2]))),
                 lambda: model.train_step(x, on(library, np.array([1, 2])), optim.SGD(lr=0.1)),
                 lambda: model.fit(x, on(library, np.array([1, 2])), verbose=0)):
        with raises(DTypeError, TypeError, match=r"^x: expected (float images|a float32 or float64 array)"):
            call()


@pytest.mark.parametrize("library", LIBRARIES)
def test_one_dtype_rule_float64_into_a_float32_model_is_cast_by_every_entry_point(library):
    model = built("float32", backend=library)
    x64, y = on(library, X.astype(np.float64)), on(library, np.array([1, 2]))
    expected = xpcnn.to_numpy(model(on(library, X)))
    assert np.array_equal(xpcnn.to_numpy(model(x64)), expected)
    assert xpcnn.to_numpy(model.predict(x64)).dtype == np.float32
    assert model.evaluate(x64, y)["loss"] == model.evaluate(on(library, X), y)["loss"]
    assert np.isfinite(model.train_step(x64, y, optim.SGD(lr=0.1)))


def test_object_dtype_is_refused():
    with raises(DTypeError, TypeError, match=r"^x: expected a real floating dtype .*got object"):
        F.conv2d(X.astype(object), W)
    with raises(DTypeError, TypeError, match=r"^x: expected a float32 or float64 array, got dtype object"):
        built()(X.astype(object))


@pytest.mark.parametrize("library", LIBRARIES)
def test_float16_is_refused_not_silently_accepted(library):
    if library == "array_api_strict":
        pytest.skip("array_api_strict has no float16")
    with raises(DTypeError, TypeError,
                match=r"^x: expected a real floating dtype \(float32 or float64\), got .*float16"):
        F.relu(on(library, np.zeros(3, np.float16)))


@pytest.mark.parametrize("library", LIBRARIES)
def test_mixed_float_dtypes_are_never_promoted(library):
    x, w = on(library, X), on(library, W.astype(np.float64))
    with raises(DTypeError, TypeError, match=r"^weight: dtype .*float64 differs from x dtype .*float32"):
        F.conv2d(x, w)
    with raises(DTypeError, TypeError, match=r"^bias: dtype .*float64 differs from x"):
        F.conv2d(x, on(library, W), on(library, np.zeros(3)))
    g = on(library, np.zeros((2, 3, 6, 6)))
    with raises(DTypeError, TypeError, match=r"^grad_y: dtype .*float64 differs from x dtype .*float32"):
        F.conv2d_backward(g, x, on(library, W))
    with raises(DTypeError, TypeError, match=r"^grad_y: dtype .*float64 differs from x"):
        F.relu_backward(on(library, np.zeros(3)), on(library, np.zeros(3, np.float32)))


def test_build_dtype_must_be_float32_or_float64():
    for bad in ("int32", "float16", np.float32, None):
        with raises(DTypeError, TypeError, match=r"^dtype: expected 'float32' or 'float64'"):
            small_net().build((1, 8, 8), dtype=bad)


# --- NaN / Inf in model inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_model_input(library, bad):
    model = built(backend=library)
    host = X.copy()
    host[1, 0, 3, 4] = bad
    x, y = on(library, host), on(library, np.array([1, 2]))
    weights = [xpcnn.to_numpy(w).copy() for w in model.get_weights()]
    for call in (lambda: model(x), lambda: model.predict(x), lambda: model.train_step(x, y, optim.SGD(lr=0.1))):
        with raises(DataError, ValueError, match=r"^x: expected finite values, got 1 NaN/Inf among 128 values"):
            call()
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, xpcnn.to_numpy(after))  # refused before any update


# --- empty batches ---------------------------------------------------------------------------------


def test_empty_batch():
    model = built()
    empty = np.zeros((0, 1, 8, 8), np.float32)
    for call in (lambda: model(empty), lambda: model.predict(empty),
                 lambda: model.train_step(empty, np.zeros(0, np.int64), optim.SGD(lr=0.1))):
        with raises(DataError, ValueError, match=r"^x: the batch is empty \(N = 0\)"):
            call()
    with raises(DataError, ValueError, match=r"^logits: the batch is empty"):
        F.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64))
    with raises(ShapeError, ValueError, match=r"^logits: expected a non-zero size"):
        F.cross_entropy(np.zeros((2, 0)), np.zeros(2, np.int64))
    with raises(ShapeError, ValueError, match=r"^z: expected a non-empty axis -1, got shape \(2, 0\)"):
        F.log_softmax(np.zeros((2, 0)))


# --- labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([1, 10]), r"^labels: expected values in \[0, 9\], got values from 1 to 10"),
        (np.array([-1, 3]), r"^labels: expected values in \[0, 9\], got values from -1 to 3"),
        (np.array([1, 2, 3]),
         r"^labels: expected an integer array of shape \(2,\) to match the batch, got shape \(3,\)"),
        (np.array([[1], [2]]), r"^labels: expected an integer array of shape \(2,\) .*got shape \(2, 1\)"),
        (np.array([1.0, 2.0]), r"^labels: expected an integer dtype \(class indices\), got .*float64"),
        (np.array([True, False]), r"^labels: expected an integer dtype \(class indices\), got .*bool"),
    ],
    ids=["too-large", "negative", "wrong-length", "2-d", "float", "bool"],
)
def test_bad_labels(library, labels, match):
    model = built(backend=library)
    x, y = on(library, X), on(library, labels)
    with raises(LabelError, ValueError, match=match.replace("^labels", "^y")):  # train_step's argument is y
        model.train_step(x, y, optim.SGD(lr=0.1))
    with raises(LabelError, ValueError, match=match):
        F.cross_entropy(on(library, np.zeros((2, 10), np.float32)), y)


def test_labels_that_are_not_arrays():
    model = built()
    for bad in ([1, 2], None, 3):
        with raises(DTypeError, TypeError, match=r"^y: expected an array"):
            model.train_step(X, bad, optim.SGD(lr=0.1))
    with raises(LabelError, ValueError, match=r"^labels: expected an integer dtype"):
        F.one_hot(np.zeros(2), 3, np.float64)
    with raises(ShapeError, ValueError, match=r"^num_classes: expected an int >= 1"):
        F.one_hot(np.zeros(2, np.int64), 0, np.float64)
    with raises(ArgumentTypeError, TypeError, match=r"^num_classes: expected an int >= 1"):
        F.one_hot(np.zeros(2, np.int64), "3", np.float64)


# --- kernel or pool larger than the padded input ---------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.conv2d(X, np.zeros((3, 1, 9, 9), np.float32)),
         r"^conv2d kernel_size: kernel_size 9 .* larger than the padded input 8"),
        (lambda: F.conv2d(X, W, dilation=4),
         r"^conv2d kernel_size: kernel_size 3 \(dilation 4, extent 9\) .*padded input 8"),
        (lambda: F.conv2d(X[:, :, :2, :], W, padding=(0, 1)),
         r"^conv2d kernel_size: .*padded input 2 \(size 2 \+ 2\*padding 0\)"),
        (lambda: F.avg_pool2d(X, 9), r"^avg_pool2d kernel_size: kernel_size 9 .*padded input 8"),
        (lambda: F.max_pool2d(X, (2, 9)), r"^max_pool2d kernel_size: kernel_size 9 .*padded input 8"),
        (lambda: F.max_pool2d(X, 3, dilation=4), r"^max_pool2d kernel_size: .*extent 9"),
        (lambda: xpcnn.Sequential([layers.Conv2D(2, 9)]).build((1, 8, 8)),
         r"kernel_size: kernel_size 9 .*padded input 8"),
        (lambda: xpcnn.Sequential([layers.Conv2D(2, 5), layers.MaxPool2D(5)]).build((1, 8, 8)),
         r"MaxPool2D kernel_size: .*padded input 4"),
    ],
)
def test_window_larger_than_padded_input(call, match):
    with raises(ShapeError, ValueError, match=match):
        call()


# --- zero or negative sizes, strides, paddings, units, channels ------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: layers.Conv2D(0, 3), r"^out_channels: expected an int >= 1, got 0"),
        (lambda: layers.Conv2D(-4, 3), r"^out_channels: expected an int >= 1, got -4"),
        (lambda: layers.Conv2D(4, 0), r"^kernel_size: expected integers >= 1, got 0"),
        (lambda: layers.Conv2D(4, (3, -1)), r"^kernel_size: expected integers >= 1"),
        (lambda: layers.Conv2D(4, 3, stride=0), r"^stride: expected integers >= 1, got 0"),
        (lambda: layers.Conv2D(4, 3, stride=(1, -2)), r"^stride: expected integers >= 1"),
        (lambda: layers.Conv2D(4, 3, padding=-1), r"^padding: expected integers >= 0, got -1"),
        (lambda: layers.Conv2D(4, 3, dilation=0), r"^dilation: expected integers >= 1, got 0"),
        (lambda: layers.MaxPool2D(0), r"^kernel_size: expected integers >= 1, got 0"),
        (lambda: layers.AvgPool2D(2, stride=-1), r"^stride: expected integers >= 1, got -1"),
        (lambda: layers.AvgPool2D(2, padding=-1), r"^padding: expected integers >= 0"),
        (lambda: layers.MaxPool2D(2, padding=2), r"^padding: each side must be at most half the kernel size"),
        (lambda: layers.Dense(0), r"^units: expected an int >= 1, got 0"),
        (lambda: layers.Dense(-3), r"^units: expected an int >= 1, got -3"),
        (lambda: F.conv2d(X, W, stride=0), r"^stride: expected integers >= 1"),
        (lambda: F.conv2d(X, W, padding=-2), r"^padding: expected integers >= 0"),
        (lambda: F.avg_pool2d(X, 2, padding=-1), r"^padding: expected integers >= 0"),
        (lambda: F.max_pool2d(X, 2, padding=2), r"^padding: each side must be at most half the kernel size"),
        (lambda: F.conv2d(X, np.zeros((0, 1, 3, 3), np.float32)), r"^weight: expected a non-zero size on every axis"),
        (lambda: F.conv2d(X, np.zeros((3, 1, 0, 3), np.float32)), r"^weight: expected a non-zero size on every axis"),
        (lambda: F.conv2d(np.zeros((2, 0, 8, 8), np.float32), np.zeros((3, 0, 3, 3), np.float32)),
         r"^weight: expected a non-zero"),
        (lambda: F.linear(np.zeros((2, 0)), np.zeros((0, 4))), r"^weight: expected a non-zero size"),
        (lambda: small_net().build((1, 0, 8)), r"^input_shape: expected positive ints"),
        (lambda: small_net().build((-1, 8, 8)), r"^input_shape: expected positive ints"),
        (lambda: small_net().build(()), r"^input_shape: expected a shape"),
        (lambda: layers.Conv2D(4, 3).output_shape((0, 8, 8)), r"^Conv2D input_shape: expected positive ints"),
        (lambda: layers.Dense(4).output_shape((0,)), r"^Dense input_shape: expected positive ints"),
        (lambda: layers.Flatten().output_shape(()), r"^Flatten input_shape: expected a shape"),
        (lambda: xpcnn.Sequential([]), r"^layers: expected at least one layer"),
    ],
)
def test_zero_or_negative_sizes(call, match):
    with raises(ShapeError, ValueError, match=match):
        call()


# --- sizes that are not ints -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [2.0, 2.5, True, False, "2", None, (2, 2.0), (2, True), [2, 2, 2]])
def test_non_int_sizes(bad):
    """Not ints at all: ArgumentTypeError (a TypeError); three sizes for a pair: ShapeError."""
    error, builtin = (ShapeError, ValueError) if bad == [2, 2, 2] else (ArgumentTypeError, TypeError)
    with raises(error, builtin, match=r"^kernel_size: expected"):
        layers.Conv2D(4, bad)
    with raises(error, builtin, match=r"^kernel_size: expected"):
        layers.MaxPool2D(bad)
    with raises(error, builtin, match=r"^stride: expected"):
        layers.Conv2D(4, 3, stride=bad)
    with raises(error, builtin, match=r"^dilation: expected"):
        F.conv2d(X, W, dilation=bad)
    with raises(error, builtin, match=r"^kernel_size: expected"):
        F.avg_pool2d(X, bad)
    if bad is not None:  # stride=None means "the kernel size" for pools
        with raises(error, builtin, match=r"^stride: expected"):
            F.max_pool2d(X, 2, stride=bad)
    if not isinstance(bad, (tuple, list)):
        with raises(error, builtin, match=r"^units: expected an int >= 1"):
            layers.Dense(bad)
        with raises(error, builtin, match=r"^out_channels: expected an int >= 1"):
            layers.Conv2D(bad, 3)


def test_numpy_integers_are_ints():
    assert layers.Dense(np.int64(3)).units == 3 and type(layers.Dense(np.int64(3)).units) is int
    assert layers.Conv2D(np.int32(2), np.int64(3)).kernel_size == (3, 3)


@pytest.mark.parametrize("bad", [None, 3, "abc", (1, 8.0, 8), (1, True, 8)])
def test_build_input_shape_not_ints(bad):
    with raises(ShapeError, ValueError, match=r"^input_shape: expected"):
        small_net().build(bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_build_seed(bad):
    with raises(ArgumentError, ValueError, match=r"^seed: expected a non-negative int"):
        small_net().build((1, 8, 8), seed=bad)


# --- unknown backend names -------------------------------------------------------------------------
# backend.py raises plain ValueError here (DESIGN: "an unknown name raises ValueError listing the
# valid ones"); the message names the argument and every valid name.

VALID = "valid names are numpy, cupy, torch, jax, array_api_strict, ndonnx, auto"


def test_unknown_backend_names():
    for call in (lambda: xpcnn.set_backend("mxnet"), lambda: xpcnn.use_backend("tensorflow").__enter__(),
                 lambda: small_net().build((1, 8, 8), backend="mlx"), lambda: xpcnn.to_device(X, "paddle"),
                 lambda: built().to("tinygrad")):
        with pytest.raises(ArgumentError, match=rf"^backend: unknown name '\w+'; {VALID}"):
            call()
    assert xpcnn.get_backend() in ("numpy", "cupy", "torch", "array_api_strict")  # selection unchanged
    with pytest.raises(ArgumentError, match=r"^backend: expected a name"):
        xpcnn.set_backend(None)


def test_unknown_device_lists_valid_devices():
    with pytest.raises(ValueError,
                       match=r"^backend 'array_api_strict': unknown device 'nodev'; valid devices are CPU_DEVICE"):
        xpcnn.set_backend("array_api_strict:nodev")
    with pytest.raises(ValueError, match=r"^backend 'numpy': the only device is 'cpu'"):
        xpcnn.set_backend("numpy:gpu")


# --- arrays from two libraries or two devices in one call ------------------------------------------


def test_two_libraries_in_one_call():
    if torch is None:
        pytest.skip("torch not installed")
    t = torch.from_numpy(W.copy())
    with raises(BackendMismatchError, ValueError,
                match=r"^weight is a torch array on cpu but x is a numpy array on cpu.*xpcnn\.to_device"):
        F.conv2d(X, t)
    with raises(BackendMismatchError, ValueError, match=r"^bias is a torch array .* but x is a numpy.*to_device"):
        F.conv2d(X, W, torch.zeros(3))
    with raises(BackendMismatchError, ValueError, match=r"^grad_y is a torch array .* x is a numpy.*to_device"):
        F.avg_pool2d_backward(torch.zeros(2, 1, 4, 4), X, 2)
    with raises(BackendMismatchError, ValueError, match=r"^labels is a torch array .* logits is a numpy.*to_device"):
        F.cross_entropy(np.zeros((2, 3)), torch.tensor([0, 1]))
    with raises(BackendMismatchError, ValueError,
                match=r"^model_parameters is a numpy array .* x is a torch array.*to_device"):
        built()(torch.from_numpy(X.copy()))
    with raises(BackendMismatchError, ValueError, match=r"^y is a torch array .*to_device"):
        built().train_step(X, torch.tensor([0, 1]), optim.SGD(lr=0.1))


def test_two_devices_in_one_call():
    if xps is None:
        pytest.skip("array_api_strict not installed")
    d1 = xps.Device("device1")
    x = xps.asarray(X)
    w1 = xps.asarray(W, device=d1)
    with raises(BackendMismatchError, ValueError,
                match=r"^weight is a array_api_strict array on .*device1.* but x is .*CPU_DEVICE.*to_device"):
        F.conv2d(x, w1)
    model = built(backend="array_api_strict")
    with raises(BackendMismatchError, ValueError, match=r"device1.*to_device"):
        model(xps.asarray(X, device=d1))
    moved = xpcnn.to_device(xps.asarray(X, device=d1), model.backend)  # the advertised fix works
    assert model(moved).shape == (2, 10)


# --- things that are not arrays --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [X.tolist(), None, 1.0, 3, "x", (1.0, 2.0), np.float64(1.0)],
                         ids=["list", "None", "float", "int", "str", "tuple", "np.float64"])
def test_non_array_inputs(bad):
    for call, name in [
        (lambda: F.conv2d(bad, W), "x"),
        (lambda: F.conv2d(X, bad), "weight"),
        (lambda: F.conv2d_backward(bad, X, W), "grad_y"),
        (lambda: F.avg_pool2d(bad, 2), "x"),
        (lambda: F.max_pool2d_backward(bad, X, 2), "grad_y"),
        (lambda: F.avg_pool2d_backward(bad, X, 2), "grad_y"),
        (lambda: F.relu(bad), "x"),
        (lambda: F.relu_backward(bad, X), "grad_y"),
        (lambda: F.softmax(bad), "z"),
        (lambda: F.linear(bad, np.zeros((3, 2))), "x"),
        (lambda: F.linear_backward(bad, np.zeros((2, 3)), np.zeros((3, 5))), "grad_y"),
        (lambda: F.cross_entropy(bad, np.zeros(2, np.int64)), "logits"),
        (lambda: layers.Flatten()(bad), "x"),
        (lambda: built()(bad), "x"),
        (lambda: built().predict(bad), "x"),
        (lambda: built().train_step(bad, np.array([1, 2]), optim.SGD(lr=0.1)), "x"),
    ] + ([] if bad is None else [
        (lambda: F.conv2d(X, W, bad), "bias"),
        (lambda: F.linear(np.zeros((2, 3)), np.zeros((3, 5)), bad), "bias"),
    ]):
        with raises(DTypeError, TypeError,
                    match=rf"^{name}: expected an array \(numpy, cupy, torch, jax or array_api_strict\), got"):
            call()


# --- used before build; backward before forward ----------------------------------------------------


def test_layers_and_model_used_before_build():
    for layer in (layers.Conv2D(4, 3), layers.Dense(4)):
        with raises(NotBuiltError, RuntimeError, match=rf"^{type(layer).__name__}: not built"):
            layer(X)
    model = small_net()
    for call in (lambda: model(X), lambda: model.predict(X), lambda: model.summary(),
                 lambda: model.train_step(X, np.array([1, 2]), optim.SGD(lr=0.1)),
                 lambda: model.set_weights([]), lambda: model.to("numpy")):
        with raises(NotBuiltError, RuntimeError, match=r"^model: not built; call model.build"):
            call()


@pytest.mark.parametrize("layer", [layers.Conv2D(4, 3), layers.MaxPool2D(2), layers.AvgPool2D(2), layers.ReLU(),
                                   layers.Flatten(), layers.Dense(4)], ids=lambda lay: type(lay).__name__)
def test_backward_before_forward(layer):
    with raises(NotBuiltError, RuntimeError, match=rf"^{type(layer).__name__}.backward: call forward first"):
        layer.backward(np.zeros((2, 4), np.float32))


def test_model_backward_before_forward_and_step_before_backward():
    model = built()
    with raises(NotBuiltError, RuntimeError, match=r"backward: call forward first"):
        model.backward(np.zeros((2, 10), np.float32))
    opt = optim.SGD(lr=0.1)
    before = [w.copy() for w in model.get_weights()]
    with raises(NotBuiltError, RuntimeError,
                match=r"^optimizer: parameters 0.weight, 0.bias, 4.weight, 4.bias have no gradient"):
        opt.step(model)
    assert opt.steps == 0 and all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


# --- optimizer hyper-parameters and the optimizer argument -----------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: optim.SGD(lr=-0.1), r"^lr: expected a value >= 0.0, got -0.1"),
        (lambda: optim.SGD(lr=float("nan")), r"^lr: expected a finite real number, got nan"),
        (lambda: optim.SGD(lr=float("inf")), r"^lr: expected a finite real number, got inf"),
        (lambda: optim.SGD(lr="0.1"), r"^lr: expected a finite real number, got '0.1' \(str\)"),
        (lambda: optim.SGD(lr=None), r"^lr: expected a finite real number, got None"),
        (lambda: optim.SGD(lr=True), r"^lr: expected a finite real number, got True"),
        (lambda: optim.SGD(lr=np.array([0.1])), r"^lr: expected a finite real number"),
        (lambda: optim.SGD(lr=0.1, momentum=-0.9), r"^momentum: expected a value >= 0.0"),
        (lambda: optim.SGD(lr=0.1, momentum=float("nan")), r"^momentum: expected a finite real number"),
        (lambda: optim.SGD(lr=0.1, weight_decay=-1e-4), r"^weight_decay: expected a value >= 0.0"),
        (lambda: optim.SGD(lr=0.1, nesterov=True), r"^nesterov: needs momentum > 0"),
        (lambda: optim.Adam(lr=-1e-3), r"^lr: expected a value >= 0.0"),
        (lambda: optim.Adam(betas=(1.0, 0.999)), r"^betas\[0\]: expected a value >= 0.0 and < 1.0, got 1.0"),
        (lambda: optim.Adam(betas=(0.9, -0.1)), r"^betas\[1\]: expected a value >= 0.0 and < 1.0"),
        (lambda: optim.Adam(betas=(0.9,)), r"^betas: expected a pair \(beta1, beta2\)"),
        (lambda: optim.Adam(betas=(0.9, 0.99, 0.9)), r"^betas: expected a pair"),
        (lambda: optim.Adam(betas=0.9), r"^betas: expected a pair"),
        (lambda: optim.Adam(betas=None), r"^betas: expected a pair"),
        (lambda: optim.Adam(betas=("a", "b")), r"^betas\[0\]: expected a finite real number"),
        (lambda: optim.Adam(eps=-1e-8), r"^eps: expected a value >= 0.0"),
        (lambda: optim.Adam(eps=float("nan")), r"^eps: expected a finite real number"),
    ],
)
def test_bad_optimizer_hyper_parameters(make, match):
    with raises(ArgumentError, ValueError, match=match):
        make()


def test_numpy_scalar_hyper_parameters_are_python_floats():
    opt = optim.SGD(lr=np.float32(0.5), momentum=np.float64(0.9))
    assert type(opt.lr) is float and type(opt.momentum) is float


@pytest.mark.parametrize("bad", [None, "sgd", optim.SGD, 0.1], ids=["None", "str", "class", "float"])
def test_train_step_needs_an_optimizer_instance(bad):
    model = built()
    before = [w.copy() for w in model.get_weights()]
    with raises(ArgumentTypeError, TypeError, match=r"^optimizer: expected an optimizer instance"):
        model.train_step(X, np.array([1, 2]), bad)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    with raises(ArgumentError, ValueError, match=r"^model: expected an xpcnn Sequential"):
        optim.SGD(lr=0.1).step(None)


# --- set_weights -----------------------------------------------------------------------------------


def test_set_weights_wrong_count_shape_or_kind():
    model = built()
    good = model.get_weights()
    with raises(ShapeError, ValueError,
                match=r"^weights: expected 4 arrays \(0.weight, 0.bias, 4.weight, 4.bias\), got 3"):
        model.set_weights(good[:3])
    with raises(ShapeError, ValueError, match=r"^weights: expected 4 arrays .*got 5"):
        model.set_weights(good + [good[0]])
    with raises(ShapeError, ValueError, match=r"^weights\[0.weight\]: expected shape \(4, 1, 3, 3\), got \(4, 3, 3\)"):
        model.set_weights([good[0][:, 0]] + good[1:])
    with raises(ShapeError, ValueError, match=r"^weights\[4.bias\]: expected shape \(10,\), got \(\)"):
        model.set_weights(good[:3] + [np.float32(0.0)])
    with raises(ShapeError, ValueError, match=r"^weights\[0.bias\]: expected a rectangular nested list"):
        model.set_weights([good[0], [[1.0], [1.0, 2.0]]] + good[2:])
    for bad in (None, "abcd", 3, {"0.weight": good[0]}):
        with raises(XpcnnError, TypeError, match=r"^weights: expected a list of 4 arrays"):
            model.set_weights(bad)
    with raises(DTypeError, TypeError, match=r"^weights\[0.weight\]: expected an array"):
        model.set_weights([None] + good[1:])
    for dtype in ("complex64", "bool", "object"):
        with raises(DTypeError, TypeError, match=rf"^weights\[0.weight\]: expected real numbers, got dtype {dtype}"):
            model.set_weights([good[0].astype(dtype)] + good[1:])
    for after, before in zip(model.get_weights(), good):  # nothing was half-applied
        assert after is before


# --- Sequential construction -----------------------------------------------------------------------


def test_sequential_needs_a_list_of_layers():
    for bad in (None, layers.Dense(3), 3):
        with raises(ArgumentTypeError, TypeError, match=r"^layers: expected a list of xpcnn layers"):
            xpcnn.Sequential(bad)
    with raises(ArgumentTypeError, TypeError, match=r"^layers\[1\]: expected an xpcnn layer .*got str"):
        xpcnn.Sequential([layers.Flatten(), "Dense"])


# --- no internal error, whatever comes in ----------------------------------------------------------

SIZES = st.one_of(st.integers(-2, 5), st.sampled_from([None, 1.5, True, "2"]),
                  st.tuples(st.integers(-1, 4), st.integers(-1, 4)))
DTYPES = st.sampled_from(["float32", "float64", "int64", "bool", "complex64", "float16"])


@st.composite
def arrays(draw, max_rank=5):
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=max_rank)))
    return np.zeros(shape, draw(DTYPES))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=arrays(), w=arrays(), g=arrays(), kernel=SIZES, stride=SIZES, padding=SIZES, dilation=SIZES)
def test_functional_ops_raise_only_xpcnn_errors(x, w, g, kernel, stride, padding, dilation):
    calls = [
        lambda: F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation),
        lambda: F.conv2d_backward(g, x, w, stride=stride, padding=padding, dilation=dilation),
        lambda: F.avg_pool2d(x, kernel, stride, padding),
        lambda: F.avg_pool2d_backward(g, x, kernel, stride, padding),
        lambda: F.max_pool2d(x, kernel, stride, padding, dilation),
        lambda: F.max_pool2d_backward(g, x, kernel, stride, padding, dilation),
        lambda: F.linear(x, w),
        lambda: F.linear_backward(g, x, w),
        lambda: F.relu_backward(g, x),
        lambda: F.log_softmax(x, axis=kernel),
        lambda: F.softmax_backward(g, x),
        lambda: F.cross_entropy(x, w),
    ]
    for call in calls:
        try:
            call()
        except XpcnnError as e:
            assert isinstance(e, (ValueError, TypeError)), repr(e)
            assert ": " in str(e)  # "<argument>: <expected>, got <what came>"
