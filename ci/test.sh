#!/usr/bin/env bash
# Runs the README's test command (the last line of the first bash block under "## Quick start")
# in a fresh virtual environment, so CI tests exactly what a newcomer types.
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
