"""Each fast form's figure in docs/performance.md is measured against this checkout with one patch
of benchmarks/without/ applied: every patch must still apply, or its figure could no longer be
made again."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATCHES = sorted((ROOT / "benchmarks" / "without").glob("*.patch"))


def test_every_kept_form_has_a_patch_named_in_the_docs():
    performance = (ROOT / "docs" / "performance.md").read_text()
    assert PATCHES and all(patch.name in performance for patch in PATCHES)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.stem)
def test_the_patch_applies_to_this_checkout(patch):
    done = subprocess.run(["git", "apply", "--check", str(patch)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
