"""Backend selection for the test suite, and the parity count in the terminal summary.

Which backends the backend-parametrised tests (the ``backend_name`` / ``backend`` fixtures)
run on:

    pytest --backend numpy --backend torch          # repeatable
    XPCNN_TEST_BACKENDS=cupy,torch:cuda pytest      # comma-separated
    pytest                                          # all of xpcnn.testing.ALL_BACKENDS

Names are ``numpy``, ``array_api_strict[:device]``, ``torch[:device]`` and ``cupy[:index]``;
anything else is a usage error. A backend that is not installed or has no device is
*skipped* with the reason xpcnn gives (``BackendUnavailableError``), never failed, so a
machine without a GPU shows the CuPy and torch-cuda rows as skipped. Rows that need CUDA
carry the ``gpu`` marker: ``pytest -m gpu`` runs only them, ``-m "not gpu"`` none of them.
"""

from __future__ import annotations

import collections
import os

import pytest
from hypothesis import settings

from xpcnn.backend import BACKENDS, load_backend
from xpcnn.errors import BackendUnavailableError
from xpcnn.testing import ALL_BACKENDS, is_gpu_backend

# The suite is deterministic by default (the same Hypothesis examples on every run, no
# wall-clock deadlines on a busy CI machine); XPCNN_HYPOTHESIS=explore draws new ones.
settings.register_profile("xpcnn-ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("xpcnn-explore", deadline=None, print_blob=True)
settings.load_profile("xpcnn-explore" if os.environ.get("XPCNN_HYPOTHESIS") == "explore" else "xpcnn-ci")

_SELECTED = pytest.StashKey[list]()
_loaded: dict[str, object] = {}  # name -> Backend, or the BackendUnavailableError saying why not


def pytest_addoption(parser):
    group = parser.getgroup("xpcnn")
    group.addoption(
        "--backend", action="append", default=[], metavar="NAME",
        help=f"run backend-parametrised tests on NAME (repeatable; default: $XPCNN_TEST_BACKENDS or all of "
             f"{', '.join(ALL_BACKENDS)}). Missing backends are skipped with their reason.",
    )


def _canonical(spec: str) -> str:
    name, sep, device = spec.strip().partition(":")
    name = name.strip().lower().replace("-", "_")
    name = {"strict": "array_api_strict"}.get(name, name)
    if name not in BACKENDS or (sep and not device):
        raise pytest.UsageError(
            f"unknown backend {spec!r} (from --backend or XPCNN_TEST_BACKENDS); valid names: "
            f"{', '.join(ALL_BACKENDS)} (a device may follow a colon, e.g. cupy:1, torch:cuda:1)"
        )
    if (name, device) in (("torch", "cpu"), ("numpy", "cpu"), ("array_api_strict", "CPU_DEVICE")):
        device = ""
    canonical = f"{name}:{device}" if device else name
    try:
        _loaded[canonical] = load_backend(canonical)
        if name == "torch":
            single_threaded_torch()
    except BackendUnavailableError as e:  # not installed / no device here: its rows are skipped
        _loaded[canonical] = e
    except ValueError as e:  # a device the library does not have, e.g. array_api_strict:nodev
        raise pytest.UsageError(f"backend {spec!r}: {e}") from None
    return canonical


def single_threaded_torch():
    """Pin PyTorch's CPU kernels to one thread. With its default (one per core) its OpenMP workers
    spin-wait, and on a busy 2-core machine a training epoch went from 0.2 s to 10-30 s.
    Numerics are unaffected beyond the float reduction order the tolerances already cover."""
    import torch

    torch.set_num_threads(1)


def selected_backends(config) -> list[str]:
    """The backend names chosen for this run, in order, without repeats."""
    return config.stash[_SELECTED]


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: one backend x dtype case of the parity matrix (counted in the summary)")
    config.addinivalue_line("markers", "gpu: tests that need a CUDA device (CuPy or torch cuda)")
    raw = list(config.getoption("backend") or [])
    if not raw:
        raw = [s for s in os.environ.get("XPCNN_TEST_BACKENDS", "").split(",") if s.strip()]
    names = [_canonical(s) for s in (raw or ALL_BACKENDS)]
    config.stash[_SELECTED] = list(dict.fromkeys(names))
    config.pluginmanager.register(_ParityCounter(config), "xpcnn-parity-counter")


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        params = [
            pytest.param(name, id=name, marks=[pytest.mark.gpu] if is_gpu_backend(name) else [])
            for name in selected_backends(metafunc.config)
        ]
        metafunc.parametrize("backend_name", params)


@pytest.fixture
def backend(backend_name):
    """The loaded :class:`xpcnn.backend.Backend` for this row; skips with the reason when unusable."""
    found = _loaded[backend_name]
    if isinstance(found, BackendUnavailableError):
        pytest.skip(f"backend {backend_name} unavailable: {found}")
    return found


class _ParityCounter:
    """Counts the ``parity``-marked cases that ran, failed or were skipped (with reasons)."""

    def __init__(self, config) -> None:
        self.config = config
        self.passed = self.failed = 0
        self.skipped: collections.Counter = collections.Counter()

    def pytest_runtest_logreport(self, report):
        if "parity" not in report.keywords:
            return
        if report.passed and report.when == "call":
            self.passed += 1
        elif report.failed and report.when in ("setup", "call"):
            self.failed += 1
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped[reason.removeprefix("Skipped: ")] += 1

    def pytest_terminal_summary(self, terminalreporter):
        skipped = sum(self.skipped.values())
        ran = self.passed + self.failed
        if not ran and not skipped:
            return
        terminalreporter.section("xpcnn parity")
        terminalreporter.write_line(
            f"parity cases run: {ran} ({self.passed} passed, {self.failed} failed); skipped: {skipped}; "
            f"backends selected: {', '.join(selected_backends(self.config))}"
        )
        for reason, n in sorted(self.skipped.items()):
            terminalreporter.write_line(f"  skipped {n}: {reason}")
