"""CIFAR-10 from the binary version: small files written in the official format (4 records per
file instead of 10000, the tarball digest pinned to the one written here), read from the
extracted folder and from the tarball; sizes, digests and the pickle version refused."""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from xpcnn.datasets import cifar, load_data
from xpcnn.errors import DataError

RECORDS = 4


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(cifar, "RECORDS", RECORDS)
    rng = np.random.default_rng(0)
    files = {}
    for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE):
        labels = rng.integers(0, 10, RECORDS, dtype=np.uint8)
        pixels = rng.integers(0, 256, (RECORDS, 3, 32, 32), dtype=np.uint8)
        files[name] = (np.concatenate([labels[:, None], pixels.reshape(RECORDS, -1)], axis=1).tobytes(), labels, pixels)
    return files


def write_folder(root, files):
    folder = root / cifar.FOLDER
    folder.mkdir()
    for name, (blob, _, _) in files.items():
        (folder / name).write_bytes(blob)
    return folder


def write_tarball(path, files, folder=cifar.FOLDER):
    with tarfile.open(path, "w:gz") as tar:
        for name, (blob, _, _) in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def check(result, files):
    (x_train, y_train), (x_test, y_test) = result
    assert x_train.shape == (5 * RECORDS, 3, 32, 32) and x_test.shape == (RECORDS, 3, 32, 32)
    assert x_train.dtype == np.uint8 and y_train.dtype == y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train, np.concatenate([files[n][2] for n in cifar.TRAIN_FILES]))
    np.testing.assert_array_equal(y_train, np.concatenate([files[n][1] for n in cifar.TRAIN_FILES]))
    np.testing.assert_array_equal(x_test, files[cifar.TEST_FILE][2])
    np.testing.assert_array_equal(y_test, files[cifar.TEST_FILE][1])


def test_the_extracted_folder_or_its_parent(small, tmp_path):
    folder = write_folder(tmp_path, small)
    check(load_data("cifar10", path=folder), small)
    check(load_data("cifar10", path=tmp_path), small)
    (folder / "data_batch_1").write_bytes(b"\x80\x04junk")  # a stray pickle-version file beside the binary ones
    check(load_data("cifar10", path=folder), small)
    assert len(cifar.CLASS_NAMES) == 10 and cifar.CLASS_NAMES[0] == "airplane"
    assert RECORDS * cifar.RECORD == len(small["test_batch.bin"][0]) and 10000 * cifar.RECORD == 30_730_000


def test_the_tarball_is_read_after_its_sha256_is_checked(small, tmp_path, monkeypatch):
    path = write_tarball(tmp_path / "cifar-10-binary.tar.gz", small)
    with pytest.raises(DataError, match=f"sha256 .* not the official {cifar.TARBALL_SHA256}"):
        load_data("cifar10", path=path)
    monkeypatch.setattr(cifar, "TARBALL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    check(load_data("cifar10", path=path), small)


def test_wrong_sizes_and_labels_are_refused_naming_the_file(small, tmp_path):
    folder = write_folder(tmp_path, small)
    (folder / "data_batch_3.bin").write_bytes(small["data_batch_3.bin"][0][:-1])
    with pytest.raises(DataError, match=r"data_batch_3\.bin holds 12291 bytes, expected 12292"):
        load_data("cifar10", path=folder)
    (folder / "data_batch_3.bin").write_bytes(b"\x0b" + small["data_batch_3.bin"][0][1:])
    with pytest.raises(DataError, match="labels must be 0..9, found 11"):
        load_data("cifar10", path=folder)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="test_batch.bin"):
        load_data("cifar10", path=folder)


def test_the_pickle_version_is_refused_with_a_pointer_to_the_binary_one(small, tmp_path, monkeypatch):
    python = tmp_path / "cifar-10-batches-py"
    python.mkdir()
    (python / "data_batch_1").write_bytes(b"\x80\x04junk")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    tarball = write_tarball(tmp_path / "renamed.tar.gz", small, folder="cifar-10-batches-py")
    monkeypatch.setattr(cifar, "TARBALL_SHA256", hashlib.sha256(tarball.read_bytes()).hexdigest())
    for path in (python, tmp_path / "cifar-10-python.tar.gz", tarball):
        with pytest.raises(DataError, match="pickle.*cifar-10-binary.tar.gz"):
            load_data("cifar10", path=path)
    with pytest.raises(DataError, match="path: CIFAR-10 is not shipped"):
        load_data("cifar10")
