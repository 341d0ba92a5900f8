"""Region (overlap) losses: soft Dice, generalized Dice, Tversky, focal Tversky.

Each reduces over the batch and pixels per class, then takes a weighted mean over classes
(see :class:`~seglab.losses.base.RegionLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from seglab.losses.base import RegionLoss, prepare
from seglab.losses.functional import (
    focal_tversky,
    generalized_dice,
    soft_dice,
    tversky_index,
)


@keras.saving.register_keras_serializable(package="seglab")
class Dice(RegionLoss):
    """Soft Dice loss per class (Milletari et al. 2016, "V-Net").

    ``l_c = 1 - (2 sum p g + s) / (sum p + sum g + s)`` over the batch's pixels, or with
    ``sum p^2 + sum g^2`` in the denominator when ``squared``. With ``smooth=0`` it equals
    ``keras.losses.Dice(axis=(0, 1, 2))`` on one-hot targets, which averages the C per-class
    losses; Keras' default ``axis=None`` instead pools every class into one overlap.

    Args:
        smooth: Added to numerator and denominator (a class absent from truth and prediction
            then scores Dice 1, loss 0).
        squared: Square the terms of the denominator (Milletari's form).
        class_weights: Weights of the mean over classes.
        include_background: Whether class 0 takes part in the mean.
        ignore_index: Mask label that counts nowhere.
        name: Loss name.
    """

    def __init__(
        self,
        smooth: float = 1e-5,
        squared: bool = False,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        name: str = "dice",
        **kwargs: Any,
    ) -> None:
        super().__init__(class_weights, include_background, ignore_index, name, **kwargs)
        self.smooth = smooth
        self.squared = squared

    def class_losses(self, one_hot: Any, probs: Any) -> Any:
        return soft_dice(one_hot, probs, self.smooth, self.squared)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth, "squared": self.squared}


@keras.saving.register_keras_serializable(package="seglab")
class GeneralizedDice(RegionLoss):
    """Generalized Dice loss (Sudre et al. 2017).

    ``L = 1 - (2 sum_c w_c sum p g + s) / (sum_c w_c sum (p + g) + s)`` with
    ``w_c = 1 / (sum g_c)^2`` from the batch, over the classes that take part (background
    excluded with ``include_background=False``). A class absent from the batch's truth would get
    an infinite weight; like MONAI's ``GeneralizedDiceLoss`` it gets the largest finite weight
    of the classes that take part, and when none of them is present every weight is 0 and the
    loss is 0. ``class_weights``, when given, multiply ``w_c`` after being scaled to mean 1 over
    the classes that take part: they set relative importance only, so uniform weights equal no
    weights (the smoothing ``s`` keeps its scale). The per-class term is
    ``w_c (sum (p+g) - 2 sum p g) / (sum_c w_c sum (p+g) + s)``.

    Args:
        smooth: Added to numerator and denominator.
        class_weights: Extra weights multiplied into ``w_c``.
        include_background: Whether class 0 takes part.
        ignore_index: Mask label that counts nowhere.
        name: Loss name.
    """

    def __init__(
        self,
        smooth: float = 1e-5,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        name: str = "generalized_dice",
        **kwargs: Any,
    ) -> None:
        super().__init__(class_weights, include_background, ignore_index, name, **kwargs)
        self.smooth = smooth

    def per_class(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        del sample_weight
        one_hot, valid, probs = prepare(y_true, y_pred, self.ignore_index)
        probs = probs * valid[..., None]
        num_classes = probs.shape[-1]
        return generalized_dice(
            one_hot,
            probs,
            self.included(num_classes),
            self.mean_weights(num_classes),
            self.smooth,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="seglab")
class Tversky(RegionLoss):
    """Tversky loss (Salehi et al. 2017).

    ``TI_c = (TP + s) / (TP + alpha FP + beta FN + s)``, ``l_c = 1 - TI_c``, with soft
    ``FP = sum p (1 - g)`` and ``FN = sum (1 - p) g``. ``alpha`` weights false positives and
    ``beta`` false negatives, as in the paper and MONAI; the paper's best setting is
    ``alpha=0.3, beta=0.7`` (recall over precision).

    Beware: ``keras.losses.tversky`` up to Keras 3.15 names ``sum (1 - p) g`` "fp", so its
    ``alpha`` weights false negatives there, and ``Tversky(alpha=a, beta=b)`` here equals
    ``keras.losses.Tversky(alpha=b, beta=a, axis=(0, 1, 2))`` with ``smooth=0``.
    keras-team/keras PR #23333 (merged 2026-07-27) puts alpha on false positives; with a Keras
    that has it, the two agree with the same arguments.

    Args:
        alpha: Weight of false positives.
        beta: Weight of false negatives.
        smooth: Added to numerator and denominator.
        class_weights: Weights of the mean over classes.
        include_background: Whether class 0 takes part in the mean.
        ignore_index: Mask label that counts nowhere.
        name: Loss name.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1e-5,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        name: str = "tversky",
        **kwargs: Any,
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"loss.alpha and loss.beta must be >= 0, got {alpha} and {beta}")
        super().__init__(class_weights, include_background, ignore_index, name, **kwargs)
        self.alpha = alpha
        self.beta = beta
        self.smooth = smooth

    def class_losses(self, one_hot: Any, probs: Any) -> Any:
        return 1.0 - tversky_index(one_hot, probs, self.alpha, self.beta, self.smooth)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "smooth": self.smooth,
        }


@keras.saving.register_keras_serializable(package="seglab")
class FocalTversky(Tversky):
    """Focal Tversky loss (Abraham & Khan 2019).

    ``l_c = (1 - TI_c)^gamma`` with the paper's ``gamma = 0.75`` (written ``1/gamma`` with
    ``gamma = 4/3`` there): below 1 it boosts classes whose Tversky index is already high less
    than those that fail. The paper sums over classes; seglab takes the (weighted) mean like its
    other region losses, which divides the paper's value by C. ``1 - TI`` is floored at 1e-7
    so the gradient stays finite at a perfect prediction.

    Args:
        gamma: Exponent.
        alpha: Weight of false positives.
        beta: Weight of false negatives.
        smooth: Added to numerator and denominator of TI.
        class_weights: Weights of the mean over classes.
        include_background: Whether class 0 takes part in the mean.
        ignore_index: Mask label that counts nowhere.
        name: Loss name.
    """

    def __init__(
        self,
        gamma: float = 0.75,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1e-5,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        name: str = "focal_tversky",
        **kwargs: Any,
    ) -> None:
        if gamma <= 0:
            raise ValueError(f"loss.gamma must be > 0, got {gamma}")
        super().__init__(
            alpha, beta, smooth, class_weights, include_background, ignore_index, name, **kwargs
        )
        self.gamma = gamma

    def class_losses(self, one_hot: Any, probs: Any) -> Any:
        index = tversky_index(one_hot, probs, self.alpha, self.beta, self.smooth)
        return focal_tversky(index, self.gamma)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma}
