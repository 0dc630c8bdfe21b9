"""``python -m xpcnn parity``: prove on this machine that every backend computes what NumPy does.

For each op of :func:`xpcnn.testing.parity_cases` (forward and backward together, one
``train_step``, a short training run), each backend and each dtype, prints the largest absolute
and relative error against the NumPy float64 reference and PASS, FAIL or SKIP (with the reason a
backend cannot run here). Exits 1 when anything FAILs, 0 otherwise. Standalone:
``python -m xpcnn.parity --backend numpy --backend cupy --dtype float32``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Sequence

from .backend import load_backend
from .errors import BackendUnavailableError
from .testing import ALL_BACKENDS, DTYPES, TOLERANCES, ParityResult, Tolerance, parity_cases, run_case

_SHORT_REASON = 48
_TOLERANCE_LABELS = {"float64": "float64", "float32": "float32", "float32_training": "float32 train_run"}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``parity`` options to ``parser`` (the CLI's subparser, or a standalone one)."""
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help=f"backend to check, repeatable (default: all of {', '.join(ALL_BACKENDS)}); "
                             "a device may follow a colon: cupy:1, torch:cuda, array_api_strict:device1")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="dtype to check, repeatable (default: both)")
    parser.add_argument("--op", action="append", metavar="NAME",
                        help=f"only these ops, repeatable (default: all of {', '.join(c.name for c in parity_cases())})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    return parser


def _selected_backends(names: Sequence[str] | None) -> list[str]:
    """Validate names up front: an unknown name (or device) is a usage error, not a SKIP."""
    chosen = list(dict.fromkeys(names or ALL_BACKENDS))
    for name in chosen:
        try:
            load_backend(name)
        except BackendUnavailableError:
            pass  # reported per row as SKIP, with the reason
    return chosen


def _bound(tol: Tolerance) -> str:
    scale = "max|ref|" if tol.relative_to == "max" else "|ref|"
    return (f"{tol.atol:g} + " if tol.atol else "") + f"{tol.rtol:g} * {scale}"


def _format(value: float) -> str:
    return "-" if value != value else f"{value:.2e}"  # NaN (nothing measured) prints as "-"


def format_table(rows: list[tuple[str, ParityResult]]) -> str:
    """The table: op, backend, dtype, max abs error, max rel error, result (SKIP/FAIL with reason)."""
    header = ("op", "backend", "dtype", "max abs err", "max rel err", "result")
    body = []
    for op, r in rows:
        result = r.status
        if r.reason:
            reason = r.reason if r.status == "FAIL" else r.reason.split(";")[0]
            result += f" ({reason[:_SHORT_REASON] + '...' if len(reason) > _SHORT_REASON else reason})"
        body.append((op, r.backend, r.dtype, _format(r.max_abs), _format(r.max_rel), result))
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, tuple("-" * w for w in widths) + ("------",), *body]:
        cells = [row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the parity table for ``args`` (from :func:`add_arguments`); returns the exit code."""
    try:
        backends = _selected_backends(args.backend)
    except ValueError as e:
        print(f"xpcnn parity: {e}", file=sys.stderr)
        return 2
    dtypes = list(dict.fromkeys(args.dtype or DTYPES))
    cases = parity_cases()
    if args.op:
        unknown = sorted(set(args.op) - {c.name for c in cases})
        if unknown:
            print(f"xpcnn parity: unknown op(s) {', '.join(unknown)}; valid: {', '.join(c.name for c in cases)}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.name in args.op]

    start = time.perf_counter()
    rows: list[tuple[str, ParityResult]] = []
    for case in cases:
        per_dtype = [run_case(case, backends, dtype, seed=args.seed) for dtype in dtypes]
        rows += [(case.name, results[i]) for i in range(len(backends)) for results in per_dtype]
    # A backend that cannot run here is one row, not one per op and dtype.
    unavailable = {r.backend: r.reason for _, r in rows if r.status == "SKIP"}
    table = [row for row in rows if row[1].backend not in unavailable]
    table += [("(all)", ParityResult(b, "(all)", "SKIP", reason=reason)) for b, reason in unavailable.items()]

    print(f"xpcnn parity: {len(cases)} ops x {len(backends)} backends x {len(dtypes)} dtypes against NumPy float64 "
          f"(python {platform.python_version()}, {platform.machine()}, seed {args.seed})")
    print(format_table(table))
    counts = {s: sum(r.status == s for _, r in rows) for s in ("PASS", "FAIL", "SKIP")}
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
          f"in {time.perf_counter() - start:.1f} s")
    for backend, reason in unavailable.items():
        print(f"  SKIP {backend}: {reason}")
    for op, r in rows:
        if r.status == "FAIL":
            print(f"  FAIL {op} {r.backend} {r.dtype}: {r.reason}")
    print("rel err = max|err| / max|ref|; a row passes when every output has " + "; ".join(
        f"{_TOLERANCE_LABELS[name]}: |err| <= {_bound(tol)}" for name, tol in TOLERANCES.items()))
    return 1 if counts["FAIL"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xpcnn.parity", description=__doc__.split("\n\n")[0])
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
