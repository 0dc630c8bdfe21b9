"""The README's "Using the library" example, taken from README.md as it stands, runs twice in the
same directory: the second run resumes from the first run's checkpoints instead of failing."""

import contextlib
import io
import pathlib
import re

import pytest

import xpcnn

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    """The first ```python block under "## Using the library"."""
    section = README.read_text().split("## Using the library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no python block under 'Using the library'"
    return match.group(1)


def test_readme_library_example_runs_twice(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    pytest.importorskip("torch")  # the example loads the saved model on the torch backend
    code = library_example()
    assert "epochs=10" in code and 'checkpoint_dir="runs/ckpt"' in code and 'resume_from="runs/ckpt"' in code
    code = code.replace("epochs=10", "epochs=2")  # keep the test fast; nothing else changes

    real = xpcnn.datasets.load_data

    def small(*args, **kwargs):  # 256 training and 100 held-out digits of the same split
        (x, y), (xt, yt) = real(*args, **kwargs)
        return (x[:256], y[:256]), (xt[:100], yt[:100])

    monkeypatch.setattr(xpcnn.datasets, "load_data", small)
    monkeypatch.chdir(tmp_path)
    printed = []
    for _ in range(2):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {"__name__": "readme"})
        printed.append(out.getvalue())
    assert sorted(p.name for p in (tmp_path / "runs" / "ckpt").iterdir()) == [
        "ckpt-epoch000001.safetensors", "ckpt-epoch000002.safetensors"]
    # the first run trains two epochs; the second finds them done and evaluates the same weights
    assert printed[0].count("epoch ") == 2 and printed[1].count("epoch ") == 0, printed
    evaluation = [text.strip().splitlines()[-1] for text in printed]
    assert evaluation[0].startswith("{'loss': ") and evaluation[0] == evaluation[1]
    assert (tmp_path / "mnist.safetensors").exists()
