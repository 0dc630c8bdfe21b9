"""Every numerical tolerance the tests use, in one place, stated per dtype (DESIGN.md, Testing).

Never loosen one to make a test pass: a failure here is a finding."""

# float64: ops against PyTorch autograd and whole-training parity between backends.
FLOAT64_RTOL = 1e-9
# float32: one op against the float64 reference.
FLOAT32_RTOL = 1e-4
FLOAT32_ATOL = 1e-5
# float32 short training runs: error relative to the largest weight.
FLOAT32_TRAINING_RTOL = 1e-4
# Central finite differences in float64 (step 1e-6): truncation + rounding ~1e-8 relative.
FINITE_DIFF_STEP = 1e-6
FINITE_DIFF_RTOL = 1e-6
# The central difference's own noise floor: each evaluation of the scalar f is off by a few ulps
# of the magnitude it was computed from (e.g. sum |y * g|), so (f(x+hv) - f(x-hv)) / 2h cannot
# resolve a derivative below ~ULPS * eps * magnitude / 2h (~1e-9 * magnitude here). Added to the
# bound, never instead of FINITE_DIFF_RTOL.
FINITE_DIFF_ROUNDING_ULPS = 8
# The notebook-equivalence test: per-step losses of xpcnn vs a loop implementation (float64).
NOTEBOOK_LOSS_ATOL = 1e-9


def rtol_for(dtype_name: str) -> float:
    return {"float64": FLOAT64_RTOL, "float32": FLOAT32_RTOL}[dtype_name]


def atol_for(dtype_name: str) -> float:
    return {"float64": 0.0, "float32": FLOAT32_ATOL}[dtype_name]
