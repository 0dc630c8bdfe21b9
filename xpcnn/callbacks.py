"""Callbacks for :func:`xpcnn.training.fit`: progress output, the notebook's logger, history,
checkpointing, learning-rate schedules and early stopping.

A callback subclasses :class:`Callback` and overrides any hook. Epochs and steps are 0-based in
the hooks (printed 1-based). ``self.trainer`` is set before training starts and exposes
``model``, ``optimizer``, ``rng`` (the host shuffle generator), ``history``, ``params``
(``epochs``, ``initial_epoch``, ``steps`` per epoch, ``samples``, ``batch_size``, ``verbose``)
and ``stop_training``: a callback that sets ``trainer.stop_training = True`` ends ``fit`` after
the current epoch (as Keras's ``model.stop_training``).

Hooks and their ``logs``:

* ``on_train_begin(logs)`` / ``on_train_end(logs)`` (also called when training stops on an error)
* ``on_epoch_begin(epoch, logs)``
* ``on_batch_end(step, logs)``: ``loss`` (batch mean, Python float), ``correct`` (int),
  ``size`` (samples in the batch)
* ``on_epoch_end(epoch, logs)``: ``loss``, ``accuracy`` and, with validation data,
  ``val_loss``, ``val_accuracy``
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from . import checkpoint
from ._validate import positive_int
from .backend import to_numpy
from .errors import ArgumentError, ArgumentTypeError


class Callback:
    """Base class: every hook does nothing."""

    trainer: Any = None

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, logs: dict[str, Any]) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_train_end(self, logs: dict[str, Any]) -> None: ...

    def get_state(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of this callback so that a resumed fit continues exactly: JSON
        values, finite floating-point arrays as a list under ``"arrays"``, and ``"stopped": True``
        when it has stopped the run (a resumed fit then trains no further); None (the default):
        nothing. A resumed fit gives each callback the state kept for the one of its class at its
        place among them."""
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back :meth:`get_state` output (a resumed fit calls it after ``on_train_begin``);
        a ValueError, KeyError or TypeError says the state does not fit this callback."""


class History(Callback):
    """Per-epoch metrics: ``history["loss"]``, ``["accuracy"]``, ``["val_loss"]``,
    ``["val_accuracy"]`` (lists, one value per epoch); ``epoch`` lists the 0-based epoch numbers.
    ``fit`` returns it; after a resume it also holds the epochs before the checkpoint."""

    def __init__(self, history: dict[str, list[float]] | None = None, initial_epoch: int = 0) -> None:
        if history is not None and not isinstance(history, dict):
            raise ArgumentTypeError(f"history: expected a dict of metric lists, got {type(history).__name__}")
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: list[int] = list(range(positive_int(initial_epoch, "initial_epoch", minimum=0)))

    def on_epoch_end(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if v)
        return f"History({len(self.epoch)} epochs{': ' + last if last else ''})"


def format_metrics(logs: dict[str, Any]) -> str:
    """``loss 0.1234 - accuracy 0.9650 - lr 0.003``: metrics to 4 decimals, the learning rate to
    4 significant digits (a decayed rate like 3e-05 would print as 0.0000)."""
    if not isinstance(logs, dict):
        raise ArgumentTypeError(f"logs: expected a dict of metric values, got {type(logs).__name__}")
    return " - ".join(f"{k} {v:.4g}" if k == "lr" else f"{k} {v:.4f}" for k, v in logs.items())


class ProgressBar(Callback):
    """One plain summary line per epoch (``epoch 2/10 - 0.5s - loss ... - val_accuracy ...``),
    on a terminal too, so no metric is ever cut at the terminal's width. On a terminal with
    ``verbose=1`` a tqdm bar shows the progress within the epoch and is erased when the epoch
    ends; ``verbose=2`` never draws it. ``file`` defaults to ``sys.stdout``."""

    def __init__(self, verbose: int = 1, file: TextIO | None = None, live: bool | None = None) -> None:
        if file is not None and not callable(getattr(file, "write", None)):
            raise ArgumentTypeError(f"file: expected a text stream with write(), got {type(file).__name__}")
        if live not in (None, True, False):
            raise ArgumentTypeError(f"live: expected True, False or None, got {live!r}")
        self.verbose = _verbose(verbose, (1, 2))
        self.file = file
        self.live = live
        self._bar = None

    def on_train_begin(self, logs):
        if self.file is None:
            self.file = sys.stdout
        if self.live is None:
            isatty = getattr(self.file, "isatty", None)
            self.live = self.verbose == 1 and bool(isatty and isatty())

    def on_epoch_begin(self, epoch, logs):
        params = self.trainer.params
        self._t0 = time.perf_counter()
        self._loss = self._correct = self._seen = 0
        if self.live:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=params["steps"], desc=f"epoch {epoch + 1}/{params['epochs']}", unit="batch",
                             file=self.file, leave=False, dynamic_ncols=True)

    def on_batch_end(self, step, logs):
        self._loss += logs["loss"] * logs["size"]
        self._correct += logs["correct"]
        self._seen += logs["size"]
        if self._bar is not None:
            if step % 10 == 0:
                self._bar.set_postfix(loss=f"{self._loss / self._seen:.4f}",
                                      accuracy=f"{self._correct / self._seen:.4f}", refresh=False)
            self._bar.update(1)

    def on_epoch_end(self, epoch, logs):
        seconds = time.perf_counter() - self._t0
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        print(f"epoch {epoch + 1}/{self.trainer.params['epochs']} - {seconds:.1f}s - {format_metrics(logs)}",
              file=self.file, flush=True)

    def on_train_end(self, logs):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class NotebookLogger(Callback):
    """The teaching notebook's log: ``Epoch n ->`` at each epoch start and, every ``every`` steps,
    ``Step i. For the last 100 steps: average loss L, accuracy A`` where L is the sum of the last
    ``every`` step losses divided by ``every`` and A the count of correct samples (as the notebook,
    whose steps are single images, this prints the line at steps 1, 101, 201, ... with the
    figures of the steps before it)."""

    def __init__(self, every: int = 100, print_fn: Callable[[str], Any] = print) -> None:
        if not callable(print_fn):
            raise ArgumentTypeError(f"print_fn: expected a function taking a line, got {type(print_fn).__name__}")
        self.every = positive_int(every, "every")
        self.print = print_fn

    def on_epoch_begin(self, epoch, logs):
        self.print(f"Epoch {epoch + 1} ->")
        self._loss = 0
        self._accuracy = 0

    def on_batch_end(self, step, logs):
        if step % self.every == 0:
            self.print(f"Step {step + 1}. For the last {self.every} steps: "
                       f"average loss {self._loss / self.every}, accuracy {self._accuracy}")
            self._loss = 0
            self._accuracy = 0
        self._loss += logs["loss"]
        self._accuracy += logs["correct"]


class ModelCheckpoint(Callback):
    """After every epoch, save weights, optimizer state, shuffle RNG state, epoch counter and
    history to ``directory`` atomically, keeping the newest ``keep`` (see :mod:`xpcnn.checkpoint`).
    ``fit(..., checkpoint_dir=DIR)`` adds one."""

    def __init__(self, directory, keep: int = checkpoint.KEEP) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise ArgumentTypeError(f"directory: expected a path (str or os.PathLike), got {type(directory).__name__}")
        self.directory = directory
        self.keep = positive_int(keep, "keep")
        self.last_path = None

    def on_epoch_end(self, epoch, logs):
        t = self.trainer
        fit_args = {k: t.params[k] for k in ("batch_size", "shuffle", "seed", "initial_lr")}
        states = [(type(cb).__name__, cb.get_state()) for cb in t.callbacks]
        self.last_path = checkpoint.save(self.directory, model=t.model, optimizer=t.optimizer, rng=t.rng,
                                         epoch=epoch + 1, history=t.history.history, fit_args=fit_args, keep=self.keep,
                                         callback_states=[(name, state) for name, state in states if state is not None])


def _verbose(value: Any, allowed: tuple[int, ...]) -> int:
    if isinstance(value, bool) or value not in allowed:
        raise ArgumentError(f"verbose: expected one of {', '.join(map(str, allowed))}, got {value!r}")
    return int(value)


def _positive_finite(value: Any) -> bool:
    return _finite_non_negative(value) and value > 0


def _finite_non_negative(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0


class LearningRateScheduler(Callback):
    """At the start of every epoch, set the optimizer's learning rate to ``schedule(epoch, lr)``
    (``epoch`` 0-based and counted across a resume, ``lr`` the current rate), as Keras's
    ``LearningRateScheduler``. The epoch's logs (and so ``History``) get ``"lr"``: the rate the
    epoch trained with. ``verbose=1`` prints each change. See :func:`cosine_schedule` and
    :func:`step_schedule` for the usual shapes.
    """

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0) -> None:
        if not callable(schedule):
            raise ArgumentTypeError(f"schedule: expected a function (epoch, lr) -> lr, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = _verbose(verbose, (0, 1))

    def on_epoch_begin(self, epoch, logs):
        optimizer = self.trainer.optimizer
        lr = self.schedule(epoch, optimizer.lr)
        if not _finite_non_negative(lr):  # 0 as torch.optim allows: a cosine run past its length
            raise ArgumentError(f"schedule: expected a finite learning rate >= 0 for epoch {epoch + 1}, got {lr!r}")
        if self.verbose and float(lr) != optimizer.lr:
            print(f"epoch {epoch + 1}: learning rate {optimizer.lr:.4g} -> {float(lr):.4g}", flush=True)
        optimizer.lr = float(lr)

    def on_epoch_end(self, epoch, logs):
        logs["lr"] = self.trainer.optimizer.lr


def cosine_schedule(initial_lr: float, epochs: int, min_lr: float = 0.0) -> Callable[[int, float], float]:
    """``schedule(epoch, lr) = min_lr + (initial_lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``:
    PyTorch's ``CosineAnnealingLR(T_max=epochs, eta_min=min_lr)`` stepped once per epoch."""
    if not _finite_non_negative(initial_lr):  # 0, as torch.optim allows it
        raise ArgumentError(f"initial_lr: expected a finite number >= 0, got {initial_lr!r}")
    positive_int(epochs, "epochs", error=ArgumentError)
    if not _finite_non_negative(min_lr) or min_lr > initial_lr:
        raise ArgumentError(f"min_lr: expected a number >= 0 and <= initial_lr ({initial_lr}), got {min_lr!r}")

    def schedule(epoch: int, lr: float) -> float:
        return min_lr + (initial_lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2

    return schedule


def step_schedule(initial_lr: float, milestones, gamma: float = 0.1) -> Callable[[int, float], float]:
    """``schedule(epoch, lr) = initial_lr * gamma ** (number of milestones <= epoch)``: PyTorch's
    ``MultiStepLR(milestones, gamma)`` stepped once per epoch (0-based epochs)."""
    if not _finite_non_negative(initial_lr):
        raise ArgumentError(f"initial_lr: expected a finite number >= 0, got {initial_lr!r}")
    if not _positive_finite(gamma):
        raise ArgumentError(f"gamma: expected a finite number > 0, got {gamma!r}")
    marks = tuple(milestones) if isinstance(milestones, (list, tuple, range)) else (-1,)  # -1: refused below
    if any(isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0 for m in marks):
        raise ArgumentError(f"milestones: expected epochs (ints >= 0), got {milestones!r}")

    def schedule(epoch: int, lr: float) -> float:
        return initial_lr * gamma ** sum(epoch >= m for m in marks)

    return schedule


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving, with Keras's rules.

    After each epoch (from ``start_from_epoch`` on) the monitored value improves when it is
    below the best so far by more than ``min_delta`` (``mode="min"``) or above it by more than
    ``min_delta`` (``"max"``; ``"auto"``: max for names ending in ``accuracy`` or ``acc``, else
    min). The first value always improves. ``wait`` counts the epochs since the last
    improvement; when it reaches ``patience``, training stops after that epoch
    (``trainer.stop_training``) and ``stopped_epoch`` records it (0-based). With a
    ``baseline``, an improvement only resets ``wait`` when it also beats the baseline.

    ``restore_best_weights``: when training ends (stopped early or not), the model gets back
    the weights and buffers (running statistics) of the end of its best epoch (``best_epoch``). Checkpoints written by
    ``checkpoint_dir`` keep each epoch's own weights, and this callback's state (best value,
    wait, best weights): a fit resumed with it continues, or stays stopped, exactly.

    A ``monitor`` missing from the logs is an error naming the metrics there are (``val_*``
    needs ``validation_data``).
    """

    def __init__(self, monitor: str = "val_loss", *, patience: int = 3, min_delta: float = 0.0, mode: str = "auto",
                 baseline: float | None = None, restore_best_weights: bool = True, start_from_epoch: int = 0,
                 verbose: int = 0) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ArgumentError(f"monitor: expected a metric name such as 'val_loss', got {monitor!r}")
        for name, value in (("patience", patience), ("start_from_epoch", start_from_epoch)):
            positive_int(value, name, minimum=0, error=ArgumentError)
        if not _finite_non_negative(min_delta):
            raise ArgumentError(f"min_delta: expected a finite number >= 0, got {min_delta!r}")
        if mode not in ("auto", "min", "max"):
            raise ArgumentError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        if baseline is not None and not (isinstance(baseline, numbers.Real) and not isinstance(baseline, bool)
                                         and math.isfinite(baseline)):
            raise ArgumentError(f"baseline: expected a finite number or None, got {baseline!r}")
        if not isinstance(restore_best_weights, bool):
            raise ArgumentTypeError(f"restore_best_weights: expected True or False, got {restore_best_weights!r}")
        if mode == "auto":
            mode = "max" if monitor.endswith(("accuracy", "acc")) else "min"
        self.monitor, self.patience, self.min_delta, self.mode = monitor, int(patience), float(min_delta), mode
        self.baseline, self.restore_best_weights = baseline, bool(restore_best_weights)
        self.start_from_epoch, self.verbose = int(start_from_epoch), _verbose(verbose, (0, 1))

    def _improves(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def on_train_begin(self, logs):
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs):
        if self.monitor not in logs:
            raise ArgumentError(f"EarlyStopping: monitor {self.monitor!r} is not among this fit's metrics "
                                f"({', '.join(logs)}); 'val_*' metrics need fit(..., validation_data=...)")
        if epoch < self.start_from_epoch:
            return
        value = float(logs[self.monitor])
        model = self.trainer.model
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _snapshot(model)  # restore at least the first epoch's weights
        self.wait += 1
        if self._improves(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(model)
            if self.baseline is None or self._improves(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self.verbose:
                print(f"epoch {epoch + 1}: early stopping ({self.monitor} has not improved for {self.wait} epochs; "
                      f"best {self.best:.4f} at epoch {self.best_epoch + 1})", flush=True)

    def get_state(self):
        arrays = None if self.best_weights is None else [to_numpy(w) for w in self.best_weights]
        return {"monitor": self.monitor, "mode": self.mode, "wait": self.wait, "stopped_epoch": self.stopped_epoch,
                "best": self.best, "best_epoch": self.best_epoch, "stopped": self.stopped_epoch > 0, "arrays": arrays}

    def set_state(self, state):
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            raise ValueError(f"kept for monitor {state['monitor']!r} ({state['mode']}), this one watches "
                             f"{self.monitor!r} ({self.mode})")
        counts = [state[k] for k in ("wait", "stopped_epoch", "best_epoch")]
        best, arrays = state["best"], state["arrays"]
        shapes = [tuple(w.shape) for w in _snapshot(self.trainer.model)]
        if not (all(type(c) is int and 0 <= c < 2**31 for c in counts)
                and (best is None or type(best) in (int, float) and math.isfinite(best))
                and (arrays is None or [tuple(a.shape) for a in arrays]  # older checkpoints: the weights alone
                     in (shapes, shapes[:len(self.trainer.model.named_parameters())]))):
            raise ValueError(f"counts {counts}, best {best!r:.40} or best weights that do not fit this model")
        (self.wait, self.stopped_epoch, self.best_epoch), self.best, self.best_weights = counts, best, arrays

    def on_train_end(self, logs):
        if self.restore_best_weights and self.best_weights is not None:
            # the weights, then the buffers unless an older checkpoint kept none
            model, arrays, weights = self.trainer.model, self.best_weights, len(self.trainer.model.named_parameters())
            model.set_weights(arrays[:weights])
            if len(arrays) > weights:
                model.set_buffers(arrays[weights:])
            if self.verbose:
                print(f"restored the weights of the end of epoch {self.best_epoch + 1} (best {self.monitor})",
                      flush=True)


def _snapshot(model) -> list:
    """The weights then the buffers (BatchNorm's running statistics): what Keras's get_weights holds."""
    return [*model.get_weights(), *model.get_buffers()]


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, **hooks: Callable) -> None:
        names = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")
        for name, fn in hooks.items():
            if name not in names:
                raise ArgumentTypeError(f"{name}: not a LambdaCallback hook; valid hooks are {', '.join(names)}")
            if not callable(fn):
                raise ArgumentTypeError(f"{name}: expected a function, got {type(fn).__name__}")
            setattr(self, name, fn)
