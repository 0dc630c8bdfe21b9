"""Learning-rate schedules and early stopping (xpcnn.callbacks), checked against hand-computed
sequences and against PyTorch's schedulers, not against themselves; and the progress output."""

import io
import re

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim
from xpcnn.callbacks import (
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ProgressBar,
    cosine_schedule,
    step_schedule,
)
from xpcnn.errors import ArgumentError, ArgumentTypeError, XpcnnError

from .tolerances import FLOAT64_RTOL


def linear_model(seed=0):
    """Flatten -> Dense(3) on (1, 2, 2): softmax regression, small enough to train by hand."""
    return xpcnn.Sequential([layers.Flatten(), layers.Dense(3)]).build((1, 2, 2), seed=seed, dtype="float64",
                                                                       backend="numpy")


def data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 2, 2)), rng.integers(0, 3, n)


def snapshot(model):
    return [np.array(xpcnn.to_numpy(w), copy=True) for w in model.get_weights()]


# ---------------------------------------------------------------- LearningRateScheduler


def test_schedule_sets_the_rate_each_epoch_and_the_updates_use_it():
    """One full batch per epoch, plain SGD: W <- W - lr_e * x^T (softmax(xW + b) - onehot) / N,
    computed here in NumPy with the hand-written rates 0.5, 0.25, 0.125."""
    x, y = data()
    model = linear_model()
    W, b = snapshot(model)
    seen, epochs_seen = [], []
    scheduler = LearningRateScheduler(lambda epoch, lr: 0.5 / 2**epoch)
    record = LambdaCallback(on_batch_end=lambda step, logs: seen.append(model.optimizer.lr),
                            on_epoch_begin=lambda epoch, logs: epochs_seen.append(epoch))
    history = model.fit(x, y, epochs=3, batch_size=len(y), optimizer=optim.SGD(1.0), shuffle=False, verbose=0,
                        callbacks=[scheduler, record])
    assert seen == [0.5, 0.25, 0.125] and epochs_seen == [0, 1, 2]
    onehot = np.eye(3)[y]
    flat = x.reshape(len(y), -1)
    for lr in (0.5, 0.25, 0.125):
        z = flat @ W + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(y)
        W, b = W - lr * flat.T @ g, b - lr * g.sum(axis=0)
    got_W, got_b = snapshot(model)
    np.testing.assert_allclose(got_W, W, rtol=0, atol=FLOAT64_RTOL * np.abs(W).max())
    np.testing.assert_allclose(got_b, b, rtol=0, atol=FLOAT64_RTOL * np.abs(b).max())
    assert history["lr"] == [0.5, 0.25, 0.125]


def test_schedule_receives_the_current_rate():
    x, y = data()
    calls = []

    def halve(epoch, lr):
        calls.append((epoch, lr))
        return lr / 2

    linear_model().fit(x, y, epochs=3, batch_size=3, optimizer=optim.SGD(0.8), verbose=0,
                       callbacks=[LearningRateScheduler(halve)])
    assert calls == [(0, 0.8), (1, 0.4), (2, 0.2)]


def test_named_schedules_match_pytorch():
    torch = pytest.importorskip("torch")
    epochs, lr = 7, 0.3
    param = torch.nn.Parameter(torch.zeros(1))

    def torch_rates(make):
        opt = torch.optim.SGD([param], lr=lr)
        sched = make(opt)
        rates = []
        for _ in range(epochs):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return rates

    cosine = torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs, eta_min=0.01))
    mine = cosine_schedule(lr, epochs, min_lr=0.01)
    assert [mine(e, None) for e in range(epochs)] == pytest.approx(cosine, rel=1e-12)
    multistep = torch_rates(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.1))
    mine = step_schedule(lr, [2, 5], gamma=0.1)
    assert [mine(e, None) for e in range(epochs)] == pytest.approx(multistep, rel=1e-12)
    # the hand-written values: cos(0) = 1, cos(pi/2) = 0
    assert cosine_schedule(1.0, 4)(0, None) == 1.0 and cosine_schedule(1.0, 4)(2, None) == pytest.approx(0.5)
    assert step_schedule(1.0, [1, 3], gamma=0.5)(3, None) == 0.25


def test_bad_schedules_are_xpcnn_errors():
    x, y = data()
    with pytest.raises(ArgumentTypeError, match="schedule: expected a function"):
        LearningRateScheduler(0.1)
    for bad in (-1.0, float("nan"), "0.1", None):
        with pytest.raises(ArgumentError, match=r"schedule: expected a finite learning rate >= 0 for epoch 1, got"):
            linear_model().fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(lambda e, lr, v=bad: v)])
    assert cosine_schedule(0, 3)(1, 0.0) == step_schedule(0, [1])(2, 0.0) == 0  # a rate of 0, as torch.optim allows
    for make in (lambda: cosine_schedule(-0.1, 3), lambda: cosine_schedule(0.1, 0),
                 lambda: cosine_schedule(0.1, 3, 0.2),
                 lambda: step_schedule(0.1, [-1]), lambda: step_schedule(0.1, [1], gamma=0)):
        with pytest.raises(XpcnnError):
            make()


# ---------------------------------------------------------------- EarlyStopping


def scripted(key, values):
    """A callback that replaces ``logs[key]`` with ``values[epoch]``: EarlyStopping (listed after
    it) then sees a sequence written by hand."""
    def set_value(epoch, logs):
        logs[key] = values[epoch]

    return LambdaCallback(on_epoch_end=set_value)


def run_with(stopper, key, values, epochs=10):
    x, y = data(12)
    model = linear_model()
    weights = []
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(snapshot(model)))
    history = model.fit(x, y, epochs=epochs, batch_size=4, optimizer=optim.SGD(0.1), validation_data=(x, y), verbose=0,
                        callbacks=[scripted(key, values), keep, stopper])
    return model, history, weights


def test_early_stopping_stops_after_patience_epochs_without_improvement_and_restores_the_best():
    # min_delta 0.02: 0.8 improves on 1.0; 0.85 does not (wait 1); 0.79 is not below 0.8 - 0.02
    # (wait 2 = patience): stop after epoch 4 (index 3); the best is epoch 2 (index 1).
    values = [1.0, 0.8, 0.85, 0.79, 0.5, 0.4]
    stopper = EarlyStopping(patience=2, min_delta=0.02)
    model, history, weights = run_with(stopper, "val_loss", values)
    assert history.epoch == [0, 1, 2, 3] and len(weights) == 4
    assert stopper.stopped_epoch == 3 and stopper.best_epoch == 1 and stopper.best == 0.8
    for got, want, last in zip(snapshot(model), weights[1], weights[3]):
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, last)


def test_early_stopping_auto_mode_maximises_accuracy_and_can_keep_the_last_weights():
    # max mode: 0.6 improves, then 0.6, 0.55, 0.6 do not; patience 3 stops after index 4.
    values = [0.5, 0.6, 0.6, 0.55, 0.6, 0.9]
    stopper = EarlyStopping("val_accuracy", patience=3, restore_best_weights=False)
    model, history, weights = run_with(stopper, "val_accuracy", values)
    assert stopper.mode == "max" and history.epoch == [0, 1, 2, 3, 4]
    assert stopper.stopped_epoch == 4 and stopper.best_epoch == 1
    for got, last in zip(snapshot(model), weights[-1]):
        np.testing.assert_array_equal(got, last)


def test_early_stopping_that_never_fires_still_restores_the_best_epoch():
    values = [0.9, 0.3, 0.4, 0.5]
    stopper = EarlyStopping(patience=5)
    model, history, weights = run_with(stopper, "val_loss", values, epochs=4)
    assert history.epoch == [0, 1, 2, 3] and stopper.stopped_epoch == 0
    for got, want in zip(snapshot(model), weights[1]):
        np.testing.assert_array_equal(got, want)


def test_early_stopping_restores_the_best_epochs_running_statistics_with_its_weights():
    x, y = data(12)
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(4), layers.BatchNorm1D(), layers.Dense(3)])
    model.build((1, 2, 2), seed=0, dtype="float64", backend="numpy")
    kept = []
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: kept.append(
        [np.array(xpcnn.to_numpy(a), copy=True) for a in (*model.get_weights(), *model.get_buffers())]))
    model.fit(x, y, epochs=4, batch_size=4, optimizer=optim.SGD(0.1), validation_data=(x, y), verbose=0,
              callbacks=[scripted("val_loss", [0.9, 0.3, 0.4, 0.5]), keep, EarlyStopping(patience=5)])
    restored = [*model.get_weights(), *model.get_buffers()]
    assert len(restored) == 8  # two Dense weights and biases, gamma, beta, running mean and variance
    for got, want, last in zip(restored, kept[1], kept[3], strict=True):
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, last)


def test_early_stopping_state_kept_by_older_checkpoints_holds_the_weights_alone():
    model = xpcnn.Sequential([layers.Flatten(), layers.Dense(4), layers.BatchNorm1D(), layers.Dense(3)])
    model.build((1, 2, 2), seed=0, dtype="float64", backend="numpy")
    stopper = EarlyStopping(patience=5)
    stopper.set_trainer(type("Trainer", (), {"model": model})())
    best = [w * 2 for w in snapshot(model)]
    stopper.set_state({"monitor": "val_loss", "mode": "min", "wait": 1, "stopped_epoch": 0, "best": 0.5,
                       "best_epoch": 0, "stopped": False, "arrays": best})  # weights, no buffers
    buffers = [np.array(b, copy=True) for b in model.get_buffers()]
    stopper.on_train_end({})
    for got, want in zip(snapshot(model), best, strict=True):
        np.testing.assert_array_equal(got, want)
    for got, kept in zip(model.get_buffers(), buffers, strict=True):
        np.testing.assert_array_equal(got, kept)


def test_early_stopping_baseline_and_start_from_epoch():
    values = [0.9, 0.95, 0.97, 0.4, 0.3]
    # without a baseline: 0.9 is the best, 0.95 and 0.97 make wait 2 = patience: stop after index 2
    _, history, _ = run_with(EarlyStopping(patience=2), "val_loss", values)
    assert history.epoch == [0, 1, 2]
    # baseline 0.5: 0.9 is the best so far but not below the baseline, so wait is not reset (1);
    # 0.95 makes it 2: stop after index 1
    _, history, _ = run_with(EarlyStopping(patience=2, baseline=0.5), "val_loss", values)
    assert history.epoch == [0, 1]
    # the first two epochs are not judged: the best is 1.0 at index 2, the next 1.0 stops it
    stopper = EarlyStopping(patience=1, start_from_epoch=2)
    _, history, _ = run_with(stopper, "val_loss", [0.1, 0.1, 1.0, 1.0, 0.2])
    assert history.epoch == [0, 1, 2, 3] and stopper.best_epoch == 2 and stopper.best == 1.0


def test_early_stopping_bad_arguments_and_missing_metric():
    for kwargs, message in [(dict(patience=-1), "patience"), (dict(mode="up"), "mode"),
                            (dict(min_delta=-0.1), "min_delta"), (dict(monitor=""), "monitor")]:
        with pytest.raises(ArgumentError, match=message):
            EarlyStopping(**kwargs)
    x, y = data()
    with pytest.raises(ArgumentError, match=r"monitor 'val_loss' is not among this fit's metrics \(loss, accuracy\)"):
        linear_model().fit(x, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])


# ---------------------------------------------------------------- progress output


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_terminal_progress_ends_each_epoch_with_a_full_summary_line():
    """The tqdm bar (within the epoch) is erased; a plain line keeps every metric, however long."""
    x, y = data(12)
    out = FakeTTY()
    linear_model().fit(x, y, epochs=2, batch_size=4, optimizer=optim.SGD(0.1), validation_data=(x, y), verbose=0,
                       callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1), ProgressBar(file=out)])
    text = out.getvalue()
    assert "\r" in text  # the bar was drawn
    lines = [line for line in re.split(r"[\r\n]", text) if line.startswith(("epoch 1/2 -", "epoch 2/2 -"))]
    assert len(lines) == 2
    pattern = (r"epoch 2/2 - [0-9.]+s - loss [0-9.]+ - accuracy [0-9.]+ - val_loss [0-9.]+ - val_accuracy [0-9.]+"
               r" - lr 0.1")
    assert re.fullmatch(pattern, lines[1]), lines


def test_a_cosine_schedule_run_past_its_length_trains_at_rate_zero_as_pytorch():
    x, y = data()
    model = linear_model()
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[LearningRateScheduler(cosine_schedule(0.1, 3))])
    assert history.history["lr"][3] == 0.0
    last = [w.copy() for w in model.get_weights()]
    model.fit(x, y, epochs=1, verbose=0, optimizer=optim.SGD(0.0))  # torch.optim.SGD(lr=0) moves nothing either
    assert all(np.array_equal(a, b) for a, b in zip(last, model.get_weights()))
