"""xpcnn.dask: predict / evaluate on dask arrays equal model.predict / model.evaluate, on the
default (threaded) scheduler and on a two-process dask.distributed cluster, with the model sent
once; lazily read .npy files; image-axis chunks rechunked; bad input refused."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import xpcnn  # noqa: E402
import xpcnn.dask  # noqa: E402
from xpcnn import layers  # noqa: E402
from xpcnn.errors import BackendUnavailableError, DTypeError, LabelError, NotBuiltError, ShapeError  # noqa: E402

# The bound for float32 results against model.predict / model.evaluate.
FLOAT32_DASK_TOL = 1e-6
N, SIZE, CLASSES = 103, 12, 10


def small_model(dtype: str = "float32"):
    return xpcnn.Sequential([
        layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(CLASSES),
    ]).build((1, SIZE, SIZE), seed=3, dtype=dtype)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((N, 1, SIZE, SIZE), dtype=np.float32), rng.integers(0, CLASSES, N)


@pytest.fixture(scope="module")
def model():
    return small_model()


def assert_same_metrics(got: dict, want: dict) -> None:
    assert set(got) == set(want) == {"loss", "accuracy"}
    assert got["accuracy"] == want["accuracy"]
    assert abs(got["loss"] - want["loss"]) <= FLOAT32_DASK_TOL * max(1.0, abs(want["loss"]))


def test_predict_default_scheduler_equals_model_predict(model, data):
    x, _ = data
    lazy = xpcnn.dask.predict(model, da.from_array(x, chunks=(25, 1, SIZE, SIZE)), batch_size=16)
    assert isinstance(lazy, da.Array)
    assert lazy.shape == (N, CLASSES) and lazy.dtype == np.float32
    assert lazy.chunks == ((25, 25, 25, 25, 3), (CLASSES,))
    got = lazy.compute()
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=FLOAT32_DASK_TOL)


def test_jax_chunks_on_threads_share_one_model_safely(model, data):
    """JAX traces each new batch shape into the cached model's layers; chunks of many sizes on
    eight threads must not see one another's placeholders."""
    pytest.importorskip("jax")
    import dask

    x, y = data
    chunks = (tuple(range(1, 14)) + (N - 91,), 1, SIZE, SIZE)  # 14 chunk sizes: 14 shapes traced at once
    with dask.config.set(scheduler="threads", num_workers=8):
        got = xpcnn.dask.predict(model, da.from_array(x, chunks=chunks), batch_size=64, backend="jax").compute()
        metrics = xpcnn.dask.evaluate(model, da.from_array(x, chunks=chunks), y, batch_size=64, backend="jax")
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=FLOAT32_DASK_TOL)
    assert_same_metrics(metrics, model.evaluate(x, y))


def test_predict_float64(data):
    x, _ = data
    model = small_model("float64")
    x64 = x.astype(np.float64)
    got = xpcnn.dask.predict(model, da.from_array(x64, chunks=(40, 1, SIZE, SIZE))).compute()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model.predict(x64), rtol=1e-12, atol=1e-15)


def test_buffers_travel_with_the_model(data):
    x, _ = data
    model = xpcnn.Sequential([
        layers.Conv2D(4, 3), layers.BatchNorm2D(), layers.ReLU(), layers.Flatten(), layers.Dense(CLASSES),
    ]).build((1, SIZE, SIZE), seed=4)
    rng = np.random.default_rng(1)
    model.set_buffers([rng.random(b.shape) + 0.5 for b in model.get_buffers()])  # not the initial 0 / 1
    got = xpcnn.dask.predict(model, da.from_array(x, chunks=(60, 1, SIZE, SIZE))).compute()
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=FLOAT32_DASK_TOL)


def test_evaluate_equals_model_evaluate(model, data):
    x, y = data
    dx = da.from_array(x, chunks=(30, 1, SIZE, SIZE))
    want = model.evaluate(x, y)
    assert_same_metrics(xpcnn.dask.evaluate(model, dx, y), want)  # NumPy labels
    assert_same_metrics(xpcnn.dask.evaluate(model, dx, da.from_array(y, chunks=17)), want)  # other chunking


def test_the_model_is_one_key_of_the_graph(model, data):
    x, y = data
    lazy = xpcnn.dask.predict(model, da.from_array(x, chunks=(10, 1, SIZE, SIZE)))
    graph = dict(lazy.__dask_graph__())
    model_keys = [k for k in graph if str(k).startswith("xpcnn-model-")]
    chunk_tasks = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("xpcnn-predict-")]
    assert len(model_keys) == 1 and len(chunk_tasks) == 11


def test_image_axis_chunks_are_rechunked(model, data):
    x, y = data
    dx = da.from_array(x, chunks=(50, 1, 5, 7))
    lazy = xpcnn.dask.predict(model, dx)
    assert lazy.chunks[0] == dx.chunks[0]
    np.testing.assert_allclose(lazy.compute(), model.predict(x), rtol=0, atol=FLOAT32_DASK_TOL)
    assert_same_metrics(xpcnn.dask.evaluate(model, dx, y), model.evaluate(x, y))


def test_from_npy_reads_lazily_and_ships_only_the_path(model, data, tmp_path):
    x, y = data
    path = tmp_path / "images.npy"
    np.save(path, x)
    dx = xpcnn.dask.from_npy(path, chunk=20)
    assert dx.shape == x.shape and dx.dtype == x.dtype and len(dx.chunks[0]) == 6
    # The graph names the file, it does not hold its data.
    assert len(pickle.dumps(dict(dx.__dask_graph__()))) < x.nbytes / 10
    np.testing.assert_array_equal(dx.compute(), x)
    np.testing.assert_allclose(xpcnn.dask.predict(model, dx).compute(), model.predict(x), rtol=0, atol=FLOAT32_DASK_TOL)
    assert_same_metrics(xpcnn.dask.evaluate(model, dx, y), model.evaluate(x, y))


def test_numpy_memmap_through_dask_from_array(model, data, tmp_path):
    x, _ = data
    path = tmp_path / "images.npy"
    np.save(path, x)
    dx = da.from_array(np.load(path, mmap_mode="r"), chunks=(20, 1, SIZE, SIZE))  # fine on the threaded scheduler
    np.testing.assert_allclose(xpcnn.dask.predict(model, dx).compute(), model.predict(x), rtol=0, atol=FLOAT32_DASK_TOL)


def test_from_npy_refuses_object_arrays(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DTypeError, match="numeric .npy"):
        xpcnn.dask.from_npy(path)


def test_local_cluster_two_processes(model, data, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    x, y = data
    path = tmp_path / "images.npy"
    np.save(path, x)
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        dx = xpcnn.dask.from_npy(path, chunk=10)
        got = xpcnn.dask.predict(model, dx).compute()
        np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=FLOAT32_DASK_TOL)
        assert_same_metrics(xpcnn.dask.evaluate(model, dx, y), model.evaluate(x, y))
        info = client.run(xpcnn.dask.model_cache_info)
    # 11 chunks per call, two calls: each worker process built the model at most once.
    assert len(info) == 2
    assert all(v["loads"] <= 1 for v in info.values()) and sum(v["loads"] for v in info.values()) >= 1


def test_bad_input(model, data):
    x, y = data
    dx = da.from_array(x, chunks=(50, 1, SIZE, SIZE))
    with pytest.raises(DTypeError, match="x: expected a dask.array"):
        xpcnn.dask.predict(model, x)
    with pytest.raises(ShapeError, match=r"x: expected shape \(N, 1, 12, 12\).*channel axis"):
        xpcnn.dask.predict(model, dx[:, 0])
    with pytest.raises(DTypeError, match="uint8"):
        xpcnn.dask.predict(model, (dx * 255).astype(np.uint8))
    with pytest.raises(LabelError, match=r"y: expected integer labels of shape \(103,\)"):
        xpcnn.dask.evaluate(model, dx, y[:-1])
    with pytest.raises(LabelError, match="integer class labels"):
        xpcnn.dask.evaluate(model, dx, y.astype(np.float32))
    with pytest.raises(LabelError, match=r"labels in \[0, 9\]"):
        xpcnn.dask.evaluate(model, dx, y + 5)
    with pytest.raises(NotBuiltError):
        xpcnn.dask.predict(xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]), dx)
    with pytest.raises(ValueError, match="batch_size"):
        xpcnn.dask.predict(model, dx, batch_size=0)


def test_missing_dask_names_the_install_command(model, data, monkeypatch):
    x, _ = data
    dx = da.from_array(x, chunks=(50, 1, SIZE, SIZE))
    for name in [m for m in sys.modules if m == "dask" or m.startswith("dask.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError, match=r"pip install -e '\.\[dask\]'"):
        xpcnn.dask.predict(model, dx)
