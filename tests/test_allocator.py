"""The malloc setting is opt-in (issue 9, item 6).

Each case runs in a fresh interpreter with an audit hook installed before xpcnn is imported:
CPython raises ``ctypes.dlsym`` for every symbol ctypes looks up and ``subprocess.Popen`` for
every child process, so the hook sees whether anything reached for ``mallopt`` (or spawned
``ldconfig``) without patching xpcnn. Where the setting is claimed, glibc's own counters show
it took effect: a 16 MiB block comes from the heap instead of a fresh mmap.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="mallopt is glibc's"
)

CHILD = textwrap.dedent(
    """
    import ctypes, json, sys

    seen = {"mallopt_lookups": 0, "spawned": []}

    def hook(event, args):
        if event == "ctypes.dlsym" and args[1] == "mallopt":
            seen["mallopt_lookups"] += 1
        elif event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork"):
            seen["spawned"].append(event)

    sys.addaudithook(hook)

    import numpy as np
    import xpcnn
    from xpcnn import layers, optim

    model = xpcnn.Sequential([layers.Conv2D(2, 3), layers.ReLU(), layers.Flatten(), layers.Dense(3)])
    model.build((1, 6, 6), seed=0, backend="numpy")
    x = np.random.default_rng(0).random((4, 1, 6, 6)).astype(np.float32)
    model.train_step(x, np.array([0, 1, 2, 0]), optim.SGD(lr=0.1))
    model.predict(x)
    if sys.argv[1] == "call":
        seen["returned"] = xpcnn.keep_freed_memory()
        seen["again"] = xpcnn.keep_freed_memory()
    seen["applied"] = xpcnn._allocator._applied

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    before = libc.mallinfo2().hblks
    block = libc.malloc(16 << 20)
    seen["new_mmaps_for_16MiB"] = libc.mallinfo2().hblks - before
    libc.free(block)
    print(json.dumps(seen))
    """
)


CLI_CHILD = textwrap.dedent(
    """
    import json, sys

    seen = {"mallopt_lookups": 0}

    def hook(event, args):
        if event == "ctypes.dlsym" and args[1] == "mallopt":
            seen["mallopt_lookups"] += 1

    sys.addaudithook(hook)

    from xpcnn import _allocator, cli

    seen["exit"] = cli.main(sys.argv[1:])
    seen["applied"] = _allocator._applied
    print(json.dumps(seen))
    """
)


def child_env(malloc_env: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XPCNN_MALLOC", "XPCNN_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    if malloc_env is not None:
        env["XPCNN_MALLOC"] = malloc_env
    return env


def run_child(mode: str, malloc_env: str | None, code: str = CHILD, args: tuple[str, ...] = ()) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, mode, *args], env=child_env(malloc_env), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_importing_and_training_leaves_malloc_alone():
    seen = run_child("import", None)
    assert seen["mallopt_lookups"] == 0
    assert seen["applied"] is False
    assert seen["new_mmaps_for_16MiB"] == 1  # glibc's default: a block this large is mmap-ed
    assert seen["spawned"] == []


@glibc_only
def test_explicit_call_applies_it_without_spawning_ldconfig():
    seen = run_child("call", None)
    assert seen["returned"] is True and seen["again"] is True and seen["applied"] is True
    assert seen["mallopt_lookups"] == 1  # looked up once; the second call changes nothing
    assert seen["new_mmaps_for_16MiB"] == 0  # below the raised mmap threshold: served from the heap
    assert seen["spawned"] == []


@glibc_only
def test_environment_keep_applies_it_at_import():
    seen = run_child("import", "keep")
    assert seen["applied"] is True and seen["mallopt_lookups"] == 1
    assert seen["new_mmaps_for_16MiB"] == 0
    assert seen["spawned"] == []


@glibc_only
def test_environment_default_overrides_the_explicit_call():
    seen = run_child("call", "default")
    assert seen["returned"] is False and seen["applied"] is False
    assert seen["mallopt_lookups"] == 0
    assert seen["new_mmaps_for_16MiB"] == 1


def test_unknown_environment_value_is_an_error_naming_the_variable():
    env = {**os.environ, "XPCNN_MALLOC": "always", "PYTHONPATH": ROOT}
    code = "import xpcnn"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ArgumentError: XPCNN_MALLOC: expected 'keep' or 'default' (or unset), got 'always'" in proc.stderr


def tiny_mnist(directory) -> None:
    """The four MNIST IDX files holding 8 training and 4 test images (random pixels)."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28)), "train-labels-idx1-ubyte": np.arange(8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)), "t10k-labels-idx1-ubyte": np.arange(4)}
    for name, array in arrays.items():
        header = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big")
        header += b"".join(d.to_bytes(4, "big") for d in array.shape)
        (directory / f"{name}.gz").write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@glibc_only
@pytest.mark.parametrize("malloc_env, applied", [(None, True), ("default", False)])
def test_cli_train_owns_its_process_and_applies_it(tmp_path, malloc_env, applied):
    tiny_mnist(tmp_path)
    argv = ("train", "--dataset", "mnist", "--data-path", str(tmp_path), "--epochs", "1", "--batch-size", "4",
            "--verbose", "0")
    seen = run_child(argv[0], malloc_env, code=CLI_CHILD, args=argv[1:])
    assert seen["exit"] == 0
    assert seen["applied"] is applied and seen["mallopt_lookups"] == int(applied)
