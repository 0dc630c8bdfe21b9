"""The backend shim: selection, environment variable, transfers, mismatch errors."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.errors import BackendMismatchError, BackendUnavailableError, XpcnnError


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)


def test_default_backend_is_numpy():
    with xpcnn.use_backend("numpy"):
        assert xpcnn.get_backend() == "numpy"


def test_use_backend_restores_previous_selection():
    xpcnn.set_backend("numpy")
    with xpcnn.use_backend("array_api_strict") as b:
        assert xpcnn.get_backend() == "array_api_strict"
        assert b.name == "array_api_strict"
    assert xpcnn.get_backend() == "numpy"


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are numpy, cupy, torch, array_api_strict, auto"):
        xpcnn.set_backend("tensorflow")


def test_import_never_imports_cupy_and_env_cupy_fails_on_first_use():
    cupy_installed = subprocess.run([sys.executable, "-c", "import cupy"], capture_output=True).returncode == 0
    if cupy_installed:
        pytest.skip("CuPy is installed here; this checks the CPU-only path")
    code = (
        "import sys, xpcnn\n"
        "assert 'cupy' not in sys.modules\n"
        "try:\n    xpcnn.get_backend()\nexcept xpcnn.BackendUnavailableError as e:\n    print('ERR', e)\n"
    )
    out = run_python(code, XPCNN_BACKEND="cupy")
    assert out.returncode == 0, out.stderr
    assert "ERR cupy is not installed" in out.stdout and "xpcnn[cuda12]" in out.stdout


def test_set_backend_cupy_without_gpu_raises_with_reason():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy installed")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError, match="not installed"):
        xpcnn.set_backend("cupy")
    assert issubclass(BackendUnavailableError, XpcnnError)


def test_auto_falls_back_to_numpy_with_one_warning():
    try:
        B._load_cupy(None)
        pytest.skip("CuPy usable here")
    except BackendUnavailableError:
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = B.load_backend("auto")
    assert b.name == "numpy"
    assert len(caught) == 1 and "CuPy is not usable" in str(caught[0].message)


def test_env_variable_picks_backend():
    out = run_python("import xpcnn; print(xpcnn.get_backend())", XPCNN_BACKEND="array_api_strict")
    assert out.stdout.strip() == "array_api_strict", out.stderr


def test_available_backends_reports_every_name():
    report = xpcnn.available_backends()
    assert set(report) == {"numpy", "cupy", "torch", "array_api_strict"}
    assert report["numpy"] == "available"
    assert all(v == "available" or len(v) > 10 for v in report.values())


@pytest.mark.parametrize("target", ["numpy", "array_api_strict", "array_api_strict:device1", "torch"])
def test_to_device_round_trip_keeps_values_and_dtype(target):
    pytest.importorskip(target.split(":")[0])
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    moved = xpcnn.to_device(x, target)
    assert B.library_of(moved) == target.split(":")[0]
    if target.endswith("device1"):
        assert "device1" in str(B.device_of(moved))
    back = xpcnn.to_numpy(moved)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, x)


def test_to_device_with_a_device_object():
    xps = pytest.importorskip("array_api_strict")
    x = xps.asarray([1.0, 2.0])
    moved = xpcnn.to_device(x, xps.Device("device1"))
    assert moved.device == xps.Device("device1")
    torch = pytest.importorskip("torch")
    t = xpcnn.to_device(np.arange(3.0), torch.device("cpu"))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64


def test_namespace_of_rejects_two_libraries_and_names_both():
    torch = pytest.importorskip("torch")
    with pytest.raises(BackendMismatchError, match=r"numpy array on cpu and torch array on cpu.*xpcnn.to_device"):
        xpcnn.namespace_of(np.ones(2), torch.ones(2))


def test_namespace_of_rejects_two_devices():
    xps = pytest.importorskip("array_api_strict")
    a = xps.asarray([1.0], device=xps.Device("device1"))
    b = xps.asarray([1.0])
    with pytest.raises(BackendMismatchError, match="device1"):
        xpcnn.namespace_of(a, b)


def test_model_call_with_other_backend_input_points_to_to_device():
    torch = pytest.importorskip("torch")
    from xpcnn import layers

    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2), backend="numpy")
    with pytest.raises(BackendMismatchError, match="to_device"):
        model(torch.ones((1, 1, 2, 2)))
