"""Lovász-softmax (Berman et al. 2018), a convex surrogate of the per-class Jaccard loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from seglab.losses.base import RegionLoss, prepare


def lovasz_grad(sorted_truth: Any) -> Any:
    """Gradient of the Lovász extension of the Jaccard loss at sorted errors (per column).

    ``sorted_truth`` is (N, C): each column the class's 0/1 truth ordered by decreasing error.
    Entry i is ``J(i) - J(i - 1)`` with ``J(i)`` the Jaccard loss of predicting the first i+1
    pixels wrong (Berman et al., Algorithm 1).
    """
    total = ops.sum(sorted_truth, axis=0, keepdims=True)
    intersection = total - ops.cumsum(sorted_truth, axis=0)
    union = total + ops.cumsum(1.0 - sorted_truth, axis=0)
    jaccard = 1.0 - intersection / union
    return ops.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)


@keras.saving.register_keras_serializable(package="seglab")
class Lovasz(RegionLoss):
    """Lovász-softmax loss over the batch's pixels (Berman et al. 2018, reference code
    ``bermanmaxim/LovaszSoftmax``, ``classes='present'``, ``per_image=False``).

    For each class c present in the batch's truth: errors ``e_i = |g_i - p_i,c|`` sorted in
    decreasing order, ``l_c = <e_sorted, lovasz_grad(g_sorted)>``; the loss is the (weighted)
    mean of ``l_c`` over present classes. On hard 0/1 predictions ``l_c = 1 - IoU_c``.

    Args:
        class_weights: Weights of the mean over present classes.
        include_background: Whether class 0 takes part.
        ignore_index: Mask label that counts nowhere (its pixels have zero error).
        name: Loss name.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        include_background: bool = True,
        ignore_index: int | None = None,
        name: str = "lovasz",
        **kwargs: Any,
    ) -> None:
        super().__init__(class_weights, include_background, ignore_index, name, **kwargs)

    def per_class(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        del sample_weight
        one_hot, valid, probs = prepare(y_true, y_pred, self.ignore_index)
        num_classes = probs.shape[-1]
        truth = ops.reshape(one_hot, (-1, num_classes))
        # Ignored pixels: zero truth and zero probability, hence zero error; they sort last
        # and, contributing error 0, change no term (lovasz_grad depends on the prefix only).
        errors = ops.abs(truth - ops.reshape(probs * valid[..., None], (-1, num_classes)))
        order = ops.argsort(-errors, axis=0)
        sorted_errors = ops.take_along_axis(errors, order, axis=0)
        sorted_truth = ops.take_along_axis(truth, order, axis=0)
        losses = ops.sum(sorted_errors * ops.stop_gradient(lovasz_grad(sorted_truth)), axis=0)
        present = ops.cast(ops.sum(truth, axis=0) > 0, "float32")
        weights = self.mean_weights(num_classes) * present
        return ops.divide_no_nan(weights * losses, ops.sum(weights))
