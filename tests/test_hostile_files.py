"""Loaders against hostile or malformed files: a clear xpcnn error, no unbounded memory or time
from a small file, nothing read that is not a regular file."""

import gzip
import json
import os

import numpy as np
import pytest

import xpcnn
from xpcnn import layers
from xpcnn.datasets import image_folder, load_data, mnist
from xpcnn.errors import DataError, ExportError, ModelFileError


def test_an_onnx_file_is_checked_against_its_architecture_before_anything_is_built(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from xpcnn.export import OnnxModel, from_onnx, to_onnx

    proto = to_onnx(xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2)), tmp_path / "m.onnx")
    meta = {p.key: p for p in proto.metadata_props}
    config = json.loads(meta["xpcnn_config"].value)
    config["layers"][1]["config"]["units"] = 25_000_000  # 400 MB of weights had the model been built first
    meta["xpcnn_config"].value = json.dumps(config)
    onnx.save(proto, tmp_path / "big.onnx")
    with pytest.raises(ExportError, match=r"initializer '1.weight': expected shape \(4, 25000000\)"):
        from_onnx(tmp_path / "big.onnx")
    meta["xpcnn_config"].value = "[" * 100_000 + "]" * 100_000  # too deep for JSON
    onnx.save(proto, tmp_path / "deep.onnx")
    with pytest.raises(ExportError, match="do not describe an xpcnn model"):
        from_onnx(tmp_path / "deep.onnx")
    for names, error, match in (("{", ModelFileError, "class_names is not valid JSON"),
                                ("5", ExportError, "class names as a list of strings")):
        meta["class_names"].value = names
        onnx.save(proto, tmp_path / "names.onnx")
        with pytest.raises(error, match=match):
            OnnxModel(tmp_path / "names.onnx")


def test_mnist_files_are_read_within_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_MAX_BYTES", 10_000)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(20_000)))  # a gzip bomb, small
    with pytest.raises(DataError, match="more than 10000 bytes"):
        mnist.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    np.save(tmp_path / "mnist.npz", np.zeros(3))  # a .npy under the .npz name
    os.replace(tmp_path / "mnist.npz.npy", tmp_path / "mnist.npz")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data("mnist", path=tmp_path)
    if hasattr(os, "mkfifo"):  # a FIFO would block the reader forever
        os.mkfifo(tmp_path / "fifo.gz")
        with pytest.raises(DataError, match="not a regular file"):
            mnist.read_idx(tmp_path / "fifo.gz")


@pytest.mark.filterwarnings("ignore:Image size")  # Pillow's own DecompressionBombWarning
def test_image_folders_refuse_fifos_and_images_beyond_the_pixel_limit(tmp_path, monkeypatch):
    image = pytest.importorskip("PIL.Image")
    (tmp_path / "a").mkdir()
    image.new("L", (20, 20)).save(tmp_path / "a" / "big.png")
    monkeypatch.setattr(image, "MAX_IMAGE_PIXELS", 300)  # a 20x20 image stands for one Pillow only warns about
    with pytest.raises(DataError, match=r"big.png: cannot read it as an image \(20x20 pixels, more than"):
        image_folder(tmp_path)
    monkeypatch.undo()
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "a" / "x.png")
        with pytest.raises(DataError, match="x.png: not a regular file"):
            image_folder(tmp_path)
        with pytest.warns(UserWarning, match="x.png: not a regular file"):
            assert len(image_folder(tmp_path, on_error="skip")) == 1


def test_a_refused_checkpoint_leaves_the_model_as_it_was(tmp_path):
    x, y = np.random.default_rng(0).random((8, 1, 2, 2)), np.arange(8) % 3
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2), dtype="float64")
    model.fit(x, y, epochs=1, verbose=0, checkpoint_dir=tmp_path / "ck", optimizer=xpcnn.optim.Adam())
    other = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2), seed=7, dtype="float64")
    before = [np.array(w, copy=True) for w in other.get_weights()]
    with pytest.raises(ModelFileError, match="holds Adam state, got a SGD"):
        other.fit(x, y, epochs=2, verbose=0, resume_from=tmp_path / "ck", optimizer=xpcnn.optim.SGD(0.1))
    ckpt = xpcnn.checkpoint.latest(tmp_path / "ck")
    ckpt.layer_states["9"] = {"counter": 1}  # no layer 9: refused after the optimizer's class was checked
    adam = xpcnn.optim.Adam()
    with pytest.raises(ModelFileError, match="checkpoint layers"):
        ckpt.restore(other, adam)
    assert adam.steps == 0 and not adam.state  # the caller's optimizer is left as it was too
    for got, want in zip(other.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_datasets_batch_refuses_indices_out_of_range_or_of_another_kind():
    ds = xpcnn.datasets.ArrayDataset(np.zeros((4, 1, 2, 2)), np.zeros(4, np.int64))
    for bad in ([], [-1], [4], [0.5], [[0]]):
        with pytest.raises(xpcnn.errors.ArgumentError, match=r"^indices: expected a non-empty list of ints in \[0, 4"):
            ds.batch(bad)
    assert ds.batch(np.array([3, 0]))[0].shape == (2, 1, 2, 2)
