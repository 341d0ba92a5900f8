"""The trainer's Keras callbacks: the record of each epoch, validation-only metrics, and stops on
a NaN loss or a signal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import keras
import numpy as np

from seglab import schema, signals
from seglab.core.records import EpochRecord
from seglab.core.scores import scores_from_confusion
from seglab.training.keras_metrics import ConfusionMatrix, PerClassLoss, ValidationOnly


class EpochRecorder(keras.callbacks.Callback):
    """Turns each epoch's logs and validation confusion matrix into an :class:`EpochRecord`.

    Keras' ``fit`` runs the validation pass, which resets the model's metrics first, right
    before ``on_epoch_end``: at that point the confusion matrix holds exactly the validation
    set (``tests/test_trainer.py`` checks this against an independent prediction pass).
    """

    def __init__(
        self,
        confusion: ConfusionMatrix,
        loss_terms: PerClassLoss,
        ce: PerClassLoss,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        super().__init__()
        self.confusion = confusion
        self.loss_terms = loss_terms
        self.ce = ce
        self.on_epoch = on_epoch
        self.records: list[EpochRecord] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        seconds = time.perf_counter() - self._start
        record = self.record(epoch + 1, float(logs["loss"]), float(logs["val_loss"]), seconds)
        self.records.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)

    def record(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> EpochRecord:
        """The record of ``epoch`` from the metrics' validation state now."""
        cm = self.confusion.matrix()
        return EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_ce=float(self.ce.result()),
            loss_share=self.loss_terms.shares(),
            confusion=cm,
            scores=scores_from_confusion(cm),
            seconds=seconds,
        )


class ValidationGate(keras.callbacks.Callback):
    """Lets seglab's metrics count during the validation pass only (see
    ``metrics.ValidationOnly``): Keras traces the test step inside it, the training step
    outside, so training steps carry no metric work."""

    def __init__(self, metrics: Sequence[ValidationOnly]) -> None:
        super().__init__()
        self.metrics = metrics
        self.on_test_end()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        for metric in self.metrics:
            metric.validating = True

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        for metric in self.metrics:
            metric.validating = False


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/Inf loss by raising, so the run ends FAILED with the
    reason, the metrics logged so far stay, and the last good checkpoint is not overwritten
    (Keras' ``TerminateOnNaN`` would instead finish the epoch and validate the broken model)."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {float(loss)} at batch {batch + 1} of epoch "
                f"{self.epoch + 1}; lower the learning rate or check the data and loss"
            )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is not None and not np.isfinite(loss):
            raise FloatingPointError(f"validation loss became {float(loss)} at epoch {epoch + 1}")


class SignalGuard(keras.callbacks.Callback):
    """Ends training at the next batch once Ctrl-C or SIGTERM has arrived (see
    :mod:`seglab.signals`; :meth:`Trainer.fit` defers signals, so this is where they land)."""

    def check(self, *args: Any, **kwargs: Any) -> None:
        signals.raise_if_received()

    on_train_batch_end = on_test_batch_end = on_epoch_end = check


def duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``: a time span as a progress line shows it."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress(keras.callbacks.Callback):
    """Where an epoch is, for epochs long enough to need it.

    On a terminal, one line rewritten in place (at most twice a second) with the step, the time
    spent and the time left, cleared before the epoch line prints. Elsewhere (a log file, CI, a
    cluster's job output), one line every ``every_seconds`` of an epoch: none for epochs
    shorter than that, so short runs print nothing beyond their epoch lines.

    Args:
        epochs: The epochs the run trains (``epoch 3/8``).
        every_seconds: Seconds between two lines off a terminal (0: none).
        stream: Where to write (default: standard output); a terminal when it says so.
    """

    def __init__(self, epochs: int, every_seconds: float = 30.0, stream: TextIO | None = None):
        super().__init__()
        self.epochs = epochs
        self.every_seconds = every_seconds
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self._epoch, self._start, self._shown, self._width = 0, 0.0, 0.0, 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch + 1
        self._start = self._shown = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        if now - self._shown < (0.5 if self.live else self.every_seconds) or not (
            self.live or self.every_seconds
        ):
            return
        self._shown = now
        line = self.line(batch + 1, now - self._start, (logs or {}).get("loss"))
        if self.live:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.live and self._width:  # the epoch line starts on a clean line
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def line(self, step: int, elapsed: float, loss: float | None) -> str:
        """``epoch 3/8  step 40/120  1m05s, ~2m10s left  train/loss 0.4512``."""
        steps = (self.params or {}).get("steps")
        where = f"step {step}/{steps}" if steps else f"step {step}"
        left = f", ~{duration(elapsed * (steps - step) / step)} left" if steps else ""
        shown = f"  {schema.TRAIN_LOSS} {float(loss):.4f}" if loss is not None else ""
        return f"epoch {self._epoch}/{self.epochs}  {where}  {duration(elapsed)}{left}{shown}"
