"""Backend selection for the test suite, and the parity count in the terminal summary.

Which backends the backend-parametrised tests run on:

    pytest --backend numpy --backend torch          # repeatable
    XPCNN_TEST_BACKENDS=cupy,torch:cuda pytest      # comma-separated
    pytest                                          # the defaults below

By default the ``backend_name`` / ``backend`` fixtures take every backend of
xpcnn.testing.ALL_BACKENDS, and the parity matrix (``matrix_backend_name`` /
``matrix_backend``, tests/test_parity.py) every one of tests/parity_matrix.py MATRIX_BACKENDS (JAX
too). Names are ``numpy``, ``array_api_strict[:device]``, ``torch[:device]``, ``jax`` and
``cupy[:index]``; anything else is a usage error. A default backend that is not installed or
has no device is *skipped* with the reason xpcnn gives (``BackendUnavailableError``), so a
machine without a GPU shows the CuPy and torch-cuda rows as skipped. A backend asked for by
name (``--backend`` / ``XPCNN_TEST_BACKENDS``) that cannot run *fails* its rows with that
reason: a requested run that tested nothing must not pass. Rows that need CUDA carry the
``gpu`` marker: ``pytest -m gpu`` runs only them, ``-m "not gpu"`` none of them.
"""

from __future__ import annotations

import collections
import os

import pytest
from hypothesis import settings

from xpcnn.backend import BACKENDS, load_backend
from xpcnn.backend.registry import STATE
from xpcnn.errors import BackendUnavailableError
from xpcnn.testing import ALL_BACKENDS, is_gpu_backend

from .parity_matrix import MATRIX_BACKENDS

# The suite is deterministic by default (the same Hypothesis examples on every run, no
# wall-clock deadlines on a busy CI machine); XPCNN_HYPOTHESIS=explore draws new ones. Test
# modules therefore never pass derandomize= themselves (tests/test_suite_settings.py checks).
settings.register_profile("xpcnn-ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("xpcnn-explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile("xpcnn-explore" if os.environ.get("XPCNN_HYPOTHESIS") == "explore" else "xpcnn-ci")

_SELECTED = pytest.StashKey[list]()
_MATRIX = pytest.StashKey[list]()
_REQUESTED = pytest.StashKey[bool]()
_loaded: dict[str, object] = {}  # name -> Backend, or the BackendUnavailableError saying why not


def pytest_addoption(parser):
    group = parser.getgroup("xpcnn")
    group.addoption(
        "--backend", action="append", default=[], metavar="NAME",
        help=f"run backend-parametrised tests on NAME (repeatable; default: $XPCNN_TEST_BACKENDS or all of "
             f"{', '.join(ALL_BACKENDS)}, and the parity matrix on {', '.join(MATRIX_BACKENDS)}). A default backend "
             "that cannot run is skipped with its reason; one named here fails its tests with that reason.",
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


def pytest_configure(config):
    config.addinivalue_line("markers", "parity: one backend x dtype case of the parity matrix (counted in the summary)")
    config.addinivalue_line("markers", "gpu: tests that need a CUDA device (CuPy or torch cuda)")
    raw = list(config.getoption("backend") or [])
    if not raw:
        raw = [s for s in os.environ.get("XPCNN_TEST_BACKENDS", "").split(",") if s.strip()]
    config.stash[_REQUESTED] = bool(raw)
    config.stash[_SELECTED] = list(dict.fromkeys(_canonical(s) for s in (raw or ALL_BACKENDS)))
    config.stash[_MATRIX] = list(dict.fromkeys(_canonical(s) for s in (raw or MATRIX_BACKENDS)))
    config.pluginmanager.register(_ParityCounter(config), "xpcnn-parity-counter")


def pytest_generate_tests(metafunc):
    for fixture, key in (("backend_name", _SELECTED), ("matrix_backend_name", _MATRIX)):
        if fixture in metafunc.fixturenames:
            params = [
                pytest.param(name, id=name, marks=[pytest.mark.gpu] if is_gpu_backend(name) else [])
                for name in metafunc.config.stash[key]
            ]
            metafunc.parametrize(fixture, params)


def _usable(name: str, config):
    """The loaded Backend; when it cannot run here, a skip (default selection) or a failure
    (asked for by name), with xpcnn's reason either way."""
    found = _loaded[name]
    if isinstance(found, BackendUnavailableError):
        if config.stash[_REQUESTED]:
            pytest.fail(f"backend {name} was requested (--backend / XPCNN_TEST_BACKENDS) but cannot run here: {found}",
                        pytrace=False)
        pytest.skip(f"backend {name} unavailable: {found}")
    return found


@pytest.fixture
def backend(backend_name, request):
    """The loaded :class:`xpcnn.backend.Backend` for this row (see :func:`_usable`)."""
    return _usable(backend_name, request.config)


@pytest.fixture(scope="module")
def torch():
    """PyTorch, the test oracle, on one thread; the test skips where it is not installed."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # see single_threaded_torch
    return torch


@pytest.fixture
def keep_backend_selection():
    """The selected backend as it was before the test (the CLI's --backend selects one)."""
    previous = STATE.selected
    yield
    STATE.selected = previous


@pytest.fixture
def sweep_backend(backend):
    """``backend`` for the Hypothesis sweeps over shapes, except JAX: eager JAX compiles every new
    shape on first use, so a sweep took minutes per test there. JAX runs the fixed-shape tests
    and test_functional_nn.test_backward_passes_run_on_jax_arrays_and_match_numpy."""
    if backend.name == "jax":
        pytest.skip("Hypothesis shape sweeps are not run on eager JAX (one compilation per new shape)")
    return backend


@pytest.fixture
def matrix_backend(matrix_backend_name, request):
    """The loaded :class:`xpcnn.backend.Backend` for this row of the parity matrix (see :func:`_usable`)."""
    return _usable(matrix_backend_name, request.config)


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
            f"matrix backends: {', '.join(self.config.stash[_MATRIX])}"
        )
        for reason, n in sorted(self.skipped.items()):
            terminalreporter.write_line(f"  skipped {n}: {reason}")
