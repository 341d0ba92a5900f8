"""The shared trainer: compile, fit, and one record of loss and per-class scores per epoch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from seglab.data import SegmentationData, batches
from seglab.metrics import ConfusionMatrix, Scores, scores_from_confusion


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced.

    Attributes:
        epoch: 1-based epoch number (the MLflow step).
        train_loss: Mean training loss over the epoch's batches.
        val_loss: Loss over the whole validation set.
        confusion: Validation confusion matrix over every validation pixel.
        scores: Per-class scores derived from ``confusion``.
        seconds: Wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    val_loss: float
    confusion: np.ndarray
    scores: Scores
    seconds: float


class EpochRecorder(keras.callbacks.Callback):
    """Turns each epoch's logs and validation confusion matrix into an :class:`EpochRecord`.

    Keras' ``fit`` runs the validation pass, which resets the model's metrics first, right
    before ``on_epoch_end``: at that point the confusion matrix holds exactly the validation
    set (``tests/test_trainer.py`` checks this against an independent prediction pass).
    """

    def __init__(
        self, confusion: ConfusionMatrix, on_epoch: Callable[[EpochRecord], None] | None = None
    ) -> None:
        super().__init__()
        self.confusion = confusion
        self.on_epoch = on_epoch
        self.records: list[EpochRecord] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        cm = self.confusion.matrix()
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=float(logs["loss"]),
            val_loss=float(logs["val_loss"]),
            confusion=cm,
            scores=scores_from_confusion(cm),
            seconds=time.perf_counter() - self._start,
        )
        self.records.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)


class Trainer:
    """Fits a segmentation model and records the validation scores of every epoch.

    Args:
        optimizer: Factory of a fresh Keras optimizer (a Hydra ``_partial_``).
        epochs: Number of epochs.
        batch_size: Images per batch.
        seed: Seed of Python, NumPy, TensorFlow and the shuffle order.
        steps_per_execution: Batches run per ``tf.function`` call (fewer Python round trips).
        jit_compile: Compile the train step with XLA (measured slower for the U-Net on CPU).
    """

    def __init__(
        self,
        optimizer: Callable[[], keras.optimizers.Optimizer],
        epochs: int = 10,
        batch_size: int = 16,
        seed: int = 0,
        steps_per_execution: int = 1,
        jit_compile: bool = False,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"trainer.epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"trainer.batch_size must be >= 1, got {batch_size}")
        self.optimizer = optimizer
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_execution = steps_per_execution
        self.jit_compile = jit_compile

    def fit(
        self,
        model: keras.Model,
        loss: keras.losses.Loss,
        data: SegmentationData,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> list[EpochRecord]:
        """Trains ``model`` on ``data.train`` and scores ``data.val`` after every epoch."""
        confusion = ConfusionMatrix(data.num_classes, data.ignore_index)
        model.compile(
            optimizer=self.optimizer(),
            loss=loss,
            metrics=[confusion],
            steps_per_execution=self.steps_per_execution,
            jit_compile=self.jit_compile,
        )
        recorder = EpochRecorder(confusion, on_epoch)
        model.fit(
            batches(data.train, self.batch_size, shuffle_seed=self.seed),
            validation_data=batches(data.val, self.batch_size),
            epochs=self.epochs,
            shuffle=False,  # the tf.data stream shuffles itself, seeded
            callbacks=[recorder, *callbacks],
            verbose=0,
        )
        return recorder.records


def predict_samples(
    model: keras.Model, data: SegmentationData, count: int, prefer_class: int, pool: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``count`` validation (image, truth, prediction) triples for overlays.

    Samples that contain ``prefer_class`` (usually the worst class) come first, so the figure
    shows where the failing class is missed.
    """
    images, truths = (
        np.stack(x) for x in zip(*data.val.take(pool).as_numpy_iterator(), strict=True)
    )
    order = np.argsort(~(truths == prefer_class).any(axis=(1, 2)), kind="stable")[:count]
    predictions = model.predict(images[order], verbose=0).argmax(axis=-1)
    return images[order], truths[order], predictions
