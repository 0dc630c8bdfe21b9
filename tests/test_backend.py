"""The backend shim: selection, environment variable, transfers, mismatch errors."""

import importlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import xpcnn
from xpcnn import backend as B
from xpcnn.errors import ArgumentError, BackendMismatchError, BackendUnavailableError, XpcnnError


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=120)


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
    with pytest.raises(ValueError, match="valid names are numpy, cupy, torch, jax, array_api_strict, ndonnx, auto"):
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
        importlib.import_module("cupy")
        pytest.skip("CuPy installed")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError, match="not installed"):
        xpcnn.set_backend("cupy")
    assert issubclass(BackendUnavailableError, XpcnnError)


def test_auto_falls_back_to_numpy_with_one_warning(monkeypatch):
    try:
        B.CupyBackend.load(None)
        pytest.skip("CuPy usable here")
    except BackendUnavailableError:
        pass
    monkeypatch.setattr(B.registry.STATE, "loaded", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = B.load_backend("auto")
        again = B.load_backend("auto")
    assert b.name == "numpy" and again is b
    assert len(caught) == 1 and "CuPy is not usable" in str(caught[0].message)
    # The warning points at the caller, not at a line inside xpcnn.
    assert caught[0].filename == __file__


def test_auto_warning_from_the_environment_points_at_user_code():
    if run_python("import cupy").returncode == 0:
        pytest.skip("CuPy installed")
    out = run_python("import xpcnn\nxpcnn.get_backend()", XPCNN_BACKEND="auto", PYTHONWARNINGS="default")
    assert out.returncode == 0, out.stderr
    assert "<string>:2: UserWarning: XPCNN backend 'auto'" in out.stderr, out.stderr
    assert "backend.py" not in out.stderr


def test_bogus_environment_variable_is_named_in_the_error():
    out = run_python("import xpcnn\ntry:\n    xpcnn.get_backend()\nexcept xpcnn.XpcnnError as e:\n    print('ERR', e)",
                     XPCNN_BACKEND="bogus")
    assert out.returncode == 0, out.stderr
    assert "ERR XPCNN_BACKEND='bogus' (environment variable): backend: unknown name 'bogus'" in out.stdout


def test_loaded_backends_are_cached(monkeypatch):
    monkeypatch.setattr(B.registry.STATE, "loaded", {})
    calls = []
    real = B.registry.LOADERS["array_api_strict"]
    monkeypatch.setitem(B.registry.LOADERS, "array_api_strict", lambda device: calls.append(device) or real(device))
    first = B.load_backend("array_api_strict:device1")
    assert B.load_backend("array_api_strict:device1") is first
    xpcnn.to_device(np.ones(2), "array_api_strict:device1")
    xpcnn.to_device(np.ones(2), "strict:device1")
    assert calls == ["device1"]


def test_env_variable_picks_backend():
    out = run_python("import xpcnn; print(xpcnn.get_backend())", XPCNN_BACKEND="array_api_strict")
    assert out.stdout.strip() == "array_api_strict", out.stderr


def test_available_backends_reports_every_name():
    report = xpcnn.available_backends()
    assert set(report) == {"numpy", "cupy", "torch", "jax", "array_api_strict", "ndonnx"}
    assert report["numpy"] == "available"
    assert all(v == "available" or len(v) > 10 for v in report.values())


@pytest.mark.parametrize("target", ["numpy", "array_api_strict", "array_api_strict:device1", "torch", "jax", "jax:cpu"])
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
    # fit and evaluate move host data only, as predict: another library's arrays are refused
    x, y = torch.ones((4, 1, 2, 2)), torch.zeros(4, dtype=torch.int64)
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.evaluate(x, y),
                 lambda: model.fit(x.numpy(), y.numpy(), validation_data=(x, y), verbose=0)):
        with pytest.raises(BackendMismatchError, match=r"numpy array on cpu but (x|validation_data\[0\]) is a torch "
                                                       r"array on cpu.*to_device"):
            call()
    with pytest.raises(BackendMismatchError, match=r"but y is a torch array"):
        model.evaluate(x.numpy(), y)
    # the model's own device, however it is spelt (torch:cpu:0 makes tensors on 'cpu')
    on_torch = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2), backend="torch:cpu:0")
    assert on_torch.evaluate(xpcnn.to_device(x.numpy(), on_torch.backend), y)["loss"] > 0


def test_to_numpy_is_a_copy_that_cannot_write_into_the_array():
    for library in ("torch", "array_api_strict"):
        xp = pytest.importorskip(library)
        a = xp.ones(3)
        xpcnn.to_numpy(a)[0] = 5.0
        assert xpcnn.to_numpy(a).tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------- CuPy devices other than 0
# No GPU here: a fake ``cupy`` with two devices records which device was current when each
# array was created. CuPy creates arrays on the *current* device whatever ``device=`` says.


class _FakeCuda:
    def __init__(self, count):
        self.current, self.count, self.kernels = 0, count, []
        fake = self

        class Device:
            def __init__(self, id=None):
                self.id = fake.current if id is None else id
                self._previous = []

            def __enter__(self):
                self._previous.append(fake.current)
                fake.current = self.id
                return self

            def __exit__(self, *exc):
                fake.current = self._previous.pop()

            def __eq__(self, other):
                return isinstance(other, Device) and other.id == self.id

            def __hash__(self):
                return hash(self.id)

            def __repr__(self):
                return f"<CUDA Device {self.id}>"

        class runtime:
            @staticmethod
            def getDeviceCount():
                return fake.count

        self.Device, self.runtime = Device, runtime


def _fake_cupy(count=2):
    import types

    cuda = _FakeCuda(count)

    class ndarray:
        def __init__(self, host):
            self.host, self.device = np.array(host), cuda.Device(cuda.current)

        def __mul__(self, other):
            cuda.kernels.append(cuda.current)
            return ndarray(self.host * other)

        def sum(self):
            return ndarray(self.host.sum())

        def __float__(self):
            return float(self.host)

        def get(self):
            return self.host.copy()

    module = types.ModuleType("cupy")
    module.cuda, module.ndarray, module.float32 = cuda, ndarray, np.float32
    module.asarray = lambda a: a if isinstance(a, ndarray) else ndarray(a)
    module.array = lambda a, copy=True: ndarray(a.host if isinstance(a, ndarray) else a)
    module.arange = lambda n, dtype=None: ndarray(np.arange(n, dtype=dtype))
    return module


@pytest.fixture
def fake_cupy(monkeypatch):
    import types

    module = _fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", types.ModuleType("array_api_compat.cupy"))
    monkeypatch.setattr(B.registry.STATE, "loaded", {})
    return module


def test_cupy_device_1_probes_creates_and_moves_on_device_1(fake_cupy):
    cuda = fake_cupy.cuda
    b = B.load_backend("cupy:1")
    assert b.device.id == 1 and str(b) == "cupy:1"
    assert cuda.kernels == [1] and cuda.current == 0  # the probe kernel ran on device 1, then restored
    assert B.load_backend("cupy:1") is b and cuda.kernels == [1]  # cached: no second probe
    assert b.asarray(np.ones(3)).device.id == 1
    moved = xpcnn.to_device(np.arange(3.0), "cupy:1")
    assert moved.device.id == 1 and cuda.current == 0
    np.testing.assert_array_equal(xpcnn.to_numpy(moved), np.arange(3.0))
    on_0 = xpcnn.to_device(np.arange(3.0), "cupy:0")
    assert on_0.device.id == 0
    across = xpcnn.to_device(on_0, "cupy:1")  # same library, other device: an explicit copy there
    assert across.device.id == 1 and across is not on_0
    assert xpcnn.to_device(across, b) is across


def test_cupy_activate_makes_device_1_current_for_compute(fake_cupy):
    b = B.load_backend("cupy:1")
    with b.activate():
        assert fake_cupy.cuda.current == 1
        assert fake_cupy.asarray(np.ones(2)).device.id == 1  # what compat's creation functions do
    assert fake_cupy.cuda.current == 0
    with B.load_backend("numpy").activate(), B.load_backend("array_api_strict").activate():
        assert fake_cupy.cuda.current == 0


def test_model_parameters_are_created_on_cupy_device_1(fake_cupy):
    from xpcnn import layers

    model = xpcnn.Sequential([layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(3)])
    model.build((1, 5, 5), backend="cupy:1")
    assert [w.device.id for w in model.get_weights()] == [1, 1, 1, 1]
    assert fake_cupy.cuda.current == 0


def test_cupy_device_out_of_range(fake_cupy):
    with pytest.raises(BackendUnavailableError, match="device 2 requested but only 2 CUDA device"):
        B.load_backend("cupy:2")


# ---------------------------------------------------------------- jax


def test_jax_missing_is_unavailable_with_the_install_command():
    block = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'jax' or name.startswith('jax.'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, Block())\n"
        "import xpcnn\n"
        "print(xpcnn.available_backends()['jax'])\n"
        "try:\n    xpcnn.get_backend()\nexcept xpcnn.BackendUnavailableError as e:\n    print('ERR', e)\n"
    )
    out = run_python(block, XPCNN_BACKEND="jax")
    assert out.returncode == 0, out.stderr
    assert "ERR jax is not installed" in out.stdout and "pip install -e '.[jax]'" in out.stdout
    assert out.stdout.startswith("jax is not installed")


def test_jax_device_names():
    pytest.importorskip("jax")
    import jax

    cpu = jax.devices("cpu")[0]
    for spec in ("jax", "jax:cpu", "jax:cpu:0", "JAX:CPU"):
        assert B.load_backend(spec).device == cpu
    assert str(B.load_backend("jax")) == "jax:cpu:0"
    assert B.resolve_target(cpu) is B.load_backend("jax:cpu:0")
    with pytest.raises(BackendUnavailableError, match="jax: device cpu:5 requested"):
        B.load_backend("jax:cpu:5")
    with pytest.raises(ArgumentError, match="backend 'jax': expected a device such as"):
        B.load_backend("jax:cpu:x")
    if not any(d.platform == "gpu" for d in jax.devices()):
        for spec in ("jax:gpu", "jax:cuda"):
            with pytest.raises(BackendUnavailableError, match=r"jax cannot use device .*jax\[cuda12\]"):
                B.load_backend(spec)


def test_fewest_operations_is_scoped_and_chooses_by_device_otherwise():
    """Kernels with a CPU form and a GPU form ask fewest_operations_for: the device decides,
    unless a fewest_operations block says otherwise; blocks nest and undo themselves."""
    from xpcnn.backend import fewest_operations_for, on_accelerator

    x = np.zeros(3)
    assert not on_accelerator(x) and not fewest_operations_for(x)
    with xpcnn.fewest_operations():
        assert fewest_operations_for(x)
        with xpcnn.fewest_operations(None):  # back to the device's choice
            assert not fewest_operations_for(x)
        with xpcnn.fewest_operations(False):
            assert not fewest_operations_for(x)
        assert fewest_operations_for(x)
    assert not fewest_operations_for(x)
    with pytest.raises(xpcnn.XpcnnError, match="enabled"):
        with xpcnn.fewest_operations(1):
            pass
