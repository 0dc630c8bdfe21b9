"""What ``import xpcnn`` does and does not do, each in a fresh interpreter: the default backend
with XPCNN_BACKEND unset, and CuPy never imported unless a CuPy backend is asked for (proved
with a fake ``cupy`` package that leaves a marker file when imported)."""

import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XPCNN_BACKEND"}
    env.update(extra)
    return env


def test_default_backend_is_numpy_with_the_variable_unset():
    assert "XPCNN_BACKEND" not in environment()
    done = run_python("import xpcnn; print(xpcnn.get_backend())", environment())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy"


@pytest.fixture
def fake_cupy(tmp_path):
    """A directory holding a ``cupy`` package that writes ``imported`` next to itself when
    imported, then fails as a broken CuPy would (so xpcnn reports it unavailable)."""
    package = tmp_path / "fake" / "cupy"
    package.mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        "raise ImportError('fake cupy: records that it was imported')\n"
    )
    return tmp_path / "fake", marker


def test_cupy_is_never_imported_by_numpy_work(fake_cupy):
    path, marker = fake_cupy
    env = environment(PYTHONPATH=os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = """
        import numpy as np
        import xpcnn
        from xpcnn import layers, optim
        model = xpcnn.Sequential([layers.Conv2D(2, 3), layers.ReLU(), layers.Flatten(), layers.Dense(3)])
        model.build((1, 6, 6), seed=0)
        x, y = np.random.default_rng(0).random((8, 1, 6, 6), dtype=np.float32), np.arange(8) % 3
        model.fit(x, y, epochs=1, batch_size=4, optimizer=optim.SGD(0.1), verbose=0)
        print(xpcnn.get_backend(), model.evaluate(x, y)["loss"] > 0)
    """
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["numpy", "True"]
    assert not marker.exists(), "xpcnn imported cupy during NumPy-only work"

    # The control: the fake is found and records its import as soon as CuPy is asked for.
    done = run_python("import xpcnn\nprint('imported xpcnn')\nxpcnn.get_backend()", {**env, "XPCNN_BACKEND": "cupy"})
    assert done.stdout.strip() == "imported xpcnn" and done.returncode != 0
    assert "BackendUnavailableError" in done.stderr and "fake cupy" in done.stderr
    assert marker.read_text() == "imported\n"
