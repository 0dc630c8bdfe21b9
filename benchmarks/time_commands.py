"""Wall-clock time of README commands, each run several times in a fresh process.

    python benchmarks/time_commands.py                       # python -m xpcnn train, 3 runs
    python benchmarks/time_commands.py --runs 1 -- python -m pytest -q

For each run: the wall time of the whole command (interpreter start, imports, data, training,
evaluation) and the last line it printed; the machine (CPU model, CPU count) and the load
average before and after, since on a shared machine other processes' work shows up in the
figures. Appends to ``--out`` (default benchmarks/results/command_times.txt) and prints the same.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "command_times.txt"))
    parser.add_argument("command", nargs="*", default=[sys.executable, "-m", "xpcnn", "train"])
    args = parser.parse_args(argv)
    shown = shlex.join(["python" if a == sys.executable else a for a in args.command])
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M')}: {shown}, {args.runs} run(s), each in a fresh process",
             f"# {harness.cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
             f"load average (1, 5, 15 min) before: {load()}"]
    print("\n".join(lines), flush=True)
    seconds = []
    for i in range(args.runs):
        start = time.perf_counter()
        done = subprocess.run(args.command, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        output = [line for line in done.stdout.splitlines() if line.strip()]
        last = " | ".join(line for line in output if line.startswith(("held-out accuracy", "time:")))
        lines.append(f"run {i + 1}: {seconds[-1]:.1f} s wall, exit {done.returncode}; "
                     f"{last or (output[-1] if output else '(no output)')}")
        print(lines[-1], flush=True)
    lines.append(f"range: {min(seconds):.1f}-{max(seconds):.1f} s wall; load average after: {load()}")
    print(lines[-1])
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
