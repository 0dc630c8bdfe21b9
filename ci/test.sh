#!/usr/bin/env bash
# CI: in a fresh virtual environment, run the README's test command (the last line of the first
# bash block under "## Quick start"), so CI tests exactly what a newcomer types; then ruff (the
# `test` extra that command installs includes it, configured in pyproject.toml's [tool.ruff]);
# then ci/size.py: code lines per module, failing over the package's line budget.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=$(awk '/^## Quick start/{q=1} q&&/^```bash/{b=1;next} b&&/^```/{exit} b&&NF{last=$0} END{print last}' README.md)
if [ -z "$cmd" ]; then echo "ci/test.sh: no test command found in README.md's Quick start" >&2; exit 2; fi
python3 -m venv .ci-venv
# shellcheck disable=SC1091
source .ci-venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
echo "ci/test.sh: running the README's test command: $cmd"
eval "$cmd"

echo "ci/test.sh: ruff $(python -m ruff --version | cut -d' ' -f2)"
python -m ruff check --no-cache .

# Code lines per module (no blank, comment or docstring lines); fails over the package's budget.
echo "ci/test.sh: size of the package"
python ci/size.py
