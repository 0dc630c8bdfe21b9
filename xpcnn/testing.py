"""Parity and gradient checks, public so that anyone can prove xpcnn on their own machine.

Two tools, used by ``tests/`` and by ``python -m xpcnn parity``:

:func:`assert_parity`
    Runs ``fn`` on NumPy float64 (the reference) and on each requested backend in the
    requested dtype, and checks every output: same library and device as the inputs, the
    requested dtype, the reference's shape, values within tolerance, and inputs unchanged.

:func:`gradcheck`
    Compares analytic gradients (a layer's ``backward`` or a function's ``backward=``) with
    central finite differences in float64; inputs too large to perturb one element at a time
    are checked along random directions instead.

Errors are measured against the reference ``r`` as ``max_abs = max |a - r|`` and
``max_rel = max_abs / max |r|`` (relative to the reference's largest magnitude, so outputs
that cancel to ~0 do not blow it up). An output passes when, element-wise,
``|a - r| <= atol + rtol * s`` where ``s`` is ``|r|`` (``relative_to="element"``, the float32
default) or ``max |r|`` (``relative_to="max"``, the float64 and training-run default).

Example::

    import numpy as np
    from xpcnn import functional as F
    from xpcnn.testing import assert_parity, gradcheck

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    assert_parity(lambda x, w: F.conv2d(x, w, padding=1), x, w,
                  backends=["numpy", "array_api_strict", "torch"], dtype="float32")
    gradcheck(lambda x, w: F.conv2d(x, w, padding=1), (x, w),
              backward=lambda g, x, w: F.conv2d_backward(g, x, w, padding=1, bias=False)[:2])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .backend import (
    Backend,
    device_of,
    dtype_name,
    library_of,
    load_backend,
    needs_cuda,
    resolve_target,
    to_device,
    to_numpy,
)
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    BackendUnavailableError,
    DTypeError,
    LayerContractError,
    NotBuiltError,
    ShapeError,
)

__all__ = ["CPU_BACKENDS", "GPU_BACKENDS", "ALL_BACKENDS", "DTYPES", "TOLERANCES", "Tolerance", "ParityResult",
           "ParityError", "check_parity", "assert_parity", "GradcheckResult", "gradcheck", "is_gpu_backend"]

CPU_BACKENDS = ("numpy", "array_api_strict", "array_api_strict:device1", "torch")
GPU_BACKENDS = ("cupy", "torch:cuda")
ALL_BACKENDS = CPU_BACKENDS + GPU_BACKENDS
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``|a - r| <= atol + rtol * s`` with ``s = |r|`` ("element") or ``max |r|`` ("max")."""

    rtol: float
    atol: float = 0.0
    relative_to: str = "element"

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ArgumentError(f"{name}: expected a finite number >= 0, got {value!r}")
        if self.relative_to not in ("element", "max"):
            raise ArgumentError(f"relative_to: expected 'element' or 'max', got {self.relative_to!r}")


# The project's tolerances (DESIGN.md, Testing). tests/tolerances.py is the single place the
# test suite reads them from; a test asserts these defaults equal it, so they cannot drift.
TOLERANCES = {"float64": Tolerance(rtol=1e-9, atol=0.0, relative_to="max"),
              "float32": Tolerance(rtol=1e-4, atol=1e-5, relative_to="element"),
              "float32_training": Tolerance(rtol=1e-4, atol=0.0, relative_to="max")}


def is_gpu_backend(spec: str) -> bool:
    """True for names that need a CUDA device: ``cupy[:i]`` and ``torch:cuda[:i]``."""
    if not isinstance(spec, str):
        raise ArgumentTypeError(
            f"spec: expected a backend name such as 'cupy' or 'torch:cuda', got {type(spec).__name__}"
        )
    return needs_cuda(spec)


# ---------------------------------------------------------------- parity


@dataclasses.dataclass
class ParityResult:
    """One backend x dtype run of one function: status is "PASS", "FAIL" or "SKIP"."""

    backend: str
    dtype: str
    status: str
    max_abs: float = math.nan
    max_rel: float = math.nan
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.backend} {self.dtype}: {self.status}"
        if self.status != "SKIP":
            text += f" (max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g})"
        return text + (f": {self.reason}" if self.reason else "")


class ParityError(AssertionError):
    """Raised by :func:`assert_parity`; ``results`` holds every :class:`ParityResult`."""

    def __init__(self, message: str, results: list[ParityResult]) -> None:
        super().__init__(message)
        self.results = results


def _is_array(x: Any) -> bool:
    """Arrays of any backend, NumPy scalars included (NumPy's 0-d results); not Python numbers."""
    if x is None or (isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic)):
        return False
    try:
        library_of(x)
    except TypeError:
        return False
    return True


def _host(x: Any) -> Any:
    """Host NumPy copy of an array argument; anything else (ints, tuples, None) unchanged."""
    return np.array(to_numpy(x), copy=True) if _is_array(x) else x


def _is_float(x: Any) -> bool:
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)


def _cast(x: Any, dtype: str) -> Any:
    """Floating host arrays to ``dtype``; integer arrays (labels) and non-arrays unchanged."""
    return x.astype(dtype) if _is_float(x) else x


def _flatten_outputs(out: Any) -> dict[str, Any]:
    """An array, a Python number, None, or a tuple/list/dict of those -> {name: value}."""
    if isinstance(out, dict):
        return {str(k): v for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return {f"out[{i}]": v for i, v in enumerate(out)}
    return {"out": out}


def _errors(actual: np.ndarray, ref: np.ndarray) -> tuple[float, float, np.ndarray]:
    diff = np.abs(actual.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    if max_abs == 0.0:
        max_rel = 0.0
    elif scale == 0.0 or not math.isfinite(max_abs):
        max_rel = math.inf
    else:
        max_rel = max_abs / scale
    return max_abs, max_rel, diff


def _within(diff: np.ndarray, ref: np.ndarray, tol: Tolerance) -> bool:
    if not diff.size:
        return True
    if not np.all(np.isfinite(diff)):
        return False
    if tol.relative_to == "max":
        bound = tol.atol + tol.rtol * float(np.abs(ref).max())
    elif tol.relative_to == "element":
        bound = tol.atol + tol.rtol * np.abs(ref)
    else:
        raise ValueError(f"relative_to: expected 'element' or 'max', got {tol.relative_to!r}")
    return bool(np.all(diff <= bound))


def _load(spec: str | Backend) -> Backend:
    return spec if isinstance(spec, Backend) else load_backend(spec)


def _check_output(name: str, value: Any, ref: Any, *, library: str, device: Any, dtype: str) -> list[str]:
    """Problems with one output's type, library, device, dtype and shape (values come after)."""
    if ref is None or value is None:
        if ref is None and value is None:
            return []
        return [f"{name}: got {value!r}, the reference gave {type(ref).__name__}"]
    if not _is_array(ref):
        if _is_array(value):
            return [f"{name}: got an array, the reference gave a Python {type(ref).__name__}"]
        return []
    if not _is_array(value):
        return [f"{name}: expected an array, got {type(value).__name__}"]
    problems = []
    if library_of(value) != library:
        problems.append(f"{name}: is a {library_of(value)} array, expected {library} (namespace changed)")
    elif device_of(value) != device:
        problems.append(f"{name}: is on device {device_of(value)}, expected the input's device {device}")
    ref_kind = to_numpy(ref).dtype.kind
    got = dtype_name(value.dtype)
    if ref_kind == "f" and got != dtype:
        problems.append(f"{name}: dtype {got}, expected {dtype}")
    if ref_kind in "iu" and not got.startswith(("int", "uint")):
        problems.append(f"{name}: dtype {got}, expected an integer dtype")
    if tuple(value.shape) != tuple(to_numpy(ref).shape):
        problems.append(f"{name}: shape {tuple(value.shape)}, expected {tuple(to_numpy(ref).shape)}")
    return problems


def check_parity(fn: Callable[..., Any], *args: Any, backends: Iterable[str | Backend] = CPU_BACKENDS,
                 dtype: str = "float64", rtol: float | None = None, atol: float | None = None,
                 relative_to: str | None = None, reference: Callable[..., Any] | None = None) -> list[ParityResult]:
    """Run ``fn(*args)`` on each backend in ``dtype`` and compare it with NumPy float64.

    ``args``: arrays of any backend (copied to the host first) and anything else (ints,
    tuples, None), passed through. Floating arrays are cast to ``dtype``; the reference sees
    those same (rounded) values in float64, so only the computation is compared. Integer
    arrays (labels) keep their dtype. Tolerances default to :data:`TOLERANCES` for ``dtype``.
    ``reference``: computes the expected outputs (same names as ``fn``'s) from those host
    float64 arguments, e.g. with PyTorch autograd; None: ``fn`` itself on NumPy float64.

    Returns one :class:`ParityResult` per backend; a backend that cannot run here is a SKIP
    with the reason from :class:`~xpcnn.BackendUnavailableError`. Never raises for a mismatch.
    """
    for name, f in (("fn", fn), ("reference", reference)):
        if f is not None and not callable(f):
            raise ArgumentTypeError(f"{name}: expected a function, got {type(f).__name__}")
    if dtype not in DTYPES:
        raise ArgumentError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
            raise ArgumentError(f"{name}: expected a number >= 0, got {value!r}")
    default = TOLERANCES[dtype]
    tol = Tolerance(default.rtol if rtol is None else rtol, default.atol if atol is None else atol,
                    default.relative_to if relative_to is None else relative_to)
    host = [_cast(_host(a), dtype) for a in args]
    reference = _flatten_outputs(
        (reference or fn)(*[np.array(a, dtype=np.float64) if _is_float(a) else _host(a) for a in host])
    )
    reference = {k: (None if v is None else to_numpy(v) if _is_array(v) else v) for k, v in reference.items()}

    results = []
    if isinstance(backends, str) or not (backends := list(backends)):  # a generator is read once
        raise ArgumentError(f"backends: expected a non-empty list of backend names, got {backends!r}")
    for spec in backends:
        label = str(spec)
        try:
            backend = _load(spec)
        except BackendUnavailableError as e:
            results.append(ParityResult(label, dtype, "SKIP", reason=str(e)))
            continue
        results.append(_run_one(fn, host, reference, backend, label, dtype, tol))
    return results


def _run_one(fn, host, reference, backend: Backend, label: str, dtype: str, tol: Tolerance) -> ParityResult:
    # Fresh copies per backend: a run that mutates its inputs must not contaminate the next.
    moved = [to_device(np.array(a, copy=True), backend) if isinstance(a, np.ndarray) else a for a in host]
    arrays = [a for a in moved if _is_array(a)]
    device = device_of(arrays[0]) if arrays else backend.device
    before = [np.array(to_numpy(a), copy=True) for a in arrays]
    try:
        outputs = _flatten_outputs(fn(*moved))
    except Exception as e:  # a backend that raises is a failure to report, not a crash of the table
        return ParityResult(label, dtype, "FAIL", reason=f"raised {type(e).__name__}: {e}")

    problems = []
    for i, (a, b) in enumerate(zip(arrays, before)):
        if not np.array_equal(to_numpy(a), b, equal_nan=True):
            problems.append(f"input {i} was mutated")
    if set(outputs) != set(reference):
        problems.append(f"outputs {sorted(outputs)} differ from the reference's {sorted(reference)}")
    worst_abs = worst_rel = 0.0
    for name in reference:
        if name not in outputs:
            continue
        value, ref = outputs[name], reference[name]
        found = _check_output(name, value, ref, library=backend.name, device=device, dtype=dtype)
        problems += found
        if found or ref is None:
            continue
        got = to_numpy(value) if _is_array(value) else np.asarray(value, dtype=np.float64)
        ref = np.asarray(ref)
        max_abs, max_rel, diff = _errors(got, ref)
        worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
        if not _within(diff, ref, tol):
            problems.append(f"{name}: max abs error {max_abs:.3g}, max rel error {max_rel:.3g} "
                            f"exceed rtol {tol.rtol:g} atol {tol.atol:g} (relative to {tol.relative_to})")
    status = "FAIL" if problems else "PASS"
    return ParityResult(label, dtype, status, worst_abs, worst_rel, "; ".join(problems))


def assert_parity(fn: Callable[..., Any], *args: Any, backends: Iterable[str | Backend] = CPU_BACKENDS,
                  dtype: str = "float64", rtol: float | None = None, atol: float | None = None,
                  relative_to: str | None = None, allow_skip: bool = True) -> list[ParityResult]:
    """:func:`check_parity`, raising :class:`ParityError` (an AssertionError) on any FAIL.

    With ``allow_skip=False`` a backend that cannot run here is a failure too. Returns the
    results, so callers can report SKIPs (with their reasons) as they wish.
    """
    results = check_parity(fn, *args, backends=backends, dtype=dtype, rtol=rtol, atol=atol, relative_to=relative_to)
    bad = [r for r in results if r.status == "FAIL" or (r.status == "SKIP" and not allow_skip)]
    if bad:
        name = getattr(fn, "__name__", "fn")
        raise ParityError(f"parity of {name} in {dtype} failed:\n  " + "\n  ".join(map(str, bad)), results)
    return results


# ---------------------------------------------------------------- gradient check


@dataclasses.dataclass
class GradcheckResult:
    """Per checked input or parameter: the largest finite-difference error, relative to the
    gradient's scale, and how it was checked ("elements" or "directions")."""

    errors: dict[str, float]
    methods: dict[str, str]
    rtol: float

    @property
    def passed(self) -> bool:
        return all(e <= self.rtol for e in self.errors.values())

    def __str__(self) -> str:
        return ", ".join(f"{k}: {self.errors[k]:.3g} ({self.methods[k]})" for k in self.errors)


def _backend_of(x: Any) -> Backend:
    """The backend (library and device) that array ``x`` lives on."""
    return resolve_target(device_of(x))


def gradcheck(layer_or_fn: Any, x: Any, *, backward: Callable[..., Any] | None = None, grad_out: Any = None,
              params: bool = True, eps: float = 1e-6, rtol: float = 1e-6, max_elements: int = 256, directions: int = 6,
              seed: int = 0) -> GradcheckResult:
    """Check analytic gradients against central finite differences, in float64.

    ``layer_or_fn``: a built :class:`~xpcnn.layers.Layer` (checks ``backward``'s input gradient
    and, with ``params``, every ``layer.grads`` entry; a container, a Residual or a whole
    Sequential, every nested layer's), or a function ``f(*inputs) -> y`` with
    ``backward(grad_y, *inputs) -> grad`` (or a tuple of grads, one per input; None skips one).
    ``x``: the input array, or a tuple of input arrays for a function; any backend, float64.

    The scalar checked is ``L = sum(grad_out * y)`` (``grad_out`` random normal by default),
    so the analytic gradient is ``backward(grad_out)``. An input of at most ``max_elements``
    elements is checked element by element, ``dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / 2 eps``,
    with error ``max |numeric - analytic| / max |analytic|``; a larger one along ``directions``
    random +-1 directions ``v``, with error ``|dL/dv - <grad, v>| / max(|<grad, v>|, ||grad||)``.
    Inputs must be at least ``eps`` away from kinks (ReLU at 0, ties in a max-pool window).

    Returns a :class:`GradcheckResult`; raises AssertionError when an error exceeds ``rtol``.
    """
    rng = np.random.default_rng(seed)
    if not callable(layer_or_fn) and not hasattr(layer_or_fn, "backward"):
        raise ArgumentTypeError(
            f"layer_or_fn: expected a built xpcnn layer or a function, got {type(layer_or_fn).__name__}"
        )
    layer = None if callable(layer_or_fn) and not hasattr(layer_or_fn, "backward") else layer_or_fn
    if layer is not None and getattr(layer, "input_shape", None) is None:
        raise NotBuiltError(f"layer_or_fn: the {type(layer).__name__} is not built (no parameters, no input shape); "
                            "build it first, in a float64 model")
    for name, value in (("eps", eps), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ArgumentError(f"{name}: expected a finite number > 0, got {value!r}")
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    for i, a in enumerate(inputs):
        if a is not None and not hasattr(a, "dtype"):
            raise ArgumentTypeError(
                f"x: expected an array or a tuple of arrays, got {type(a).__name__} at position {i}"
            )
        if a is not None and dtype_name(a.dtype) != "float64":
            raise DTypeError(f"x: input {i} is {dtype_name(a.dtype)}; finite differences need float64 "
                             "(build the layer / cast the inputs with dtype='float64')")
    if layer is None and backward is None:
        raise ArgumentError("backward: a function needs backward=(grad_y, *inputs) -> grad(s)")

    def forward(*args):
        return layer.forward(*args) if layer is not None else layer_or_fn(*args)

    y = forward(*inputs)
    g = rng.standard_normal(tuple(y.shape)) if grad_out is None else np.asarray(to_numpy(grad_out), dtype=np.float64)

    # Analytic gradients, keyed by name, plus a setter that evaluates L with one of them perturbed.
    if layer is not None:
        # A container's parameters are its sublayers' (key "block.0.weight"), a layer's its own.
        slots = {f"param {key}": (owner, name) for key, owner, name in (
            layer.named_parameters() if hasattr(layer, "named_parameters") else ((k, layer, k) for k in layer.params))}
        needs, layer.needs_input_grad = layer.needs_input_grad, True  # a Sequential's default is False
        try:
            analytic = {"x": layer.backward(to_device(g, _backend_of(y)))}
        finally:
            layer.needs_input_grad = needs
        unset = [(owner, name) for owner, name in slots.values() if name not in owner.grads] if params else []
        if unset:
            owner, name = unset[0]
            raise LayerContractError(f"{type(owner).__name__}: its backward did not set the gradient of parameter "
                                     f"{name!r}; a layer's backward must set self.grads[{name!r}]")
        if params:
            analytic.update({key: owner.grads[name] for key, (owner, name) in slots.items()})
        current = {"x": inputs[0], **{key: owner.params[name] for key, (owner, name) in slots.items()}}

        def loss_with(key, value):
            if key == "x":
                return _loss(forward(value), g)
            owner, name = slots[key]
            owner.params[name] = value
            try:
                return _loss(forward(*inputs), g)
            finally:
                owner.params[name] = current[key]
    else:
        grads = backward(to_device(g, _backend_of(y)), *inputs)
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(inputs):
            raise ShapeError(f"backward: returned {len(grads)} gradients for {len(inputs)} inputs")
        analytic = {f"input {i}": gr for i, gr in enumerate(grads) if gr is not None}
        current = {f"input {i}": a for i, a in enumerate(inputs)}

        def loss_with(key, value):
            i = int(key.split()[1])
            return _loss(forward(*inputs[:i], value, *inputs[i + 1:]), g)

    errors, methods = {}, {}
    for key, grad in analytic.items():
        base = current[key]
        host = np.array(to_numpy(base), dtype=np.float64, copy=True)
        ana = np.asarray(to_numpy(grad), dtype=np.float64)
        place = _backend_of(base)
        if ana.shape != host.shape:
            raise AssertionError(f"gradcheck: gradient of {key} has shape {ana.shape}, the input {host.shape}")

        def loss_at(delta, key=key, host=host, place=place):
            return loss_with(key, to_device(host + delta, place))

        if host.size <= max_elements:
            num = np.empty_like(host)
            for i in range(host.size):
                e = np.zeros_like(host)
                e.flat[i] = eps
                num.flat[i] = (loss_at(e) - loss_at(-e)) / (2 * eps)
            scale = float(np.abs(ana).max()) if ana.size else 0.0
            err = float(np.abs(num - ana).max()) if ana.size else 0.0
            errors[key], methods[key] = (err / scale if scale else err), "elements"
        else:
            worst = 0.0
            norm = float(np.linalg.norm(ana))
            for _ in range(directions):
                v = rng.choice(np.array([-1.0, 1.0]), size=host.shape)
                num = (loss_at(eps * v) - loss_at(-eps * v)) / (2 * eps)
                dot = float(np.sum(ana * v))
                scale = max(abs(dot), norm)
                worst = max(worst, abs(num - dot) / scale if scale else abs(num - dot))
            errors[key], methods[key] = worst, f"{directions} directions"

    result = GradcheckResult(errors, methods, rtol)
    if not result.passed:
        what = type(layer).__name__ if layer is not None else getattr(layer_or_fn, "__name__", "fn")
        raise AssertionError(f"gradcheck of {what}: finite differences disagree beyond rtol {rtol:g}: {result}")
    return result


def _loss(y: Any, g: np.ndarray) -> float:
    return float(np.sum(np.asarray(to_numpy(y), dtype=np.float64) * g))
