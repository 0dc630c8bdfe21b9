"""The suite's Hypothesis profiles do what tests/conftest.py says: the default one replays the
same examples on every run, XPCNN_HYPOTHESIS=explore draws new ones, and no test module pins
``derandomize`` (which would override the profile)."""

import ast
import os
import pathlib
import subprocess
import sys

TESTS = pathlib.Path(__file__).resolve().parent

PROBE = """
import tests.conftest  # loads the profile chosen by XPCNN_HYPOTHESIS
from hypothesis import given, settings, strategies as st

drawn = []

@settings(max_examples=20, database=None)
@given(st.integers(0, 10**9))
def probe(n):
    drawn.append(n)

probe()
print(sorted(set(drawn)))
"""


def drawn(explore: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XPCNN_HYPOTHESIS"}
    if explore:
        env["XPCNN_HYPOTHESIS"] = "explore"
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=TESTS.parent,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_default_profile_repeats_and_explore_profile_explores():
    assert drawn(explore=False) == drawn(explore=False)
    assert drawn(explore=True) != drawn(explore=True)


def test_no_test_module_pins_derandomize():
    pinned = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "conftest.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(k.arg == "derandomize" for k in node.keywords):
                pinned.append(f"{path.name}:{node.lineno}")
    assert not pinned, f"derandomize= overrides the conftest profile (XPCNN_HYPOTHESIS=explore) at {pinned}"
