"""The contract every seglab loss follows: the loss is the sum of C per-class terms.

``loss(y_true, y_pred, sample_weight) == sum(loss.per_class(y_true, y_pred, sample_weight))``.
The per-class terms say how much of the loss each class carries (logged as
``val/loss_share/<class>``): the number that explains why a failing rare class barely moves the
mean loss.

Targets are integer masks (B, H, W) (or (B, H, W, 1)); predictions are probabilities
(B, H, W, C). Pixels labelled ``ignore_index`` count nowhere: not in a pixel mean, not in a
region sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from seglab.losses.functional import true_class_probability

REDUCTION = "sum_over_batch_size"  # Keras' default: the only one seglab losses honour


def prepare_labels(y_true: Any, y_pred: Any, ignore_index: int | None) -> tuple[Any, Any, Any]:
    """Integer labels, the valid-pixel mask, and float32 probabilities.

    Returns:
        ``(labels (B,H,W) int32, valid (B,H,W) float32, probs (B,H,W,C))``; ignored pixels have
        label 0 and ``valid == 0``.
    """
    # tf, not ops: Keras hands a tf.Variable back unconverted, which take_along_axis rejects.
    probs = ops.cast(tf.convert_to_tensor(y_pred), "float32")
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(probs.shape):
        y_true = ops.squeeze(y_true, axis=-1)
    labels = ops.cast(y_true, "int32")
    if ignore_index is None:
        return labels, ops.ones(ops.shape(labels), "float32"), probs
    keep = ops.not_equal(labels, ignore_index)
    return ops.where(keep, labels, 0), ops.cast(keep, "float32"), probs


def prepare(y_true: Any, y_pred: Any, ignore_index: int | None) -> tuple[Any, Any, Any]:
    """One-hot targets, the valid-pixel mask, and float32 probabilities.

    Returns:
        ``(one_hot (B,H,W,C), valid (B,H,W), probs (B,H,W,C))``; ignored pixels are all-zero
        rows of ``one_hot`` and have ``valid == 0``.
    """
    labels, valid, probs = prepare_labels(y_true, y_pred, ignore_index)
    return masked_one_hot(labels, valid, ops.shape(probs)[-1]), valid, probs


def masked_one_hot(labels: Any, valid: Any, num_classes: Any) -> Any:
    """(B, H, W, C) one-hot targets whose ignored pixels are all-zero rows."""
    return ops.one_hot(labels, num_classes, dtype="float32") * valid[..., None]


def scale_for_replicas(value: Any) -> Any:
    """Divides by the number of replicas, as Keras' own losses do under ``tf.distribute``
    (Keras' trainer multiplies the loss back for reporting)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


class SegmentationLoss(keras.losses.Loss):
    """Base class: subclasses implement :meth:`per_class`.

    Class attributes say how class weights reach the loss:

    * ``pixel_weighted``: the loss multiplies a per-pixel ``sample_weight`` map (pixelwise
      losses; seglab builds ``w[mask]`` in ``tf.data``).
    * ``class_weighted``: the constructor takes ``class_weights`` for its mean over classes
      (region losses).

    Args:
        ignore_index: Mask label that counts nowhere (``None``: every label counts).
        name: Loss name.

    Raises:
        ValueError: On a ``reduction`` other than Keras' default: the loss reduces itself.
    """

    pixel_weighted: ClassVar[bool] = False
    class_weighted: ClassVar[bool] = False

    def __init__(self, ignore_index: int | None = None, name: str | None = None, **kwargs: Any):
        reduction = kwargs.get("reduction", REDUCTION)
        if reduction != REDUCTION:
            raise ValueError(
                f"loss reduction={reduction!r} is not supported: seglab losses reduce over every "
                f"pixel of the batch themselves ({REDUCTION!r}); per_class() gives the per-class "
                "terms"
            )
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index

    def per_class(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The (C,) per-class terms whose sum is the loss."""
        raise NotImplementedError

    def total(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The loss: the sum of :meth:`per_class` (subclasses may compute it more directly)."""
        return ops.sum(self.per_class(y_true, y_pred, sample_weight))

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return scale_for_replicas(self.total(y_true, y_pred, sample_weight))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ignore_index": self.ignore_index}


class PixelLoss(SegmentationLoss):
    """A pixelwise loss: ``L = sum_i w_i * l(p_i) / N_valid``.

    ``l`` is :meth:`pixel_loss` of ``p_i``, the probability pixel i gives its true class
    (renormalised over classes and clipped to ``[eps, 1 - eps]``, as Keras' probability losses
    do); ``w_i`` is the per-pixel sample weight (1 without class weights) and ``N_valid`` the
    number of non-ignored pixels. Without ignored pixels this is Keras' ``sum_over_batch_size``
    reduction, so ``CrossEntropy`` equals ``keras.losses.SparseCategoricalCrossentropy`` with
    the same ``sample_weight`` on probabilities that sum to 1 (a softmax output); others are
    renormalised, as ``keras.losses.CategoricalCrossentropy`` does and the sparse one does not.
    The per-class term of class c sums over the pixels whose true class is c.
    """

    pixel_weighted = True

    def pixel_loss(self, p_true: Any) -> Any:
        """(B, H, W) loss of each pixel from the probability of its true class."""
        raise NotImplementedError

    def weighted_pixel_losses(
        self, y_true: Any, y_pred: Any, sample_weight: Any = None
    ) -> tuple[Any, Any, Any]:
        """``(labels, valid, w_i * l(p_i))``, each (B, H, W)."""
        labels, valid, probs = prepare_labels(y_true, y_pred, self.ignore_index)
        p_true = true_class_probability(labels, probs)
        weights = valid if sample_weight is None else valid * ops.cast(sample_weight, "float32")
        return labels, valid, self.pixel_loss(p_true) * weights

    def per_class(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        labels, valid, weighted = self.weighted_pixel_losses(y_true, y_pred, sample_weight)
        totals = ops.segment_sum(
            ops.reshape(weighted, (-1,)),
            ops.reshape(labels, (-1,)),
            num_segments=ops.shape(y_pred)[-1],
        )
        return ops.divide_no_nan(totals, ops.sum(valid))

    def total(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        _, valid, weighted = self.weighted_pixel_losses(y_true, y_pred, sample_weight)
        return ops.divide_no_nan(ops.sum(weighted), ops.sum(valid))


class RegionLoss(SegmentationLoss):
    """A loss reduced per class over the whole batch, then averaged over classes.

    ``L = sum_c w_c * l_c / sum_c w_c`` where ``l_c`` is :meth:`class_losses` and ``w_c`` the
    class weights (uniform by default; background excluded with ``include_background=False``).
    Reducing per class first is what keeps a rare class visible; pooling every class into one
    overlap (Keras' ``Dice()`` default) hides it like the mean CE does.

    Args:
        class_weights: Weights of the mean over classes (``None``: uniform).
        include_background: Whether class 0 takes part in the mean.
        ignore_index: Mask label that counts nowhere.
        name: Loss name.
    """

    class_weighted = True

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index=ignore_index, name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.include_background = include_background

    def class_losses(self, one_hot: Any, probs: Any) -> Any:
        """(C,) loss of each class from masked one-hot targets and probabilities."""
        raise NotImplementedError

    def included(self, num_classes: int) -> Any:
        """(C,) 1.0 for the classes that take part in the loss, 0.0 for an excluded background."""
        if self.include_background:
            return ops.ones((num_classes,), "float32")
        return ops.cast(ops.arange(num_classes) > 0, "float32")

    def mean_weights(self, num_classes: int) -> Any:
        """Weights of the mean over classes, background zeroed when excluded."""
        if self.class_weights is None:
            return self.included(num_classes)
        if len(self.class_weights) != num_classes:
            raise ValueError(
                f"{type(self).__name__} has {len(self.class_weights)} class_weights but the "
                f"model predicts {num_classes} classes"
            )
        return ops.convert_to_tensor(self.class_weights, "float32") * self.included(num_classes)

    def per_class(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        del sample_weight  # class weights act inside the mean over classes, not per pixel
        one_hot, valid, probs = prepare(y_true, y_pred, self.ignore_index)
        probs = probs * valid[..., None]
        weights = self.mean_weights(probs.shape[-1])
        return weights * self.class_losses(one_hot, probs) / ops.sum(weights)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "include_background": self.include_background,
        }
