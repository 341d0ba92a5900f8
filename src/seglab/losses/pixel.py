"""Pixelwise losses: cross-entropy and focal loss."""

from __future__ import annotations

from typing import Any

import keras

from seglab.losses.base import PixelLoss
from seglab.losses.functional import cross_entropy, focal


@keras.saving.register_keras_serializable(package="seglab")
class CrossEntropy(PixelLoss):
    """Sparse categorical cross-entropy with an ignore index.

    ``L = sum_i w_i * (-log p_i[y_i]) / N_valid``. Probabilities are renormalised and clipped to
    ``[1e-7, 1 - 1e-7]`` like ``keras.losses.categorical_crossentropy``; on softmax outputs this
    equals ``keras.losses.sparse_categorical_crossentropy`` (with the same ``sample_weight``)
    when no pixel is ignored.

    Args:
        ignore_index: Mask label whose pixels count nowhere.
        name: Loss name.
    """

    def __init__(self, ignore_index: int | None = None, name: str = "cross_entropy", **kwargs):
        super().__init__(ignore_index=ignore_index, name=name, **kwargs)

    def pixel_loss(self, p_true: Any) -> Any:
        return cross_entropy(p_true)


@keras.saving.register_keras_serializable(package="seglab")
class FocalLoss(PixelLoss):
    """Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection").

    ``l_i = -alpha * (1 - p_t)^gamma * log(p_t)`` with ``p_t = p_i[y_i]``; ``gamma`` shifts the
    loss from easy, well-classified pixels to hard ones. Same clipping and ``alpha`` convention
    as ``keras.losses.CategoricalFocalCrossentropy`` (one scalar ``alpha``; per-class balance
    comes from the class-weight scheme), which this equals on one-hot targets.

    Args:
        gamma: Focusing parameter (0: ``alpha`` times cross-entropy).
        alpha: Scalar factor.
        ignore_index: Mask label whose pixels count nowhere.
        name: Loss name.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float = 0.25,
        ignore_index: int | None = None,
        name: str = "focal",
        **kwargs: Any,
    ) -> None:
        if gamma < 0:
            raise ValueError(f"loss.gamma must be >= 0, got {gamma}")
        super().__init__(ignore_index=ignore_index, name=name, **kwargs)
        self.gamma = gamma
        self.alpha = alpha

    def pixel_loss(self, p_true: Any) -> Any:
        return focal(p_true, self.gamma, self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}
