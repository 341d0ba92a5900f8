"""What one epoch of training produced: the record every writer and reader of a run's epochs
shares (the trainer and the Keras callback make it, the run log writes it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seglab.core.scores import Scores


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced.

    Attributes:
        epoch: 1-based epoch number (the MLflow step).
        train_loss: Mean training loss over the epoch's batches.
        val_loss: Loss over the whole validation set.
        val_ce: Unweighted cross-entropy over the validation set (comparable across losses
            and class weights).
        loss_share: Each class's fraction of ``val_loss`` (pixel losses: the pixels of that
            true class; region losses: that class's term).
        confusion: Validation confusion matrix over every validation pixel.
        scores: Per-class scores derived from ``confusion``.
        seconds: Wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_ce: float
    loss_share: np.ndarray
    confusion: np.ndarray
    scores: Scores
    seconds: float
