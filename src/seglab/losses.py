"""Segmentation losses: ``keras.losses.Loss`` subclasses over pure functions of probabilities.

Targets are integer masks (B, H, W) (or (B, H, W, 1)); predictions are softmax probabilities
(B, H, W, C). Pixels labelled ``ignore_index`` contribute nothing.

Pixelwise losses return a (B, H, W) map; Keras multiplies it by the per-pixel ``sample_weight``
(class weights, see ``seglab.class_weights``) and divides the sum by the number of pixels
(``sum_over_batch_size``), the same reduction as Keras' own losses.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

EPSILON = 1e-7


def _labels_and_valid(y_true: Any, y_pred: Any, ignore_index: int | None) -> tuple[Any, Any]:
    """Integer labels safe to index with (ignored pixels -> 0) and the float valid-pixel mask."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape):
        y_true = ops.squeeze(y_true, axis=-1)
    labels = ops.cast(y_true, "int32")
    if ignore_index is None:
        return labels, ops.ones_like(labels, dtype=y_pred.dtype)
    valid = ops.not_equal(labels, ignore_index)
    return ops.where(valid, labels, 0), ops.cast(valid, y_pred.dtype)


def pixel_cross_entropy(y_true: Any, y_pred: Any, ignore_index: int | None = None) -> Any:
    """Per-pixel cross-entropy ``-log p[y]``, 0 on ignored pixels.

    Probabilities are renormalised over the class axis and clipped to ``[eps, 1 - eps]``, as
    ``keras.losses.sparse_categorical_crossentropy`` does for ``from_logits=False``.

    Args:
        y_true: Integer mask (B, H, W).
        y_pred: Probabilities (B, H, W, C).
        ignore_index: Label whose pixels get zero loss.

    Returns:
        (B, H, W) loss map.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    labels, valid = _labels_and_valid(y_true, y_pred, ignore_index)
    probs = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    probs = ops.clip(probs, EPSILON, 1.0 - EPSILON)
    one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
    return -ops.log(ops.sum(one_hot * probs, axis=-1)) * valid


@keras.saving.register_keras_serializable(package="seglab")
class CrossEntropy(keras.losses.Loss):
    """Sparse categorical cross-entropy with an ignore index.

    ``L = sum_i w_i * (-log p_i[y_i]) / N`` over all N pixels of the batch, where ``w_i`` is the
    per-pixel sample weight (1 without class weights, 0 on ignored pixels).

    Args:
        ignore_index: Mask label whose pixels contribute zero loss (``None``: every label counts).
        reduction: Keras reduction of the (B, H, W) loss map.
        name: Loss name.
    """

    def __init__(
        self,
        ignore_index: int | None = None,
        reduction: str = "sum_over_batch_size",
        name: str = "cross_entropy",
    ) -> None:
        super().__init__(name=name, reduction=reduction)
        self.ignore_index = ignore_index

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return pixel_cross_entropy(y_true, y_pred, self.ignore_index)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ignore_index": self.ignore_index}
