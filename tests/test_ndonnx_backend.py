"""ndonnx as an inference backend (issue 22 item 6): ``model.to("ndonnx")`` and ``predict`` on a
symbolic batch build an ONNX graph from xpcnn's own layer code; onnxruntime runs it as NumPy does."""

import numpy as np
import pytest

import xpcnn
from xpcnn import zoo
from xpcnn.errors import DataError, ExportError

from .test_export import PARITY, randomize  # skips this module where onnx or onnxruntime is missing

ndx = pytest.importorskip("ndonnx")
ort = pytest.importorskip("onnxruntime")


def run_graph(x, y, batch: np.ndarray) -> np.ndarray:
    proto = ndx.build({"x": x}, {"y": y})
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": batch})[0]


@pytest.mark.parametrize("name", ["default", "notebook", "resnet8"])
def test_zoo_network_predicts_through_ndonnx_as_numpy(name):
    rng = np.random.default_rng(22)
    reference = randomize(zoo.get(name).build((1, 28, 28), seed=3), rng)
    model = zoo.get(name).build((1, 28, 28), seed=3)
    model.set_weights(reference.get_weights())
    model.set_buffers(reference.get_buffers())
    model.to("ndonnx")
    assert model.backend.lazy and xpcnn.backend.library_of(model.get_weights()[0]) == "ndonnx"
    x = ndx.argument(shape=("N", 1, 28, 28), dtype=ndx.float32)
    y = model.predict(x)
    assert y.shape == (None, 10)
    for n in (1, 33):
        batch = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        want, got = xpcnn.to_numpy(reference.predict(batch)), run_graph(x, y, batch)
        assert np.abs(got - want).max() <= PARITY * np.abs(want).max()


def test_load_onto_ndonnx_values_and_symbolic_arrays(tmp_path):
    model = zoo.get("notebook").build((1, 28, 28), seed=0)
    model.save(tmp_path / "m.safetensors")
    lazy = xpcnn.load(tmp_path / "m.safetensors", backend="ndonnx")
    assert np.array_equal(xpcnn.to_numpy(lazy.get_weights()[0]), xpcnn.to_numpy(model.get_weights()[0]))
    x = ndx.argument(shape=("N", 1, 28, 28), dtype=ndx.float32)
    logits = lazy(x)
    with pytest.raises(DataError, match="has no values"):
        xpcnn.to_numpy(logits)
    batch = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    want = xpcnn.to_numpy(model(batch))
    assert np.abs(run_graph(x, logits, batch) - want).max() <= PARITY * np.abs(want).max()
    assert xpcnn.available_backends()["ndonnx"] == "available"


def test_untraceable_layer_is_named():
    model = xpcnn.Sequential([xpcnn.layers.Conv2DTranspose(2, 3), xpcnn.layers.Flatten()])
    model.build((1, 4, 4), seed=0).to("ndonnx")
    with pytest.raises(ExportError, match=r"layer 0 \(Conv2DTranspose\)"):
        model.predict(ndx.argument(shape=("N", 1, 4, 4), dtype=ndx.float32))
