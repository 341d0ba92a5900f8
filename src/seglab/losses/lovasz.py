"""Lovász-softmax (Berman et al. 2018), a convex surrogate of the per-class Jaccard loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from seglab.losses.base import RegionLoss, prepare
from seglab.losses.functional import lovasz_softmax


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
        # Ignored pixels: zero truth and zero probability, hence zero error (they change no
        # term: lovasz_grad depends on the prefix only).
        losses = lovasz_softmax(one_hot, probs * valid[..., None])
        present = ops.cast(ops.sum(one_hot, axis=(0, 1, 2)) > 0, "float32")
        weights = self.mean_weights(num_classes) * present
        return ops.divide_no_nan(weights * losses, ops.sum(weights))
