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
from typing import Any, Callable, Iterable

import numpy as np

from .backend import Backend, device_of, dtype_name, library_of, load_backend, resolve_target, to_device, to_numpy
from .errors import BackendUnavailableError

__all__ = [
    "CPU_BACKENDS", "GPU_BACKENDS", "ALL_BACKENDS", "DTYPES", "TOLERANCES", "Tolerance",
    "ParityResult", "ParityError", "check_parity", "assert_parity",
    "GradcheckResult", "gradcheck",
    "OpCase", "parity_cases", "run_case", "is_gpu_backend",
]

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


# The project's tolerances (DESIGN.md, Testing). tests/tolerances.py is the single place the
# test suite reads them from; a test asserts these defaults equal it, so they cannot drift.
TOLERANCES = {
    "float64": Tolerance(rtol=1e-9, atol=0.0, relative_to="max"),
    "float32": Tolerance(rtol=1e-4, atol=1e-5, relative_to="element"),
    "float32_training": Tolerance(rtol=1e-4, atol=0.0, relative_to="max"),
}


def is_gpu_backend(spec: str) -> bool:
    """True for names that need a CUDA device: ``cupy[:i]`` and ``torch:cuda[:i]``."""
    name, _, device = str(spec).partition(":")
    return name == "cupy" or (name == "torch" and device.startswith("cuda"))


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
        return [] if ref is None and value is None else [f"{name}: got {value!r}, the reference gave {type(ref).__name__}"]
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


def check_parity(
    fn: Callable[..., Any],
    *args: Any,
    backends: Iterable[str | Backend] = CPU_BACKENDS,
    dtype: str = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    relative_to: str | None = None,
) -> list[ParityResult]:
    """Run ``fn(*args)`` on each backend in ``dtype`` and compare it with NumPy float64.

    ``args``: arrays of any backend (copied to the host first) and anything else (ints,
    tuples, None), passed through. Floating arrays are cast to ``dtype``; the reference sees
    those same (rounded) values in float64, so only the computation is compared. Integer
    arrays (labels) keep their dtype. Tolerances default to :data:`TOLERANCES` for ``dtype``.

    Returns one :class:`ParityResult` per backend; a backend that cannot run here is a SKIP
    with the reason from :class:`~xpcnn.BackendUnavailableError`. Never raises for a mismatch.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    default = TOLERANCES[dtype]
    tol = Tolerance(
        default.rtol if rtol is None else rtol,
        default.atol if atol is None else atol,
        default.relative_to if relative_to is None else relative_to,
    )
    host = [_cast(_host(a), dtype) for a in args]
    reference = _flatten_outputs(fn(*[np.array(a, dtype=np.float64) if _is_float(a) else _host(a) for a in host]))
    reference = {k: (None if v is None else to_numpy(v) if _is_array(v) else v) for k, v in reference.items()}

    results = []
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


def assert_parity(
    fn: Callable[..., Any],
    *args: Any,
    backends: Iterable[str | Backend] = CPU_BACKENDS,
    dtype: str = "float64",
    rtol: float | None = None,
    atol: float | None = None,
    relative_to: str | None = None,
    allow_skip: bool = True,
) -> list[ParityResult]:
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


def gradcheck(
    layer_or_fn: Any,
    x: Any,
    *,
    backward: Callable[..., Any] | None = None,
    grad_out: Any = None,
    params: bool = True,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    max_elements: int = 256,
    directions: int = 6,
    seed: int = 0,
) -> GradcheckResult:
    """Check analytic gradients against central finite differences, in float64.

    ``layer_or_fn``: a built :class:`~xpcnn.layers.Layer` (checks ``backward``'s input gradient
    and, with ``params``, every ``layer.grads`` entry), or a function ``f(*inputs) -> y`` with
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
    layer = None if callable(layer_or_fn) and not hasattr(layer_or_fn, "backward") else layer_or_fn
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    for i, a in enumerate(inputs):
        if a is not None and dtype_name(a.dtype) != "float64":
            raise TypeError(f"gradcheck: input {i} is {dtype_name(a.dtype)}; finite differences need float64 "
                            "(build the layer / cast the inputs with dtype='float64')")

    def forward(*args):
        return layer.forward(*args) if layer is not None else layer_or_fn(*args)

    y = forward(*inputs)
    g = rng.standard_normal(tuple(y.shape)) if grad_out is None else np.asarray(to_numpy(grad_out), dtype=np.float64)

    # Analytic gradients, keyed by name, plus a setter that evaluates L with one of them perturbed.
    if layer is not None:
        grad_x = layer.backward(to_device(g, _backend_of(y)))
        analytic = {"x": grad_x}
        if params:
            analytic.update({f"param {k}": layer.grads[k] for k in layer.params})
        originals = dict(layer.params)

        def loss_with(key, value):
            if key == "x":
                return _loss(forward(value), g)
            name = key.removeprefix("param ")
            layer.params[name] = value
            try:
                return _loss(forward(*inputs), g)
            finally:
                layer.params[name] = originals[name]

        current = {"x": inputs[0], **{f"param {k}": v for k, v in originals.items()}}
    else:
        if backward is None:
            raise TypeError("gradcheck: a function needs backward=(grad_y, *inputs) -> grad(s)")
        grads = backward(to_device(g, _backend_of(y)), *inputs)
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(inputs):
            raise ValueError(f"gradcheck: backward returned {len(grads)} gradients for {len(inputs)} inputs")
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

        def loss_at(delta):
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


# ---------------------------------------------------------------- the op catalogue


@dataclasses.dataclass(frozen=True)
class OpCase:
    """One row of the parity table: ``inputs(rng)`` draws host float64 (and integer) arrays,
    ``run(*arrays)`` computes the op's forward and backward on them and returns named outputs.
    ``training`` cases compare float32 relative to the largest value (weights drift in float32)."""

    name: str
    description: str
    inputs: Callable[[np.random.Generator], tuple]
    run: Callable[..., dict]
    training: bool = False

    def tolerance(self, dtype: str) -> Tolerance:
        return TOLERANCES["float32_training" if self.training and dtype == "float32" else dtype]


def _distinct(rng: np.random.Generator, shape: tuple[int, ...], gap: float = 0.01) -> np.ndarray:
    """Values with no ties (at least ``gap`` apart), in random order: max-pool gradients are then
    unambiguous and finite differences never cross a window's maximum."""
    n = math.prod(shape)
    return (rng.permutation(n) - n / 2).reshape(shape) * gap + rng.uniform(0, gap / 4, shape)


def _conv_case() -> OpCase:
    geom = dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))

    def inputs(rng):
        x = rng.standard_normal((2, 3, 9, 8))
        w = rng.standard_normal((4, 3, 3, 2)) / math.sqrt(3 * 3 * 2)
        b = rng.standard_normal(4)
        y_shape = (2, 4, 4, 11)
        return x, w, b, rng.standard_normal(y_shape)

    def run(x, w, b, g):
        from . import functional as F

        gx, gw, gb = F.conv2d_backward(g, x, w, **geom)
        return {"y": F.conv2d(x, w, b, **geom), "grad_x": gx, "grad_weight": gw, "grad_bias": gb}

    return OpCase("conv2d", "conv2d + backward, 2x3x9x8, 4 filters 3x2, stride (2,1), pad (1,2), dilation (2,1)", inputs, run)


def _pool_case(name: str, kernel: int, stride: int | None, padding: int, shape, out_hw, description: str) -> OpCase:
    def inputs(rng):
        return _distinct(rng, shape), rng.standard_normal((*shape[:2], *out_hw))

    def run(x, g):
        from . import functional as F

        if name.startswith("max"):
            return {"y": F.max_pool2d(x, kernel, stride, padding), "grad_x": F.max_pool2d_backward(g, x, kernel, stride, padding)}
        return {"y": F.avg_pool2d(x, kernel, stride, padding), "grad_x": F.avg_pool2d_backward(g, x, kernel, stride, padding)}

    return OpCase(name, description, inputs, run)


def _relu_case() -> OpCase:
    def inputs(rng):
        x = rng.standard_normal((2, 3, 5, 5))
        x.flat[::7] = 0.0  # exact zeros: ReLU's gradient there is 0 (PyTorch's choice)
        return x, rng.standard_normal(x.shape)

    def run(x, g):
        from . import functional as F

        return {"y": F.relu(x), "grad_x": F.relu_backward(g, x)}

    return OpCase("relu", "relu + backward on 2x3x5x5 with exact zeros", inputs, run)


def _softmax_case(log: bool) -> OpCase:
    def inputs(rng):
        z = rng.standard_normal((4, 10)) * 3
        z[0] += 800.0  # would overflow exp without the max subtraction, in any dtype
        z[1, 3] = -800.0
        return z, rng.standard_normal(z.shape)

    def run(z, g):
        from . import functional as F

        if log:
            y = F.log_softmax(z, axis=1)
            return {"y": y, "grad_z": F.log_softmax_backward(g, y, axis=1)}
        y = F.softmax(z, axis=1)
        return {"y": y, "grad_z": F.softmax_backward(g, y, axis=1)}

    name = "log_softmax" if log else "softmax"
    return OpCase(name, f"{name} + backward on 4x10 logits, one row shifted by +800", inputs, run)


def _linear_case() -> OpCase:
    def inputs(rng):
        return rng.standard_normal((4, 6)), rng.standard_normal((6, 5)) / math.sqrt(6), rng.standard_normal(5), rng.standard_normal((4, 5))

    def run(x, w, b, g):
        from . import functional as F

        gx, gw, gb = F.linear_backward(g, x, w)
        return {"y": F.linear(x, w, b), "grad_x": gx, "grad_weight": gw, "grad_bias": gb}

    return OpCase("linear", "linear + backward, 4x6 @ 6x5 + 5", inputs, run)


def _cross_entropy_case() -> OpCase:
    def inputs(rng):
        z = rng.standard_normal((5, 10)) * 3
        z[2] -= 700.0
        return z, rng.integers(0, 10, 5)

    def run(z, labels):
        from . import functional as F

        loss, grad = F.cross_entropy_with_grad(z, labels)
        return {"loss": loss, "grad_logits": grad, "loss (unfused)": F.cross_entropy(z, labels),
                "grad (unfused)": F.cross_entropy_backward(z, labels)}

    return OpCase("cross_entropy", "softmax cross-entropy (mean) + gradient, 5x10 logits, one row shifted by -700", inputs, run)


def _conv_transpose_case() -> OpCase:
    geom = dict(stride=2, padding=(1, 0), output_padding=1, groups=2)

    def inputs(rng):
        x = rng.standard_normal((2, 4, 5, 4))
        w = rng.standard_normal((4, 3, 3, 2)) / math.sqrt(3 * 3 * 2)
        return x, w, rng.standard_normal(6), rng.standard_normal((2, 6, 10, 9))

    def run(x, w, b, g):
        from . import functional as F

        gx, gw, gb = F.conv_transpose2d_backward(g, x, w, **geom)
        return {"y": F.conv_transpose2d(x, w, b, **geom), "grad_x": gx, "grad_weight": gw, "grad_bias": gb}

    return OpCase("conv_transpose2d", "conv_transpose2d + backward, 2x4x5x4, groups 2, 3x2 kernel, stride 2, "
                  "pad (1,0), output_padding 1", inputs, run)


def _global_avg_pool_case() -> OpCase:
    def inputs(rng):
        return rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3))

    def run(x, g):
        from . import functional as F

        return {"y": F.global_avg_pool2d(x), "grad_x": F.global_avg_pool2d_backward(g, x)}

    return OpCase("global_avg_pool2d", "global_avg_pool2d + backward, 2x3x5x4 -> 2x3", inputs, run)


def _elementwise_case(name: str, backward_takes_output: bool) -> OpCase:
    def inputs(rng):
        x = rng.standard_normal((2, 3, 4, 4)) * 3
        x.flat[::5] = 0.0
        return x, rng.standard_normal(x.shape)

    def run(x, g):
        from . import functional as F

        y = getattr(F, name)(x)
        return {"y": y, "grad_x": getattr(F, f"{name}_backward")(g, y if backward_takes_output else x)}

    return OpCase(name, f"{name} + backward on 2x3x4x4 with exact zeros", inputs, run)


def _batch_norm_case() -> OpCase:
    def inputs(rng):
        c = 3
        return (rng.standard_normal((4, c, 3, 3)) * 2 + 1, rng.standard_normal(c), rng.standard_normal(c),
                rng.standard_normal(c), rng.uniform(0.5, 2.0, c), rng.standard_normal((4, c, 3, 3)))

    def run(x, w, b, mean, var, g):
        from . import functional as F

        out = {}
        for mode, training in (("train", True), ("eval", False)):
            y, saved, new_mean, new_var = F.batch_norm(x, w, b, mean, var, training=training)
            gx, gw, gb = F.batch_norm_backward(g, x, w, saved, training=training)
            out.update({f"{mode} y": y, f"{mode} running_mean": new_mean, f"{mode} running_var": new_var,
                        f"{mode} grad_x": gx, f"{mode} grad_weight": gw, f"{mode} grad_bias": gb})
        return out

    return OpCase("batch_norm", "batch_norm + backward on 4x3x3x3, training (with running-stat update) and inference",
                  inputs, run)


def _dropout_cases() -> list[OpCase]:
    def inputs(rng):
        return rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 5, 5))

    def run_mask(x, g):
        from . import functional as F

        return {"mask": F.dropout_mask(x, 0.3, seed=2024, counter=7)}

    def run(x, g):
        from . import functional as F

        mask = F.dropout_mask(x, 0.3, seed=2024, counter=7)
        return {"y": F.dropout(x, mask), "grad_x": F.dropout_backward(g, mask)}

    return [OpCase("dropout_mask", "dropout_mask p=0.3, seed 2024, counter 7: the same bits on every backend", inputs,
                   run_mask),
            OpCase("dropout", "dropout + backward with that mask on 2x3x5x5", inputs, run)]


def _small_model():
    from . import layers
    from .model import Sequential

    return Sequential([
        layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
        layers.Conv2D(6, 3), layers.ReLU(), layers.AvgPool2D(2),
        layers.Flatten(), layers.Dense(10),
    ])


_MODEL_INPUT = (1, 12, 12)


def _model_on(x, weights):
    """The small test model built on x's backend, device and dtype, with ``weights``."""
    model = _small_model().build(_MODEL_INPUT, seed=0, dtype=dtype_name(x.dtype), backend=_backend_of(x))
    model.set_weights(weights)
    return model


def _initial_weights() -> list[np.ndarray]:
    return [to_numpy(w) for w in _small_model().build(_MODEL_INPUT, seed=0, dtype="float64", backend="numpy").get_weights()]


def _train_step_case() -> OpCase:
    def inputs(rng):
        return (rng.uniform(0, 1, (8, *_MODEL_INPUT)), rng.integers(0, 10, 8), *_initial_weights())

    def run(x, labels, *weights):
        from . import optim

        model = _model_on(x, weights)
        loss = model.train_step(x, labels, optim.SGD(lr=0.1, momentum=0.9))
        out = {"loss": loss}
        for key, layer, name in model.named_parameters():
            out[f"{key} grad"] = layer.grads[name]
            out[f"{key} updated"] = layer.params[name]
        return out

    return OpCase("train_step", "Sequential.train_step on 8 images 1x12x12: conv, relu, max pool, conv, relu, avg pool, dense; SGD momentum", inputs, run)


def _train_run_case(steps: int = 5) -> OpCase:
    def inputs(rng):
        return (rng.uniform(0, 1, (steps, 8, *_MODEL_INPUT)), rng.integers(0, 10, (steps, 8)), *_initial_weights())

    def run(xs, labels, *weights):
        from . import optim

        model = _model_on(xs, weights)
        opt = optim.SGD(lr=0.05, momentum=0.9)
        out = {f"loss {i}": model.train_step(xs[i, ...], labels[i, ...], opt) for i in range(steps)}
        out.update({key: layer.params[name] for key, layer, name in model.named_parameters()})
        return out

    return OpCase("train_run", f"{steps} SGD-momentum train_steps on the train_step model: losses and final weights",
                  inputs, run, training=True)


def parity_cases() -> list[OpCase]:
    """Every op (forward and backward), one training step and a short training run."""
    return [
        _conv_case(),
        _pool_case("avg_pool2d", 3, 2, 1, (2, 3, 9, 8), (5, 4), "avg_pool2d + backward, kernel 3, stride 2, pad 1 (zeros counted)"),
        _pool_case("avg_pool2d_tiled", 2, None, 0, (2, 3, 9, 8), (4, 4), "avg_pool2d + backward, kernel 2 = stride (non-overlapping windows), last row dropped"),
        _pool_case("max_pool2d", 3, 2, 1, (2, 3, 9, 8), (5, 4), "max_pool2d + backward, kernel 3, stride 2, pad 1 (-inf)"),
        _relu_case(),
        _softmax_case(log=False),
        _softmax_case(log=True),
        _linear_case(),
        _cross_entropy_case(),
        _conv_transpose_case(),
        _global_avg_pool_case(),
        _elementwise_case("tanh", backward_takes_output=True),
        _elementwise_case("sigmoid", backward_takes_output=True),
        _elementwise_case("leaky_relu", backward_takes_output=False),
        _elementwise_case("gelu", backward_takes_output=False),
        _batch_norm_case(),
        *_dropout_cases(),
        _train_step_case(),
        _train_run_case(),
    ]


def run_case(case: OpCase, backends: Iterable[str | Backend], dtype: str, *, seed: int = 0,
             tolerance: Tolerance | None = None) -> list[ParityResult]:
    """:func:`check_parity` of one :class:`OpCase` with inputs drawn from ``default_rng(seed)``."""
    tol = tolerance or case.tolerance(dtype)
    args = case.inputs(np.random.default_rng(seed))
    return check_parity(case.run, *args, backends=backends, dtype=dtype,
                        rtol=tol.rtol, atol=tol.atol, relative_to=tol.relative_to)
