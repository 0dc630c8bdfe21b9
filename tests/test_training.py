"""fit / evaluate: learning, history, input rules, backends, callbacks, progress output, NaN guard."""

import io as stdio
import re

import numpy as np
import pytest

import xpcnn
from tests.tolerances import FLOAT64_RTOL
from xpcnn import layers, optim, training, zoo
from xpcnn.callbacks import Callback, LambdaCallback, NotebookLogger, ProgressBar
from xpcnn.datasets.feed import ArrayFeed
from xpcnn.errors import (
    ArgumentError,
    ArgumentTypeError,
    DataError,
    DTypeError,
    LabelError,
    NonFiniteError,
    NotBuiltError,
    ShapeError,
)


def small_model():
    return xpcnn.Sequential(
        [layers.Conv2D(4, 3), layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(3)]
    )


def blobs(n=120, seed=0, dtype="float64"):
    """Three learnable classes: a bright square in one of three places on 10x10 noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 1, 10, 10)) * 0.3
    for i, label in enumerate(y):
        x[i, 0, 3 * label : 3 * label + 4, 2:6] += 0.7
    return x.astype(dtype), y


def built(dtype="float64", backend="numpy", seed=0):
    return small_model().build((1, 10, 10), seed=seed, dtype=dtype, backend=backend)


def test_fit_learns_and_returns_history():
    x, y = blobs()
    xv, yv = blobs(60, seed=1)
    model = built()
    history = model.fit(x, y, epochs=4, batch_size=16, optimizer=optim.Adam(1e-2), validation_data=(xv, yv), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2, 3] and all(len(v) == 4 for v in history.history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] >= 0.9
    result = model.evaluate(xv, yv, batch_size=7)
    assert result["accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert result["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-12)


def test_evaluate_matches_a_direct_computation():
    x, y = blobs(50)
    model = built()
    logits = xpcnn.to_numpy(model(x))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    result = training.evaluate(model, x, y, batch_size=8)
    assert result["loss"] == pytest.approx(-log_p[np.arange(50), y].mean(), rel=1e-12)
    assert result["accuracy"] == np.mean(logits.argmax(axis=1) == y)


def test_epoch_loss_is_the_mean_of_the_batch_losses_and_order_follows_the_seed():
    x, y = blobs(40)
    seen, losses = [], []

    class Spy(Callback):
        def on_batch_end(self, step, logs):
            losses.append((logs["loss"], logs["size"]))

    model = built()
    original = ArrayFeed.batch

    def spy_batch(self, idx, **kwargs):
        seen.append(idx.copy())
        return original(self, idx, **kwargs)

    ArrayFeed.batch = spy_batch
    try:
        history = model.fit(x, y, epochs=2, batch_size=16, seed=11, callbacks=[Spy()], verbose=0)
    finally:
        ArrayFeed.batch = original
    rng = np.random.default_rng(11)
    expected = [p[i : i + 16] for p in (rng.permutation(40), rng.permutation(40)) for i in (0, 16, 32)]
    assert all(np.array_equal(a, b) for a, b in zip(seen, expected)) and len(seen) == 6
    first = sum(loss * size for loss, size in losses[:3]) / 40
    assert history["loss"][0] == pytest.approx(first, rel=1e-12)


def test_unbuilt_model_is_built_from_the_data():
    x, y = blobs(30, dtype="float32")
    model = small_model()
    model.fit(x, y, epochs=1, seed=4, verbose=0)
    assert model.input_shape == (1, 10, 10) and model.dtype == "float32"
    assert isinstance(model.optimizer, optim.Adam) and model.optimizer.lr == training.DEFAULT_LR


def test_unbuilt_model_refuses_uint8_before_building():
    x, y = blobs(10)
    model = small_model()
    with pytest.raises(DTypeError, match="preprocess"):
        model.fit((x[:, 0] * 255).astype(np.uint8), y, verbose=0)
    assert not model.built


def test_optimizer_is_kept_between_fits():
    x, y = blobs(32)
    model = built()
    opt = optim.SGD(0.1, momentum=0.9)
    model.fit(x, y, epochs=1, batch_size=16, optimizer=opt, verbose=0)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert model.optimizer is opt and opt.steps == 4


def test_float64_data_is_cast_for_a_float32_model():
    x, y = blobs(32)
    model = built("float32")
    model.fit(x, y, epochs=1, verbose=0)
    assert all(w.dtype == np.float32 for w in model.get_weights())
    # the same run on data cast up front: the per-batch cast is the only difference, so bit-identical
    same = built("float32")
    same.fit(x.astype(np.float32), y, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.evaluate(x, y) == same.evaluate(x.astype(np.float32), y)


@pytest.mark.parametrize("target", ["array_api_strict", "torch"])
def test_same_training_on_every_backend(target):
    """Same seed, same shuffles, same steps: float64 weights agree to FLOAT64_RTOL; host data move
    batch by batch."""
    try:
        xpcnn.backend.load_backend(target)
    except xpcnn.BackendUnavailableError as e:
        pytest.skip(str(e))
    x, y = blobs(48)
    ref = built()
    ref.fit(x, y, epochs=2, batch_size=16, optimizer=optim.Adam(1e-2), seed=2, verbose=0)
    other = built(backend=target)
    other.fit(x, y, epochs=2, batch_size=16, optimizer=optim.Adam(1e-2), seed=2, verbose=0)
    assert other.backend.name == target
    for a, b in zip(ref.get_weights(), other.get_weights()):
        np.testing.assert_allclose(xpcnn.to_numpy(b), a, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * np.abs(a).max())
    # data on the model's backend stay there; another backend's are refused, never moved silently
    xs = xpcnn.to_device(x, target)
    ys = xpcnn.to_device(y, target)
    assert other.evaluate(xs, ys) == pytest.approx(other.evaluate(x, y), rel=1e-12)
    with pytest.raises(xpcnn.BackendMismatchError, match=f"x is a {target} array"):
        ref.evaluate(xs, ys)


# ---------------------------------------------------------------- input rules


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda x, y: ((x * 255).astype(np.uint8), y), DTypeError, r"uint8.*xpcnn\.datasets\.preprocess"),
        (lambda x, y: (x.astype(np.int32), y), DTypeError, "x: expected a float32 or float64"),
        (lambda x, y: (x.astype(np.complex128), y), DTypeError, "x: expected a float32 or float64"),
        (lambda x, y: (x[:, 0], y), ShapeError, "preprocess"),
        (lambda x, y: (x[:, :, :5], y), ShapeError, r"x: expected shape \(N, 1, 10, 10\)"),
        (lambda x, y: (x[:0], y[:0]), DataError, "empty"),
        (
            lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y),
            DataError,
            r"got 1 NaN/Inf among 2000 values \(the first in sample 0, flat index 7\)",
        ),
        (lambda x, y: (x, y[:-1]), LabelError, r"y: expected integer labels of shape \(20,\)"),
        (lambda x, y: (x, y.astype(float)), LabelError, "integer"),
        (lambda x, y: (x, y + 3), LabelError, r"\[0, 2\]"),
        (lambda x, y: (x, y - 1), LabelError, "from -1"),
        (lambda x, y: ("images", y), DTypeError, "x: expected an array"),
    ],
)
def test_fit_refuses_bad_input(mutate, error, match):
    x, y = mutate(*blobs(20))
    with pytest.raises(error, match=match):
        built().fit(x, y, verbose=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(batch_size=0), ArgumentError, "batch_size"),
        (dict(batch_size=2.5), ArgumentTypeError, "batch_size"),
        (dict(epochs=-1), ArgumentError, "epochs"),
        (dict(optimizer="adam"), TypeError, "optimizer"),
        (dict(callbacks=[print]), TypeError, r"callbacks\[0\]"),
        (dict(validation_data=np.zeros(3)), TypeError, "validation_data"),
        (dict(seed="0"), TypeError, "seed"),
    ],
)
def test_fit_refuses_bad_arguments(kwargs, error, match):
    x, y = blobs(20)
    with pytest.raises(error, match=match):
        built().fit(x, y, verbose=0, **kwargs)


def test_validation_data_is_checked_with_its_own_name():
    x, y = blobs(20)
    with pytest.raises(LabelError, match=r"validation_data\[1\]"):
        built().fit(x, y, validation_data=(x, y + 5), verbose=0)


def test_evaluate_needs_a_built_model():
    x, y = blobs(10)
    with pytest.raises(NotBuiltError):
        small_model().evaluate(x, y)


# ---------------------------------------------------------------- NaN guard


@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
def test_nan_guard_names_epoch_step_and_layer_and_skips_the_update():
    x, y = blobs(64, dtype="float32")
    model = built("float32")

    def poison(step, logs):
        if step == 1:
            model.layers[0].params["weight"] = np.full((4, 1, 3, 3), 3e38, np.float32)  # the conv output overflows

    with pytest.raises(NonFiniteError) as info:
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[LambdaCallback(on_batch_end=poison)])
    message = str(info.value)
    assert re.search(r"epoch 1, step 3\b", message) and "layer 0 (Conv2D) output" in message, message
    assert (info.value.epoch, info.value.step) == (1, 3)
    assert np.isfinite(xpcnn.to_numpy(model.layers[4].params["weight"])).all()  # the bad update was not applied

    model.layers[0].params["weight"] = model.layers[0].params["weight"] + np.float32(np.inf)
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 1: .*layer 0 \(Conv2D\) parameter 'weight' holds NaN/Inf"):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)


@pytest.mark.filterwarnings("ignore:overflow|invalid value:RuntimeWarning")
@pytest.mark.parametrize("fewest", [False, True], ids=["sum per gradient", "one concatenated sum"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nan_guard_catches_a_non_finite_gradient_with_a_finite_loss(fewest, bad):
    """Both forms of the guard (xpcnn.training.nan_guard: the CPU's and the GPU's)."""

    class LeakyGradient(layers.Dense):
        def backward(self, grad_y):
            grad_x = super().backward(grad_y)
            self.grads["bias"] = self.grads["bias"] + bad
            return grad_x

    model = xpcnn.Sequential([layers.Flatten(), LeakyGradient(3)]).build((1, 10, 10), dtype="float64", backend="numpy")
    before = [w.copy() for w in model.get_weights()]
    x, y = blobs(16)
    with xpcnn.fewest_operations(fewest):
        with pytest.raises(
            NonFiniteError, match=r"epoch 1, step 1: the loss is [0-9.]+; layer 1 \(LeakyGradient\) gradient of 'bias'"
        ):
            model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        with pytest.raises(NonFiniteError, match=r"layer 1 \(LeakyGradient\) gradient of 'bias'"):
            model.train_step(x[:8], y[:8], xpcnn.optim.SGD(lr=0.1))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_nan_guard_ignores_a_mere_overflow_of_its_checksum():
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2), dtype="float32", backend="numpy")
    x, y = np.ones((2, 1, 2, 2), np.float32), np.array([0, 1])
    model.train_step(x, y, xpcnn.optim.SGD(lr=1e-30))  # fills the gradients
    model.layers[1].grads["weight"] = np.full((4, 3), 3e37, np.float32)  # finite, but sums to inf
    assert training.diagnose(model, x, 1.0) is None


# ---------------------------------------------------------------- progress output and callbacks


class FakeTTY(stdio.StringIO):
    def isatty(self):
        return True


def test_progress_one_line_per_epoch_when_not_a_terminal(capsys):
    x, y = blobs(40)
    built().fit(x, y, epochs=3, batch_size=8, validation_data=(x, y))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(
        r"epoch 2/3 - [0-9.]+s - loss [0-9.]+ - accuracy [0-9.]+ - val_loss [0-9.]+ - val_accuracy [0-9.]+", lines[1]
    )


def test_progress_bar_on_a_terminal():
    x, y = blobs(40)
    out = FakeTTY()
    built().fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[ProgressBar(file=out)])
    text = out.getvalue()
    assert "0/5 [" in text and "\r" in text  # the bar, erased when the epoch ends
    assert "\repoch 1/2 - " in text and "\repoch 2/2 - " in text  # then one summary line per epoch


def test_verbose_zero_prints_nothing(capsys):
    x, y = blobs(16)
    built().fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_notebook_logger_prints_the_notebooks_lines():
    x, y = blobs(250)
    lines = []
    built().fit(
        x,
        y,
        epochs=1,
        batch_size=1,
        optimizer=optim.SGD(0.05),
        verbose=0,
        shuffle=False,
        callbacks=[NotebookLogger(print_fn=lines.append)],
    )
    assert lines[0] == "Epoch 1 ->"
    assert lines[1] == "Step 1. For the last 100 steps: average loss 0.0, accuracy 0"
    assert len(lines) == 4
    for line in lines[2:]:
        assert re.fullmatch(r"Step (101|201)\. For the last 100 steps: average loss [0-9.e-]+, accuracy \d+", line), (
            line
        )


def test_callback_hooks_run_in_order():
    x, y = blobs(20)
    events = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: events.append("begin"),
        on_epoch_begin=lambda epoch, logs: events.append(f"epoch{epoch}"),
        on_batch_end=lambda step, logs: events.append(f"step{step}"),
        on_epoch_end=lambda epoch, logs: events.append(f"end{epoch}:{sorted(logs)}"),
        on_train_end=lambda logs: events.append("done"),
    )
    built().fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[cb])
    assert events == [
        "begin",
        "epoch0",
        "step0",
        "step1",
        "end0:['accuracy', 'loss']",
        "epoch1",
        "step0",
        "step1",
        "end1:['accuracy', 'loss']",
        "done",
    ]
    with pytest.raises(TypeError, match="not a LambdaCallback hook"):
        LambdaCallback(on_step=print)


# ---------------------------------------------------------------- zoo and plots


def test_zoo_networks():
    nb = zoo.notebook_cnn().build((1, 28, 28), seed=0, dtype="float64", backend="numpy")
    conv, w, b = nb.get_weights()
    assert conv.shape == (16, 1, 3, 3) and w.shape == (2704, 10) and b.shape == (10,) and not b.any()
    assert conv.std() == pytest.approx(1 / 9, rel=0.2) and w.std() == pytest.approx(1 / 2704, rel=0.05)
    default = zoo.default_cnn().build((1, 28, 28), backend="numpy")
    assert default.output_shape() == (10,)
    assert sum(p.size for p in default.get_weights()) == 12810
    with pytest.raises(ValueError, match="unknown network"):
        zoo.get("resnet")


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from xpcnn import plot

    x, y = blobs(32)
    model = built()
    history = model.fit(x, y, epochs=2, validation_data=(x, y), verbose=0)
    paths = plot.save_all(history, model, tmp_path / "plots")
    assert [p.name for p in paths] == ["curves.png", "kernels.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("spec", ["numpy", "torch", "array_api_strict"])
def test_prefetch_off_cuda_is_a_plain_copy(spec):
    pytest.importorskip(spec)
    backend = xpcnn.backend.load_backend(spec)
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    started = backend.prefetch(host)
    got = backend.ready(started)
    assert xpcnn.backend.library_of(got) == backend.name
    np.testing.assert_array_equal(xpcnn.to_numpy(got), host)
    host[0, 0] = 99.0  # a copy, not a view of the caller's buffer
    assert float(xpcnn.to_numpy(got)[0, 0]) == 0.0


# ---------------------------------------------------------------- train_step: one host read


def _bn_dropout_model():
    model = xpcnn.Sequential(
        [
            layers.Conv2D(4, 3),
            layers.BatchNorm2D(),
            layers.ReLU(),
            layers.Dropout(0.5, seed=1),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    return model.build((1, 10, 10), dtype="float64", backend="numpy", seed=0)


@pytest.mark.parametrize("bad", ["labels", "nan", "inf"])
def test_a_rejected_train_step_leaves_the_model_as_it_was(bad):
    """train_step checks the values on the device with its one read; a failed check raises
    before the update and puts back what the training forward changed (BatchNorm running
    statistics, dropout counters)."""
    model = _bn_dropout_model()
    x, y = blobs(8)
    sgd = optim.SGD(lr=0.1)
    model.train_step(x, y, sgd)
    weights, buffers = [np.array(w) for w in model.get_weights()], [np.array(b) for b in model.get_buffers()]
    states = model.layer_states()
    if bad == "labels":
        y = y.copy()
        y[3] = 3
    else:
        x = x.copy()
        x[2, 0, 4, 4] = float(bad)
    with pytest.raises(LabelError if bad == "labels" else DataError, match="^y:" if bad == "labels" else "x:"):
        model.train_step(x, y, sgd)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(buffers, model.get_buffers()))
    assert model.layer_states() == states
    assert sgd.steps == 1


def test_train_step_reads_the_host_once(torch, monkeypatch):
    """On a device every read is a synchronisation: the loss, the NaN/Inf guard and the checks
    of the batch's values come back together (counted on the torch backend: no scalar read,
    one array read)."""
    from torch.profiler import ProfilerActivity, profile

    model = small_model().build((1, 10, 10), dtype="float32", backend="torch", seed=0)
    x, y = blobs(16, dtype="float32")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    sgd = optim.SGD(lr=0.1)
    model.train_step(x, y, sgd)
    reads = []
    real = training.to_numpy
    monkeypatch.setattr(training, "to_numpy", lambda a: reads.append(1) or real(a))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train_step(x, y, sgd)
    assert sum(e.name == "aten::_local_scalar_dense" for e in prof.events()) == 0
    assert len(reads) == 1
