"""Callbacks for :func:`xpcnn.training.fit`: progress bar, the notebook's logger, history,
checkpointing.

A callback subclasses :class:`Callback` and overrides any hook. Epochs and steps are 0-based in
the hooks (printed 1-based). ``self.trainer`` is set before training starts and exposes
``model``, ``optimizer``, ``rng`` (the host shuffle generator), ``history`` and ``params``
(``epochs``, ``initial_epoch``, ``steps`` per epoch, ``samples``, ``batch_size``, ``verbose``).

Hooks and their ``logs``:

* ``on_train_begin(logs)`` / ``on_train_end(logs)`` (also called when training stops on an error)
* ``on_epoch_begin(epoch, logs)``
* ``on_batch_end(step, logs)``: ``loss`` (batch mean, Python float), ``correct`` (int),
  ``size`` (samples in the batch)
* ``on_epoch_end(epoch, logs)``: ``loss``, ``accuracy`` and, with validation data,
  ``val_loss``, ``val_accuracy``
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from . import checkpoint


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


class History(Callback):
    """Per-epoch metrics: ``history["loss"]``, ``["accuracy"]``, ``["val_loss"]``,
    ``["val_accuracy"]`` (lists, one value per epoch); ``epoch`` lists the 0-based epoch numbers.
    ``fit`` returns it; after a resume it also holds the epochs before the checkpoint."""

    def __init__(self, history: dict[str, list[float]] | None = None, initial_epoch: int = 0) -> None:
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.epoch: list[int] = list(range(initial_epoch))

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
    return " - ".join(f"{k} {v:.4f}" for k, v in logs.items())


class ProgressBar(Callback):
    """tqdm bar per epoch when ``file`` is a terminal; otherwise (logs, CI) one summary line per
    epoch. ``verbose=2`` always prints summary lines. ``file`` defaults to ``sys.stdout``."""

    def __init__(self, verbose: int = 1, file: TextIO | None = None, live: bool | None = None) -> None:
        self.verbose = verbose
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
                             file=self.file, leave=True, dynamic_ncols=True)

    def on_batch_end(self, step, logs):
        self._loss += logs["loss"] * logs["size"]
        self._correct += logs["correct"]
        self._seen += logs["size"]
        if self._bar is not None:
            if step % 10 == 0:
                self._bar.set_postfix(loss=f"{self._loss / self._seen:.4f}", accuracy=f"{self._correct / self._seen:.4f}", refresh=False)
            self._bar.update(1)

    def on_epoch_end(self, epoch, logs):
        seconds = time.perf_counter() - self._t0
        if self._bar is not None:
            self._bar.set_postfix_str(format_metrics(logs), refresh=False)
            self._bar.close()
            self._bar = None
        else:
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
        self.every = every
        self.print = print_fn

    def on_epoch_begin(self, epoch, logs):
        self.print("Epoch {} ->".format(epoch + 1))
        self._loss = 0
        self._accuracy = 0

    def on_batch_end(self, step, logs):
        if step % self.every == 0:
            self.print("Step {}. For the last {} steps: average loss {}, accuracy {}".format(
                step + 1, self.every, self._loss / self.every, self._accuracy))
            self._loss = 0
            self._accuracy = 0
        self._loss += logs["loss"]
        self._accuracy += logs["correct"]


class ModelCheckpoint(Callback):
    """After every epoch, save weights, optimizer state, shuffle RNG state, epoch counter and
    history to ``directory`` atomically, keeping the newest ``keep`` (see :mod:`xpcnn.checkpoint`).
    ``fit(..., checkpoint_dir=DIR)`` adds one."""

    def __init__(self, directory, keep: int = checkpoint.KEEP) -> None:
        self.directory = directory
        self.keep = keep
        self.last_path = None

    def on_epoch_end(self, epoch, logs):
        t = self.trainer
        fit_args = {k: t.params[k] for k in ("batch_size", "shuffle", "seed")}
        self.last_path = checkpoint.save(self.directory, model=t.model, optimizer=t.optimizer, rng=t.rng,
                                         epoch=epoch + 1, history=t.history.history, fit_args=fit_args, keep=self.keep)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, **hooks: Callable) -> None:
        names = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")
        for name, fn in hooks.items():
            if name not in names:
                raise TypeError(f"LambdaCallback: unknown hook {name!r}; valid hooks are {', '.join(names)}")
            setattr(self, name, fn)
