"""Code lines of the package, per module: no blank, comment or docstring lines.

Fails when ``xpcnn/`` exceeds its budget or one file exceeds the per-file limit, so growth shows
in every CI log and has to be decided, not drifted into."""

from __future__ import annotations

import io
import sys
import tokenize
from pathlib import Path

BUDGET = 8000  # code lines in xpcnn/ as a whole
PER_FILE = 400  # code lines in any one module
SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def code_lines(text: str) -> int:
    lines, previous = set(), None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        # A string that starts a statement is a docstring (or a bare string): not code.
        docstring = tok.type == tokenize.STRING and previous in (None, tokenize.NEWLINE, tokenize.INDENT,
                                                                 tokenize.DEDENT)
        if tok.type not in SKIP and not docstring:
            lines.update(range(tok.start[0], tok.end[0] + 1))
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            previous = tok.type
    return len(lines)


def main(root: Path) -> int:
    sizes = {path: code_lines(path.read_text()) for path in sorted(root.rglob("*.py"))}
    for path, count in sorted(sizes.items(), key=lambda item: item[1]):
        print(f"{count:6d}  {path.relative_to(root.parent)}")
    total = sum(sizes.values())
    print(f"{total:6d}  total code lines (budget {BUDGET}, at most {PER_FILE} per file)")
    too_big = [f"{path.relative_to(root.parent)}: {count}" for path, count in sizes.items() if count > PER_FILE]
    if too_big or total > BUDGET:
        print(f"ci/size.py: over budget: total {total} (budget {BUDGET}); files over {PER_FILE}: {too_big or 'none'}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parents[1] / "xpcnn"))
