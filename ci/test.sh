#!/usr/bin/env bash
# CI: in a fresh virtual environment, run the README's test command (the last line of the first
# bash block under "## Quick start"), so CI tests exactly what a newcomer types; then ruff (the
# `test` extra that command installs includes it, configured in pyproject.toml's [tool.ruff]);
# then print the size of the numeric core, so its growth shows in every CI log.
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

# Lines of the numeric core: all lines, and code lines (no blank, comment or docstring lines).
echo "ci/test.sh: size of the numeric core"
python - xpcnn/backend xpcnn/functional xpcnn/layers.py xpcnn/model.py xpcnn/optim.py <<'EOF'
import io
import sys
import tokenize
from pathlib import Path

SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def code_lines(text):
    lines, previous = set(), None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        # A string that starts a statement is a docstring (or a bare string): not code.
        docstring = tok.type == tokenize.STRING and previous in (None, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
        if tok.type not in SKIP and not docstring:
            lines.update(range(tok.start[0], tok.end[0] + 1))
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            previous = tok.type
    return len(lines)


files = []
for arg in sys.argv[1:]:
    path = Path(arg)
    if not path.exists():
        sys.exit(f"ci/test.sh: {arg} is part of the numeric core but does not exist; update ci/test.sh")
    files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
total = code = 0
for path in files:
    text = path.read_text()
    n, c = len(text.splitlines()), code_lines(text)
    total, code = total + n, code + c
    print(f"{n:7d} {c:7d}  {path}")
print(f"{total:7d} {code:7d}  total (lines, code lines)")
EOF
