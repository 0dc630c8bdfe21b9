"""CIFAR-10 from its official binary version (https://www.cs.toronto.edu/~kriz/cifar.html).

``load_data(path)`` reads ``cifar-10-binary.tar.gz`` or its extracted ``cifar-10-batches-bin/``
folder: data_batch_1.bin .. data_batch_5.bin (training) and test_batch.bin, each RECORDS records
of one label byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows in order). The
tarball is checked against its published digest (SHA-256 below; the site gives MD5
c32a1d4ab5d03f1284b67883e8d87530); the extracted files by their size and structure (exactly
RECORDS records, labels 0..9), since no per-file digest is published. The Python version
(pickled batches) is refused: xpcnn never unpickles.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from ..errors import ArgumentTypeError, DataError

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
FOLDER = "cifar-10-batches-bin"
RECORD = 1 + 3 * 32 * 32
RECORDS = 10000  # per file: each official file is 30,730,000 bytes
TARBALL_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
_BINARY = "the binary version, cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"


def load_data(path):
    """``(x_train, y_train), (x_test, y_test)``: x uint8 (N, 3, 32, 32), y int64 (N,), 50000 and
    10000 samples of the official files; host NumPy. ``path``: the tarball or the extracted
    folder (or the folder holding it). Class names: :data:`CLASS_NAMES`."""
    if path is None:
        raise DataError(f"path: CIFAR-10 is not shipped with xpcnn; download {_BINARY} and pass its path")
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path: expected a file or folder path, got {type(path).__name__}")
    path = Path(path).expanduser()
    if path.is_dir() and (path / FOLDER).is_dir():
        path = path / FOLDER
    if path.name.startswith(("cifar-10-python", "cifar-10-batches-py")) or not (path / TRAIN_FILES[0]).exists() and any(
            (path / name).exists() for name in ("data_batch_1", "cifar-10-batches-py")):
        raise _pickled(path)
    if path.is_dir():
        blobs = {}
        for file in (path / name for name in (*TRAIN_FILES, TEST_FILE)):
            if file.exists() and not file.is_file():  # a FIFO or a device
                raise DataError(f"path: {file} is not a regular file")
            if file.is_file() and file.stat().st_size != RECORDS * RECORD:  # checked before it is read
                raise DataError(f"{path}: {file.name} holds {file.stat().st_size} bytes, expected {RECORDS * RECORD} "
                                f"({RECORDS} records of {RECORD} bytes); not {_BINARY}")
            try:
                blobs[file.name] = file.read_bytes()
            except OSError as e:
                raise DataError(f"path: cannot read {file} ({e}); expected the files of {_BINARY}") from None
    elif path.is_file():
        blobs = _from_tarball(path)
    else:
        raise DataError(f"path: {path} does not exist")
    return _records(blobs, TRAIN_FILES, path), _records(blobs, (TEST_FILE,), path)


def _from_tarball(path: Path) -> dict[str, bytes]:
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TARBALL_SHA256:
        raise DataError(f"path: {path} has sha256 {digest}, not the official {TARBALL_SHA256} of {_BINARY} "
                        "(a damaged download, or another file)")
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            if any("cifar-10-batches-py" in n for n in tar.getnames()):
                raise _pickled(path)
            return {name: tar.extractfile(f"{FOLDER}/{name}").read() for name in (*TRAIN_FILES, TEST_FILE)}
    except (tarfile.TarError, KeyError, OSError, AttributeError) as e:
        raise DataError(f"path: {path} is not a readable {FOLDER} tarball ({e})") from None


def _pickled(path) -> DataError:
    return DataError(f"path: {path} is the Python (pickle) version of CIFAR-10, which xpcnn never loads; use {_BINARY}")


def _records(blobs: dict[str, bytes], names, where) -> tuple[np.ndarray, np.ndarray]:
    for name in names:
        if len(blobs[name]) != RECORDS * RECORD:
            raise DataError(f"{where}: {name} holds {len(blobs[name])} bytes, expected {RECORDS * RECORD} "
                            f"({RECORDS} records of {RECORD} bytes); the file is damaged or not {_BINARY}")
    table = np.frombuffer(b"".join(blobs[n] for n in names), dtype=np.uint8).reshape(-1, RECORD)
    labels = table[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{where}: labels must be 0..9, found {labels.max()} (not the CIFAR-10 binary format)")
    return table[:, 1:].reshape(-1, 3, 32, 32).copy(), labels
