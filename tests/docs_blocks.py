"""The runnable parts of a page in docs/: its ```python blocks, in order."""

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``."""
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


def run_blocks(page: str, namespace: dict) -> None:
    """Run the blocks of ``docs/<page>`` in order, in one namespace (they build on each other)."""
    for block in python_blocks(page):
        exec(compile(block, f"docs/{page}", "exec"), namespace)
