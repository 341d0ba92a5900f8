"""Pixelwise losses: cross-entropy, focal loss, and the per-batch weighted CE pitfall."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from seglab.losses.base import PixelLoss, masked_one_hot, prepare_labels
from seglab.losses.functional import EPSILON, batch_count_weights, cross_entropy, focal

WEIGHT_BY = ("truth", "prediction")


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

    def __init__(
        self, ignore_index: int | None = None, name: str = "cross_entropy", **kwargs: Any
    ) -> None:
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
        if not alpha > 0:  # 0 trains nothing, a negative factor climbs the loss
            raise ValueError(f"loss.alpha must be > 0, got {alpha}")
        super().__init__(ignore_index=ignore_index, name=name, **kwargs)
        self.gamma = gamma
        self.alpha = alpha

    def pixel_loss(self, p_true: Any) -> Any:
        return focal(p_true, self.gamma, self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="seglab")
class BatchCountWeightedCE(PixelLoss):
    """Categorical CE with class weights recomputed inside the loss from every batch.

    The loss of the one-class-everywhere question, transcribed::

        w_c = B / (sum_{b,h,w} g_bhwc + eps)            # counts of this batch's targets
        p   = clip(y_pred / sum_c y_pred, eps, 1 - eps)  # renormalised and clipped
        l_i = -sum_c g_ic w_c log p_ic                   # weight_by="truth"
        L   = mean_i l_i                                 # Keras' mean over pixels and batch

    with ``eps = 1e-7`` (``keras.config.epsilon()``), ``g`` the one-hot targets and ``B`` the
    batch size. A class absent from the batch gets ``B / eps``; it multiplies no target, so it
    does nothing with ``weight_by="truth"``. ``weight_by="prediction"`` is the variant from the
    same discussion whose weights follow the prediction: pixel i weighs ``sum_c w_c p_ic`` (its
    gradient flows through ``p``), so probability put on an absent class costs ``B / eps``.

    Not a remedy: the fix is weights counted once over the whole training set
    (``class_weights=inverse_frequency``).

    Args:
        weight_by: ``truth`` (``w[y_i]``) or ``prediction`` (``sum_c w_c p_ic``).
        epsilon: The ``eps`` of the counts and of the clipping.
        ignore_index: Mask label whose pixels count nowhere (nor in the counts).
        name: Loss name.
    """

    def __init__(
        self,
        weight_by: str = "truth",
        epsilon: float = EPSILON,
        ignore_index: int | None = None,
        name: str = "batch_count_weighted_ce",
        **kwargs: Any,
    ) -> None:
        if weight_by not in WEIGHT_BY:
            raise ValueError(f"loss.weight_by must be one of {list(WEIGHT_BY)}, got {weight_by!r}")
        if epsilon <= 0:
            raise ValueError(f"loss.epsilon must be > 0, got {epsilon}")
        super().__init__(ignore_index=ignore_index, name=name, **kwargs)
        self.weight_by = weight_by
        self.epsilon = epsilon

    def weighted_pixel_losses(
        self, y_true: Any, y_pred: Any, sample_weight: Any = None
    ) -> tuple[Any, Any, Any]:
        labels, valid, probs = prepare_labels(y_true, y_pred, self.ignore_index)
        one_hot = masked_one_hot(labels, valid, ops.shape(probs)[-1])
        weights = batch_count_weights(one_hot, self.epsilon)
        # The question's order: renormalise and clip the whole prediction, then weigh and pick.
        renormalised = probs / ops.sum(probs, axis=-1, keepdims=True)
        clipped = ops.clip(renormalised, self.epsilon, 1.0 - self.epsilon)
        if self.weight_by == "truth":
            pixel_weights = ops.take(weights, labels)
        else:
            pixel_weights = ops.sum(clipped * weights, axis=-1)
        pixel_weights = pixel_weights * valid
        if sample_weight is not None:
            pixel_weights = pixel_weights * ops.cast(sample_weight, "float32")
        p_true = ops.take_along_axis(clipped, labels[..., None], axis=-1)[..., 0]
        return labels, valid, cross_entropy(p_true) * pixel_weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight_by": self.weight_by, "epsilon": self.epsilon}
