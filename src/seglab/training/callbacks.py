"""The trainer's Keras callbacks: the record of each epoch, validation-only metrics, and stops on
a NaN loss or a signal."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from seglab import signals
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
