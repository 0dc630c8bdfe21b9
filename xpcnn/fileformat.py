"""The xpcnn file format: safetensors bytes <-> host arrays plus validated metadata.

This module knows bytes, host NumPy arrays and metadata fields, and no model: the model
(``Sequential.state_tensors`` / ``file_fields``) says what to write, :mod:`xpcnn.saving` and
:mod:`xpcnn.checkpoint` rebuild or restore models from what this module reads.

A file is a safetensors file whose tensors are the model's parameters and buffers keyed
``"<layer>.<name>"`` (``"0.weight"``, ``"1.running_mean"``, ``"3.block.0.bias"``), and whose
metadata (all strings) holds::

    format          "xpcnn"
    format_version  "2" (version 1 files, written before layers had buffers, still read)
    kind            "model" or "checkpoint"
    config          the architecture as JSON (Sequential.get_config())
    dtype           "float32" | "float64"
    input_shape     JSON list, e.g. [1, 28, 28]
    content_sha256  digest of every tensor's name, dtype, shape and bytes (detects corruption)
    class_names     JSON list of the class names (only when the model has them: fit on a dataset)
    xpcnn_version   the writer's version (information only)

Checkpoints are the same format with ``kind = "checkpoint"``, extra tensors under
``optimizer/`` and extra metadata.

Reading never executes anything from the file: the header is parsed as JSON and checked field
by field, tensor byte ranges are checked before anything is decoded, and any defect raises
:class:`xpcnn.errors.ModelFileError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
import struct
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from .errors import ArgumentError, ArgumentTypeError, ModelFileError
from .version import __version__

FORMAT = "xpcnn"
FORMAT_VERSION = 2
KINDS = ("model", "checkpoint")

_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_DTYPE_TAGS = {"float32": "F32", "float64": "F64"}
_MAX_HEADER = 16 * 2**20  # bytes of JSON header; real headers are a few KB
_MAX_INPUT_SIDE = 2**20
CHECKPOINT_NAME = re.compile(r"^ckpt-epoch(\d{6})\.safetensors$")

# ---------------------------------------------------------------- writing


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the new one.

    Temporary file in the same directory, write, flush, fsync, ``os.replace``, then fsync the
    directory so the rename itself survives a power cut. A crash leaves at most a stray
    ``.<name>.*.tmp`` file, never a truncated ``path``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path: expected a file path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    directory = path.parent
    if path.is_dir():
        raise ArgumentError(f"path: {os.fspath(path)} is a directory; expected a file path (a new or existing file)")
    if not directory.is_dir():
        raise ArgumentError(
            f"path: the directory {os.fspath(directory)} does not exist (for {os.fspath(path)}); create it first"
        )
    # Created with mode 0o666 less the umask, as open() would make the file (mkstemp makes 0o600)
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # binary on Windows, as mkstemp
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with suppress_oserror():
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk or a file-size limit: say which file
            raise OSError(e.errno, f"cannot write {os.fspath(path)} ({e.strerror or e})") from e
        raise
    _fsync_directory(directory)
    return path


class suppress_oserror:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, OSError)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def content_digest(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and little-endian bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = tensors[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def encode(tensors: dict[str, np.ndarray], *, kind: str, config: dict[str, Any], dtype: str,
           input_shape: tuple[int, ...], metadata: dict[str, str] | None = None,
           class_names: list[str] | None = None) -> bytes:
    """safetensors bytes of host ``tensors`` with the validated xpcnn metadata fields (plus
    extra string ``metadata`` for checkpoints, which may not override the reserved keys)."""
    if kind not in KINDS:
        raise ArgumentError(f"kind: expected one of {KINDS}, got {kind!r}")
    all_tensors = {key: np.ascontiguousarray(a) for key, a in tensors.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": kind, "config": json.dumps(config),
            "dtype": dtype, "input_shape": json.dumps(list(input_shape)), "content_sha256": content_digest(all_tensors),
            "xpcnn_version": _version()}
    if class_names is not None:
        meta["class_names"] = json.dumps(list(class_names))
    for key, value in (metadata or {}).items():
        if key in meta:
            raise ArgumentError(f"metadata: key {key!r} is reserved")
        meta[key] = value
    return safetensors.numpy.save(all_tensors, metadata=meta)


def _version() -> str:
    return __version__


def checkpoint_name(epoch: int) -> str:
    return f"ckpt-epoch{epoch:06d}.safetensors"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint file in ``directory``, oldest first (unvalidated)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), directory / name) for name in os.listdir(directory) if (m := CHECKPOINT_NAME.match(name))
    ]
    return sorted(found)


# ---------------------------------------------------------------- reading


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a model file, refusing early: never a FIFO or device (which could block or
    never end), and nothing past the first 8 bytes of a file whose header length cannot fit."""
    where = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; harmless for regular files.
        fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise ModelFileError(f"{where}: is a directory, expected a model file") from None
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{where}: cannot open model file ({e})") from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise ModelFileError(f"{where}: is a directory, expected a model file")
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError(f"{where}: not a regular file")
        try:
            head = f.read(8)
            if len(head) == 8:
                (header_len,) = struct.unpack("<Q", head)
                if header_len > _MAX_HEADER or 8 + header_len > info.st_size:  # refuse before reading the rest
                    raise ModelFileError(f"{where}: not a safetensors model file: header length {header_len} does "
                                         f"not fit the {info.st_size}-byte file{_sniff(head)} (truncated or not "
                                         "this format)")
            return head + f.read()
        except OSError as e:
            raise ModelFileError(f"{where}: cannot read model file ({e})") from e


def _sniff(data: bytes) -> str:
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return " (it looks like a Python pickle, which xpcnn never loads)"
    if data[:4] == b"PK\x03\x04":
        return " (it looks like a zip / NumPy .npz archive)"
    if data[:6] == b"\x93NUMPY":
        return " (it looks like a NumPy .npy file)"
    return ""


def parse_json(text: str, what: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{where}: {what} is not valid JSON ({e})") from None


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def parse(data: bytes, where: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Validate and decode safetensors ``data``: (tensors as host arrays, metadata).

    Checks the header length, the header JSON, each entry's dtype (F32/F64 only), shape and
    byte range (contiguous, in order, covering the data exactly) before decoding anything.
    """
    if len(data) < 8:
        raise ModelFileError(f"{where}: not a model file: {len(data)} bytes is shorter than a safetensors "
                             f"header{_sniff(data)}")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len < 2 or header_len > _MAX_HEADER or 8 + header_len > len(data):
        raise ModelFileError(f"{where}: not a safetensors model file: header length {header_len} does not fit the "
                             f"{len(data)}-byte file{_sniff(data)} (truncated or not this format)")
    try:
        header_text = data[8 : 8 + header_len].decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(f"{where}: header is not UTF-8 text{_sniff(data)}") from None
    header = parse_json(header_text, "header", where)
    if not isinstance(header, dict):
        raise ModelFileError(f"{where}: header: expected a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ModelFileError(f"{where}: header: expected __metadata__ to be an object of strings")
    body = memoryview(data)[8 + header_len :]
    entries = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(f"{where}: tensor {name!r}: expected keys dtype, shape, data_offsets, got "
                                 f"{entry!r:.200}")
        dtype = _DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise ModelFileError(f"{where}: tensor {name!r}: expected dtype F32 or F64, got {entry['dtype']!r:.50}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_size(s) for s in shape):
            raise ModelFileError(f"{where}: tensor {name!r}: shape must be a list of at most 8 non-negative ints, "
                                 f"got {shape!r:.200}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(o) for o in offsets):
            raise ModelFileError(f"{where}: tensor {name!r}: data_offsets must be [begin, end], got {offsets!r:.200}")
        begin, end = offsets
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise ModelFileError(f"{where}: tensor {name!r}: {end - begin} bytes do not hold shape {shape} of "
                                 f"{entry['dtype']}")
        entries.append((begin, end, name, dtype, tuple(shape)))
    entries.sort()
    position = 0
    for begin, end, name, _, _ in entries:
        if begin != position:
            raise ModelFileError(f"{where}: tensor {name!r}: data starts at byte {begin}, expected {position} "
                                 "(overlap or gap)")
        position = end
    if position != len(body):
        raise ModelFileError(f"{where}: tensor data is {len(body)} bytes, the header describes {position} "
                             "(truncated or padded)")
    tensors = {
        name: np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        for begin, end, name, dtype, shape in entries
    }
    return tensors, metadata


def _is_size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53


def valid_class_names(names: Any) -> bool:
    """The one rule for class names (a model's, a file's): None, or distinct non-empty strings."""
    return names is None or isinstance(names, (list, tuple)) and all(isinstance(n, str) and n for n in names) \
        and len(set(names)) == len(names)


def check_metadata(metadata: dict[str, str], where: str) -> dict[str, Any]:
    """The validated header fields: format, version, kind, config, dtype, input_shape."""
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{where}: metadata format: expected {FORMAT!r}, got {metadata.get('format')!r:.80} "
                             "(not an xpcnn model file)")
    version = metadata.get("format_version", "")
    if not (version.isascii() and version.isdigit()) or len(version) > 6:
        raise ModelFileError(f"{where}: metadata format_version: expected an integer, got {version!r:.80}")
    if int(version) > FORMAT_VERSION:
        raise ModelFileError(f"{where}: written by a newer xpcnn (format version {version}); "
                             f"this xpcnn reads version {FORMAT_VERSION}; upgrade xpcnn")
    if int(version) < 1:
        raise ModelFileError(f"{where}: metadata format_version: expected >= 1, got {version}")
    kind = metadata.get("kind")
    if kind not in KINDS:
        raise ModelFileError(f"{where}: metadata kind: expected one of {KINDS}, got {kind!r:.80}")
    dtype = metadata.get("dtype")
    if dtype not in _DTYPE_TAGS:
        raise ModelFileError(f"{where}: metadata dtype: expected 'float32' or 'float64', got {dtype!r:.80}")
    input_shape = parse_json(metadata.get("input_shape", ""), "metadata input_shape", where)
    if (not isinstance(input_shape, list) or not 1 <= len(input_shape) <= 4
            or not all(_is_size(s) and 1 <= s <= _MAX_INPUT_SIDE for s in input_shape)):
        raise ModelFileError(f"{where}: metadata input_shape: expected 1 to 4 positive ints, got {input_shape!r:.200}")
    config = parse_json(metadata.get("config", ""), "metadata config", where)
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list) or not config["layers"]:
        raise ModelFileError(f"{where}: metadata config: expected an object with a non-empty 'layers' list")
    digest = metadata.get("content_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ModelFileError(f"{where}: metadata content_sha256: expected a SHA-256 hex digest, got {digest!r:.80}")
    names = parse_json(metadata.get("class_names", "null"), "metadata class_names", where)
    if not valid_class_names(names):
        raise ModelFileError(f"{where}: metadata class_names: expected a list of distinct non-empty strings, "
                             f"got {names!r:.200}")
    return {"kind": kind, "dtype": dtype, "input_shape": tuple(input_shape), "config": config, "version": int(version),
            "class_names": names}
