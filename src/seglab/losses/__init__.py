"""Segmentation losses: ``keras.losses.Loss`` subclasses whose value is a sum of per-class terms.

See :mod:`seglab.losses.base` for the contract and how class weights reach each loss.
"""

from __future__ import annotations

from seglab.silence import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras imports TensorFlow, which prints its start-up lines

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from seglab.losses.base import PixelLoss, RegionLoss, SegmentationLoss
from seglab.losses.combo import BCEMinusDice, CEDice
from seglab.losses.functional import lovasz_grad
from seglab.losses.lovasz import Lovasz
from seglab.losses.pixel import BatchCountWeightedCE, CrossEntropy, FocalLoss
from seglab.losses.region import Dice, FocalTversky, GeneralizedDice, Tversky


def build_loss(
    factory: Callable[..., SegmentationLoss] | partial[SegmentationLoss],
    class_weights: np.ndarray | None,
    ignore_index: int,
) -> SegmentationLoss:
    """Builds a configured loss, routing class weights to it when it takes them.

    ``factory`` is a Hydra ``_partial_`` of a loss class. Region losses (and the Dice term of
    combos) get ``class_weights``; pixelwise losses get them as ``sample_weight`` maps from
    ``tf.data`` instead (see :func:`seglab.data.pipeline.batches`).
    """
    loss_class: Any = factory.func if isinstance(factory, partial) else factory
    kwargs: dict[str, Any] = {"ignore_index": ignore_index}
    if class_weights is not None and loss_class.class_weighted:
        kwargs["class_weights"] = [float(w) for w in class_weights]
    return factory(**kwargs)


__all__ = [
    "BCEMinusDice",
    "BatchCountWeightedCE",
    "CEDice",
    "CrossEntropy",
    "Dice",
    "FocalLoss",
    "FocalTversky",
    "GeneralizedDice",
    "Lovasz",
    "PixelLoss",
    "RegionLoss",
    "SegmentationLoss",
    "Tversky",
    "build_loss",
    "lovasz_grad",
]
