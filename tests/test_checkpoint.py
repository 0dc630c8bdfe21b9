"""Checkpoints: contents, pruning, exact resume (also after a SIGKILL mid-write), damaged files,
and the NaN guard leaving the last good checkpoint intact."""

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpcnn
from xpcnn import checkpoint, layers, optim
from xpcnn.callbacks import LambdaCallback
from xpcnn.errors import ModelFileError, NonFiniteError

ROOT = Path(__file__).resolve().parents[1]


def tiny_model():
    return xpcnn.Sequential(
        [layers.Conv2D(4, 3), layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10)]
    )


def tiny_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 10, 10)), rng.integers(0, 10, n)


def train(epochs, directory=None, resume=False, optimizer=None, n=96):
    x, y = tiny_data(n)
    model = tiny_model()
    if not resume:
        model.build((1, 10, 10), seed=3, dtype="float64", backend="numpy")
    history = model.fit(x, y, epochs=epochs, batch_size=16, seed=5, verbose=0, validation_data=tiny_data(32, 1),
                        optimizer=optimizer() if optimizer and not resume else None,
                        checkpoint_dir=directory, resume_from=directory if resume else None)
    return model, history


def assert_same_weights(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert wa.dtype == wb.dtype and np.array_equal(wa, wb)


@pytest.mark.parametrize("make_optimizer", [
    lambda: optim.Adam(1e-2), lambda: optim.SGD(0.1, momentum=0.9, nesterov=True)], ids=["adam", "sgd-nesterov"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, make_optimizer):
    reference, ref_history = train(5, optimizer=make_optimizer)
    train(2, tmp_path, optimizer=make_optimizer)
    resumed, history = train(5, tmp_path, resume=True)
    assert type(resumed.optimizer).__name__ == type(reference.optimizer).__name__
    assert resumed.optimizer.hyper() == reference.optimizer.hyper()
    assert resumed.optimizer.steps == reference.optimizer.steps
    assert_same_weights(resumed, reference)
    assert history.history == ref_history.history and history.epoch == ref_history.epoch


def test_checkpoint_contents_and_pruning(tmp_path):
    model, _ = train(5, tmp_path, optimizer=lambda: optim.Adam(1e-2))
    assert [epoch for epoch, _ in checkpoint.list_checkpoints(tmp_path)] == [3, 4, 5]
    assert sorted(os.listdir(tmp_path)) == [checkpoint.checkpoint_name(e) for e in (3, 4, 5)]
    ckpt = checkpoint.latest(tmp_path)
    assert ckpt.epoch == 5 and ckpt.optimizer_record["class"] == "Adam"
    assert ckpt.optimizer_record["steps"] == model.optimizer.steps == 5 * 6
    assert set(ckpt.optimizer_tensors) == {
        f"optimizer/{k}/{s}" for k in ("0.weight", "0.bias", "4.weight", "4.bias") for s in "mv"
    }
    assert len(ckpt.history["loss"]) == 5 and len(ckpt.history["val_accuracy"]) == 5
    assert ckpt.fit_args == {"batch_size": 16, "shuffle": True, "seed": 5, "initial_lr": 1e-2}
    # a checkpoint is a model file too, and a directory loads its newest checkpoint
    for source in (ckpt.path, tmp_path):
        assert_same_weights(xpcnn.load(source, backend="numpy"), model)


def test_checkpoint_dir_must_not_hold_another_run(tmp_path):
    train(1, tmp_path)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(2, tmp_path)


def test_resume_needs_a_checkpoint(tmp_path):
    x, y = tiny_data()
    with pytest.raises(ModelFileError, match="no valid checkpoint"):
        tiny_model().fit(x, y, epochs=2, verbose=0, resume_from=tmp_path)


def test_resume_from_the_checkpoint_dir_itself_starts_then_continues(tmp_path):
    # the same call starts a run in an empty directory and continues it when run again
    first, _ = train(1, tmp_path, resume=True)
    assert [e for e, _ in checkpoint.list_checkpoints(tmp_path)] == [1]
    again, history = train(2, tmp_path, resume=True)
    assert [e for e, _ in checkpoint.list_checkpoints(tmp_path)] == [1, 2] and len(history.history["loss"]) == 2
    straight, _ = train(2, tmp_path / "straight", resume=True)  # 2 epochs in one call, same start
    assert_same_weights(again, straight)


def test_resume_refuses_another_architecture(tmp_path):
    train(1, tmp_path)
    x, y = tiny_data()
    other = xpcnn.Sequential(
        [layers.Conv2D(5, 3), layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10)]
    )
    with pytest.raises(ModelFileError, match="different architecture"):
        other.fit(x, y, epochs=2, verbose=0, resume_from=tmp_path)


def test_resume_refuses_another_optimizer_class(tmp_path):
    train(1, tmp_path, optimizer=lambda: optim.Adam(1e-2))
    x, y = tiny_data()
    with pytest.raises(ModelFileError, match="Adam state"):
        tiny_model().fit(x, y, epochs=2, verbose=0, optimizer=optim.SGD(0.1), resume_from=tmp_path)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    reference, _ = train(3)
    train(3, tmp_path)
    newest = tmp_path / checkpoint.checkpoint_name(3)
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        assert checkpoint.latest(tmp_path).epoch == 2
    with pytest.warns(UserWarning):
        resumed, _ = train(3, tmp_path, resume=True)
    assert_same_weights(resumed, reference)


def test_nothing_left_to_train(tmp_path):
    model, _ = train(2, tmp_path)
    again, history = train(2, tmp_path, resume=True)
    assert_same_weights(again, model)
    assert len(history.history["loss"]) == 2


@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path):
    x, y = tiny_data()
    model = tiny_model().build((1, 10, 10), seed=3, backend="numpy")

    def poison(epoch, logs):
        if epoch == 2:  # after two good epochs were checkpointed
            model.layers[4].params["weight"] = model.layers[4].params["weight"] * np.float32(1e38)

    with pytest.raises(NonFiniteError, match="epoch 3, step 1") as info:
        model.fit(x, y, epochs=4, batch_size=16, verbose=0, checkpoint_dir=tmp_path,
                  callbacks=[LambdaCallback(on_epoch_begin=poison)])
    assert "layer 4 (Dense)" in str(info.value)
    assert [e for e, _ in checkpoint.list_checkpoints(tmp_path)] == [1, 2]
    good = checkpoint.latest(tmp_path)
    assert good.epoch == 2 and all(np.isfinite(w).all() for w in good.tensors.values())


# ---------------------------------------------------------------- SIGKILL while writing

CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from tests.test_checkpoint import train
    import xpcnn.fileformat

    real_fsync = os.fsync
    writes = []

    def fsync_then_hang(fd):
        # The checkpoint of epoch {hang_at} is written (flushed, not yet fsynced nor renamed): say so and
        # wait to be killed, so the parent's SIGKILL lands in the middle of the atomic write.
        real_fsync(fd)
        if os.path.basename(os.readlink(f"/proc/self/fd/{{fd}}")).startswith(".ckpt-epoch"):
            writes.append(fd)
            if len(writes) == {hang_at}:
                print("WRITING", flush=True)
                time.sleep(60)

    xpcnn.fileformat.os.fsync = fsync_then_hang
    train({epochs}, {directory!r})
    print("FINISHED", flush=True)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")
def test_sigkill_during_checkpoint_write_then_exact_resume(tmp_path):
    epochs, hang_at = 5, 3
    directory = tmp_path / "ckpt"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), hang_at=hang_at, epochs=epochs, directory=str(directory)))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, child.kill)  # never hang the suite if the child misbehaves
    watchdog.start()
    try:
        line = child.stdout.readline()
        assert line.strip() == "WRITING", f"child said {line!r}; stderr: {child.stderr.read()}"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    names = sorted(os.listdir(directory))
    # epochs 1 and 2 complete, epoch 3 only as a stray temporary file
    assert names[:1] and names[0].startswith(".ckpt-epoch000003.safetensors.") and names[0].endswith(".tmp")
    assert names[1:] == [checkpoint.checkpoint_name(1), checkpoint.checkpoint_name(2)]

    resumed, _ = train(epochs, str(directory), resume=True)
    reference, _ = train(epochs)
    assert_same_weights(resumed, reference)
    assert [e for e, _ in checkpoint.list_checkpoints(directory)] == [3, 4, 5]
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]  # the stray file was cleaned up


# ---------------------------------------------------------------- damaged checkpoint metadata

@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ck")
    train(1, directory, optimizer=lambda: optim.SGD(0.1, momentum=0.5))
    return directory / checkpoint.checkpoint_name(1)


def rewrite_metadata(path, target, **changes):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    target.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])
    return target


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["epoch", "optimizer", "rng", "history", "fit"]), value=json_values)
def test_damaged_checkpoint_metadata_is_refused_cleanly(checkpoint_file, tmp_path, key, value):
    path = rewrite_metadata(checkpoint_file, tmp_path / checkpoint.checkpoint_name(1), **{key: json.dumps(value)})
    try:
        ckpt = checkpoint.read(path)
    except ModelFileError:
        return
    ckpt.make_rng()
    ckpt.make_optimizer()


@pytest.mark.parametrize("key, value, match", [
    ("optimizer", '{"class": "Evil", "hyper": {}, "steps": 1, "state": {}}', "unknown class"),
    ("optimizer", '{"class": "SGD", "hyper": {"lr": -1}, "steps": 1, "state": {}}', "hyper"),
    ("optimizer", '{"class": "SGD", "hyper": {"lr": 0.1, "momentum": 0.9}, "steps": 1, '
                  '"state": {"9.weight": ["momentum"]}}', "is missing|not a parameter"),
    ("optimizer", '{"class": "SGD", "hyper": {"lr": 0.1}, "steps": 1, "state": {"0.weight": ["m", "v"]}}',
     r"\['m', 'v'\] is not the state of SGD"),
    ("optimizer", '{"class": "SGD", "hyper": {"lr": 1' + '0' * 400 + '}, "steps": 1, "state": {}}', "optimizer hyper"),
    ("epoch", "\u00b9", "epoch: expected a positive int"),
    ("history", '{"loss": [1' + '0' * 400 + ']}', "history"),
    ("fit", '{"initial_lr": "abc"}', "fit: expected an object; initial_lr"),
    ("rng", '{"bit_generator": "MT19937", "state": {}}', "PCG64"),
    ("rng", '{"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}, "has_uint32": 0, "uinteger": 0}', "rng"),
    ("epoch", "0", "epoch"),
    ("history", '{"loss": [1, 2, 3]}', "history"),
    ("class_names", '["a", "a"]', "distinct non-empty strings"),
    ("class_names", '["a", ""]', "distinct non-empty strings"),
])
def test_specific_checkpoint_defects(checkpoint_file, tmp_path, key, value, match):
    path = rewrite_metadata(checkpoint_file, tmp_path / "c.safetensors", **{key: value})
    with pytest.raises(ModelFileError, match=match):
        # file-level defects fail in read; those that need the model (a state key naming no
        # parameter of it) fail when restoring into the model
        checkpoint.read(path).restore(tiny_model())
