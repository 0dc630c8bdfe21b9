"""Image folders (modes, sizes, split, bad data), the dataset protocol (ArrayDataset, NpyDataset,
Prefetcher), fit / evaluate / predict on datasets (bit-identical to arrays, exact resume, class
names in the model file), the CLI on a folder and docs/data.md's examples."""

import os
import re

import numpy as np
import pytest

import xpcnn
from xpcnn import cli, layers
from xpcnn.datasets import ArrayDataset, NpyDataset, Prefetcher, image_folder
from xpcnn.errors import DataError, DTypeError, LabelError

from .docs_blocks import python_blocks, run_blocks

Image = pytest.importorskip("PIL.Image")


def uniform(mode, value, size=(5, 4)):
    return Image.new(mode, size, value)


def palette(transparent: bool):
    img = uniform("P", 3)
    img.putpalette([0, 0, 0] * 3 + [10, 120, 240] + [0, 0, 0] * 252)
    if transparent:
        img.info["transparency"] = 3
    return img


# file name: (image, expected RGB after conversion, tolerance: lossy formats)
MODES = {
    "l.png": (uniform("L", 77), (77, 77, 77), 0),
    "la.png": (uniform("LA", (200, 64)), (50, 50, 50), 1),  # 200 * 64 / 255 on black
    "one.bmp": (uniform("1", 1), (255, 255, 255), 0),
    "p.gif": (palette(False), (10, 120, 240), 0),
    "p_transparent.png": (palette(True), (0, 0, 0), 0),
    "rgba.webp": (uniform("RGBA", (200, 100, 50, 128)), (100, 50, 25), 1),
    "cmyk.tiff": (uniform("CMYK", (0, 255, 255, 0)), (255, 0, 0), 0),
    "cmyk.jpg": (uniform("CMYK", (0, 255, 255, 0)), (255, 0, 0), 3),
    "i16.png": (uniform("I;16", 25700), (100, 100, 100), 0),  # 16-bit / 257
    "rgb.jpeg": (uniform("RGB", (10, 200, 30)), (10, 200, 30), 3),
}


def save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"lossless": True} if path.suffix == ".webp" else {}
    if path.suffix == ".png" and "transparency" in img.info:
        extra["transparency"] = img.info["transparency"]
    img.save(path, **extra)


def make_folder(root, counts=(6, 4, 5), size=(6, 5)):
    """Classes c0, c1, ... with counts[i] images of size (H, W) whose first pixel encodes (class, index)."""
    for c, count in enumerate(counts):
        for i in range(count):
            pixels = np.full((*size, 3), 40 * c, np.uint8)
            pixels[0, 0] = (c, i, 7)
            save(Image.fromarray(pixels), root / f"c{c}" / f"{i:02d}.png")
    return root


def test_every_mode_is_converted_explicitly(tmp_path):
    for name, (img, _, _) in MODES.items():
        save(img, tmp_path / "mixed" / name)
    save(uniform("RGB", 9), tmp_path / "other" / "x.png")
    ds = image_folder(tmp_path)
    assert ds.class_names == ["mixed", "other"] and ds.sample_shape == (3, 4, 5) and len(ds) == len(MODES) + 1
    x, y = ds.batch(np.arange(len(ds)))
    assert x.dtype == np.float32 and y.tolist() == [0] * len(MODES) + [1]
    for path, pixels in zip(ds.files, x):
        if path.parent.name == "mixed":
            _, expected, tolerance = MODES[path.name]
            np.testing.assert_allclose(pixels[:, 1, 2] * 255, expected, atol=tolerance + 1e-3, err_msg=path.name)
    gray, _ = image_folder(tmp_path, color="gray").batch(np.arange(len(ds)))
    assert gray.shape == (len(ds), 1, 4, 5)
    r, g, b = x[:, :, 0, 0].T * 255  # Pillow's ITU-R 601-2 luma
    np.testing.assert_allclose(gray[:, 0, 0, 0] * 255, (r * 299 + g * 587 + b * 114) / 1000, atol=1)


def test_sizes_must_agree_or_be_resized_bilinearly(tmp_path):
    make_folder(tmp_path / "a", counts=(2, 1))
    save(uniform("RGB", (1, 2, 3), size=(7, 3)), tmp_path / "a" / "c1" / "odd.png")
    with pytest.raises(DataError, match=r"c0/00.png is 6x5 and .*c1/odd.png is 3x7 \(HxW\); pass image_size"):
        image_folder(tmp_path / "a")
    ds = image_folder(tmp_path / "a", image_size=(3, 4), color="gray")
    x, _ = ds.batch([0, 3])
    with Image.open(ds.files[3]) as img:
        expected = np.asarray(img.convert("L").resize((4, 3), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(np.rint(x[1, 0] * 255), expected)
    assert x.shape == (2, 1, 3, 4) == (2, *ds.sample_shape)


def test_the_split_is_stratified_seeded_and_never_overlaps(tmp_path):
    make_folder(tmp_path, counts=(10, 7, 5))
    train = image_folder(tmp_path, validation_split=0.3, subset="training", seed=4)
    val = image_folder(tmp_path, validation_split=0.3, subset="validation", seed=4)
    assert np.bincount(val.labels).tolist() == [3, 2, 2] and np.bincount(train.labels).tolist() == [7, 5, 3]
    assert not set(train.files) & set(val.files) and len(set(train.files) | set(val.files)) == 22
    assert image_folder(tmp_path, validation_split=0.3, subset="validation", seed=4).files == val.files
    assert image_folder(tmp_path, validation_split=0.3, subset="validation", seed=5).files != val.files
    with pytest.raises(xpcnn.errors.ArgumentError, match="subset"):
        image_folder(tmp_path, validation_split=0.3)


def test_a_split_that_leaves_a_subset_empty_is_an_error_naming_the_fraction(tmp_path, capsys):
    make_folder(tmp_path / "two", counts=(2, 2))  # 0.2 of 2 rounds to 0 in every class
    with pytest.raises(DataError, match="validation_split: 0.2 of 4 images in 2 classes leaves the validation subset"):
        image_folder(tmp_path / "two", validation_split=0.2, subset="validation")
    assert len(image_folder(tmp_path / "two", validation_split=0.2, subset="training")) == 4
    assert cli.main(["train", "--data", str(tmp_path / "two"), "--validation-split", "0.2", "--epochs", "1"]) == 1
    assert "error: --validation-split: 0.2 of 4 images" in capsys.readouterr().err


def test_bad_data_is_named_or_skipped_and_reported_once(tmp_path):
    bad = {"corrupt.png": lambda p: p.write_bytes(b"not a png at all"), "notes.txt": lambda p: p.write_text("hi"),
           "deeper": lambda p: p.mkdir()}
    for name, make in bad.items():
        make(make_folder(tmp_path / name, counts=(2,)) / "c0" / name)
        with pytest.raises(DataError, match=f"c0/{re.escape(name)}: "):
            image_folder(tmp_path / name)
    root = make_folder(tmp_path / "f", counts=(3, 2))
    for name, make in bad.items():
        make(root / "c1" / name)
    with pytest.warns(UserWarning, match="skipped 3 entries") as caught:
        ds = image_folder(root, on_error="skip")
    assert len(caught) == 1 and len(ds) == 5 and len(ds.skipped) == 3
    data = (root / "c0" / "00.png").read_bytes()
    (root / "c0" / "00.png").write_bytes(data[:len(data) - 30])  # truncated: the header reads, the pixels do not
    with pytest.warns(UserWarning, match="skipped 3 entries"):
        ds = image_folder(root, on_error="skip")
    with pytest.raises(DataError, match="00.png: cannot decode"):
        ds.batch([0])
    (tmp_path / "empty" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="'only' holds no readable image"):
        image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="no class subfolders"):
        image_folder(tmp_path / "empty" / "only")
    if os.geteuid() != 0:  # root reads anything
        (root / "c1" / "00.png").chmod(0)
        with pytest.raises(DataError, match="c1/00.png: cannot read"):
            image_folder(root)


def test_array_and_npy_datasets_and_the_prefetcher(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 1, 3, 3), dtype=np.uint8)
    y = np.arange(10) % 3
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    npy = NpyDataset(tmp_path / "x.npy", tmp_path / "y.npy", class_names=["a", "b", "c"])
    assert isinstance(npy.x, np.memmap) and len(npy) == 10 and npy.sample_shape == (1, 3, 3)
    xb, yb = npy.batch([4, 1])
    np.testing.assert_array_equal(xb, x[[4, 1]] / np.float32(255))
    assert xb.dtype == np.float32 and yb.tolist() == [1, 1]
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="objects.npy"):
        NpyDataset(tmp_path / "objects.npy")
    with Prefetcher(ArrayDataset(x.astype(np.float32), y), workers=3) as loader:
        order = np.array([7, 2, 9, 0, 5])
        for got in (loader.batch(order), loader.submit(order).result()):
            np.testing.assert_array_equal(got[0], x[order])
            np.testing.assert_array_equal(got[1], y[order])
    assert loader.pool._shutdown and loader.ahead._shutdown  # noqa: SLF001  (stopped by the with block)


def small_model(dropout=False):
    net = [layers.RandomFlip("horizontal"), layers.RandomCrop(4, padding=1), layers.Conv2D(3, 3), layers.ReLU(),
           layers.Flatten(), *([layers.Dropout(0.3)] if dropout else []), layers.Dense(3)]
    return xpcnn.Sequential(net)


def test_fit_on_a_dataset_equals_fit_on_the_arrays():
    rng = np.random.default_rng(1)
    x, y = rng.random((40, 3, 6, 5), dtype=np.float32), rng.integers(0, 3, 40)
    runs = []
    for data in ((x, y), (ArrayDataset(x, y, ["a", "b", "c"]), None)):
        model = small_model()
        history = model.fit(*data, epochs=2, batch_size=8, seed=3, verbose=0)
        runs.append((model, history.history))
    (arrays, h1), (dataset, h2) = runs
    assert h1 == h2
    for w1, w2 in zip(arrays.get_weights(), dataset.get_weights()):
        np.testing.assert_array_equal(w1, w2)
    assert dataset.class_names == ["a", "b", "c"] and arrays.class_names is None
    assert dataset.evaluate(ArrayDataset(x, y)) == dataset.evaluate(x, y)
    np.testing.assert_array_equal(dataset.predict(ArrayDataset(x)), dataset.predict(x))


def test_resume_mid_run_on_a_folder_is_bit_identical(tmp_path):
    root = make_folder(tmp_path / "f", counts=(7, 6, 5))
    ds = image_folder(root, color="rgb")

    def run(epochs, **kwargs):
        model = small_model(dropout=True)
        model.fit(ds, epochs=epochs, batch_size=4, seed=2, verbose=0, **kwargs)
        return model

    straight = run(3)
    run(1, checkpoint_dir=tmp_path / "ckpt")
    resumed = run(3, checkpoint_dir=tmp_path / "ckpt", resume_from=tmp_path / "ckpt")
    for w1, w2 in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(w1, w2)
    assert resumed.layer_states() == straight.layer_states()


def test_class_names_travel_with_the_model(tmp_path):
    root = make_folder(tmp_path / "f", counts=(4, 4, 4))
    ds = image_folder(root)
    model = small_model()
    model.fit(ds, epochs=1, batch_size=4, verbose=0, validation_data=ds)
    model.save(tmp_path / "m.safetensors")
    loaded = xpcnn.load(tmp_path / "m.safetensors")
    assert loaded.class_names == ["c0", "c1", "c2"] == model.class_names
    names = loaded.predict_classes(ds)
    assert names == model.predict_classes(ds) and set(names) <= {"c0", "c1", "c2"} and len(names) == 12
    float64 = small_model().build((3, 6, 5), dtype="float64")
    assert float64.evaluate(ds)["loss"] > 0  # float32 batches cast to the model's dtype


class Custom:
    """A dataset written by hand: the protocol only."""

    class_names = None
    sample_shape = (1, 2, 2)

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def batch(self, indices):
        return self.x[indices], self.y[indices]


def test_bad_batches_are_refused_clearly():
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(2)])
    with pytest.raises(DTypeError, match="uint8"):
        model.fit(Custom(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4, np.int64)), verbose=0)
    with pytest.raises(LabelError, match=r"labels of shape \(4,\) in \[0, 1\].*from 2 to 5"):
        model.fit(Custom(np.zeros((4, 1, 2, 2), np.float32), np.arange(4) + 2), verbose=0)
    x, y = np.zeros((4, 1, 2, 2), np.float32), np.array([0, 1, 1, 0])
    for bad in (Custom(x, y[:, None]), Custom(x, y)):  # labels (N, 1); then a batch short of labels
        if bad.y.ndim == 1:
            bad.batch = lambda indices, b=bad: (b.x[indices], b.y[indices][:-1])
        with pytest.raises(LabelError, match=r"expected labels of shape \(4,\).*got shape \((4, 1|2,)\)"):
            model.evaluate(bad, batch_size=4)
    short = Custom(x, y)
    short.batch = lambda indices: (x[indices][:-1], y[indices][:-1])
    with pytest.raises(xpcnn.errors.ShapeError, match=r"4 indices gave x of shape \(2, 1, 2, 2\), expected \(4, 1, 2,"):
        model.fit(short, batch_size=4, verbose=0)
    with pytest.raises(LabelError, match="3 classes, the model 2"):
        model.evaluate(ArrayDataset(np.zeros((3, 1, 2, 2)), np.zeros(3, np.int64), ["a", "b", "c"]))
    with pytest.raises(xpcnn.errors.ArgumentTypeError, match="y: expected None"):
        model.fit(ArrayDataset(np.zeros((3, 1, 2, 2))), np.zeros(3), verbose=0)


def test_cli_trains_on_a_folder_and_predicts_class_names(tmp_path, capsys):
    root = make_folder(tmp_path / "photos", counts=(5, 5), size=(12, 12))
    model = tmp_path / "m.safetensors"
    assert cli.main(["train", "--data", str(root), "--epochs", "1", "--batch-size", "4", "--augment", "flip,crop",
                     "--verbose", "0", "--save", str(model)]) == 0
    out = capsys.readouterr().out
    assert f"{root}: 8 training / 2 held-out images" in out and "held-out accuracy" in out
    assert cli.main(["predict", str(model), str(root / "c1"), str(root / "c0" / "00.png"), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(re.match(r".*\.png: c[01] \(probability [0-9.]+\); next: c[01] ", line)
                                   for line in lines)
    assert cli.main(["train", "--data", str(root), "--augment", "rotate"]) == 2


def test_docs_data_examples_run(tmp_path, monkeypatch, capsys):
    assert len(python_blocks("data.md")) >= 2
    monkeypatch.chdir(tmp_path)
    run_blocks("data.md", {})
    assert "accuracy" in capsys.readouterr().out
