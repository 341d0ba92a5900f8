"""Combinations of a pixel loss and a region loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from seglab.losses.base import SegmentationLoss, prepare
from seglab.losses.functional import bce_minus_dice
from seglab.losses.pixel import CrossEntropy
from seglab.losses.region import Dice


@keras.saving.register_keras_serializable(package="seglab")
class CEDice(SegmentationLoss):
    """``L = CE + dice_weight * Dice``, the usual compound loss (e.g. nnU-Net's).

    The CE term takes per-pixel sample weights, the Dice term class weights in its mean over
    classes: each class-weighting route applies to the term it fits.

    Args:
        dice_weight: Factor of the Dice term.
        smooth: Dice smoothing.
        squared: Dice with squared denominator terms.
        class_weights: Weights of the Dice term's mean over classes.
        include_background: Whether class 0 takes part in the Dice term.
        ignore_index: Mask label that counts nowhere.
        name: Loss name.
    """

    pixel_weighted = True
    class_weighted = True

    def __init__(
        self,
        dice_weight: float = 1.0,
        smooth: float = 1e-5,
        squared: bool = False,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        name: str = "ce_dice",
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index=ignore_index, name=name, **kwargs)
        self.dice_weight = dice_weight
        self.ce = CrossEntropy(ignore_index=ignore_index)
        self.dice = Dice(smooth, squared, class_weights, include_background, ignore_index)

    def per_class(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return self.ce.per_class(
            y_true, y_pred, sample_weight
        ) + self.dice_weight * self.dice.per_class(y_true, y_pred)

    def total(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return self.ce.total(y_true, y_pred, sample_weight) + self.dice_weight * self.dice.total(
            y_true, y_pred
        )

    def get_config(self) -> dict[str, Any]:
        dice = self.dice.get_config()
        return {
            **super().get_config(),
            "dice_weight": self.dice_weight,
            **{k: dice[k] for k in ("smooth", "squared", "class_weights", "include_background")},
        }


@keras.saving.register_keras_serializable(package="seglab")
class BCEMinusDice(SegmentationLoss):
    """The hidden-failure question's loss, kept to reproduce it: per pixel
    ``BCE - (1 + Dice)``, weighted.

    ``BCE_i = mean_c [-g log p - (1 - g) log(1 - p)]`` on one-hot targets (Keras'
    ``binary_crossentropy`` means over the class axis first: a class's error is divided by C),
    ``Dice = (2 sum g p + s) / (sum g + sum p + s)`` pooled over all pixels and classes of the
    batch, and ``L = sum_i w_i (BCE_i - 1 - Dice) / N_valid`` with the per-pixel weight
    ``w_i = class_weight[y_i]``. Meant for sigmoid outputs (``model.output_activation=sigmoid``).
    Its minimum is -2 times the mean pixel weight (-2 unweighted), so the values are not
    comparable with other losses.

    Args:
        smooth: Dice smoothing (the hidden-failure question's code uses 1).
        ignore_index: Mask label that counts nowhere.
        name: Loss name.
    """

    pixel_weighted = True

    def __init__(
        self,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        name: str = "bce_minus_dice",
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index=ignore_index, name=name, **kwargs)
        self.smooth = smooth

    def per_class(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        one_hot, valid, probs = prepare(y_true, y_pred, self.ignore_index)
        weights = valid if sample_weight is None else valid * ops.cast(sample_weight, "float32")
        weighted = bce_minus_dice(one_hot, probs, valid, self.smooth) * weights
        totals = ops.sum(one_hot * weighted[..., None], axis=(0, 1, 2))
        return ops.divide_no_nan(totals, ops.sum(valid))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}
