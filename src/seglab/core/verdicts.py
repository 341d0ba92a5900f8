"""The hidden-failure verdict: classes that fail while the run's own loss says training works.

A class is a *hidden failure* of a run when both hold:

1. **The loss improved.** The validation loss (the objective the run optimises) fell from the
   first epoch to the last by at least ``min_loss_drop`` of its first-epoch value:
   ``(L_1 - L_E) / |L_1| >= min_loss_drop``. Judged on the run's own trajectory, so it holds
   for any loss scale (CE near 0.02, Dice near 0.7, ``bce_minus_dice`` below 0).
2. **The class did not follow.** Its validation IoU at the last epoch is below ``iou_floor``,
   although it has validation pixels.

Every class that meets (2) in a run that meets (1) is named, not only the worst. No aggregate
threshold (pixel accuracy, mIoU) takes part: those are what hide the class in the first place.

Why these defaults. ``iou_floor = 0.1``: below it, fewer than one in ten of the pixels that are
the class in truth or in the prediction are right, which is not a usable segmentation of it.
``min_loss_drop = 0.1``: a fall of a tenth of the first epoch's loss is what a user watching the
loss curve reads as "training works"; the runs these verdicts were checked on fell by 40-80 %.

Not flagged, on purpose: a run of one epoch (no trajectory yet); a run whose loss rose or
stalled (the loss itself shows the trouble); a class with no validation pixels (its IoU is NaN,
or measures false positives only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HiddenFailureRule:
    """Thresholds of the hidden-failure verdict (``metrics.hidden_failure`` in the config).

    Attributes:
        iou_floor: A class whose final validation IoU is below this fails.
        min_loss_drop: The loss counts as improved when it fell by at least this fraction of
            its first-epoch value.
    """

    iou_floor: float = 0.1
    min_loss_drop: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_floor <= 1.0:
            raise ValueError(
                f"metrics.hidden_failure.iou_floor must be in (0, 1], got {self.iou_floor}"
            )
        if not self.min_loss_drop >= 0.0:
            raise ValueError(
                f"metrics.hidden_failure.min_loss_drop must be >= 0, got {self.min_loss_drop}"
            )


def loss_drop(val_loss: Sequence[float]) -> float:
    """``(L_1 - L_E) / |L_1|``: the fall of the loss relative to its first epoch.

    NaN with fewer than two epochs, a non-finite end point or a first loss of exactly 0.
    """
    if len(val_loss) < 2:
        return math.nan
    first, last = float(val_loss[0]), float(val_loss[-1])
    if not (math.isfinite(first) and math.isfinite(last)) or first == 0.0:
        return math.nan
    return (first - last) / abs(first)


def hidden_classes(
    val_loss: Sequence[float],
    final_iou: Sequence[float] | np.ndarray,
    support: Sequence[int] | np.ndarray,
    rule: HiddenFailureRule,
) -> list[int]:
    """Indices of the classes whose failure the loss hides, in class order.

    Args:
        val_loss: Validation loss of every epoch so far, first to last.
        final_iou: Per-class validation IoU of the last epoch (NaN where undefined).
        support: Validation pixels of each class.
        rule: The thresholds.
    """
    drop = loss_drop(val_loss)
    if not drop >= rule.min_loss_drop:  # NaN (no trajectory) counts as not improved
        return []
    iou = np.asarray(final_iou, dtype=float)
    return [
        c
        for c in range(len(iou))
        if support[c] > 0 and not np.isnan(iou[c]) and iou[c] < rule.iou_floor
    ]


# How a hidden class fails, by what the model does with it (region scores of the split).
NEVER_PREDICTED = "never predicted"
PREDICTED_ELSEWHERE = "predicted, never on it"
PARTLY_FOUND = "partly found"


def how_hidden(
    recall: Sequence[float] | np.ndarray,
    predicted_share: Sequence[float] | np.ndarray,
    hidden: Sequence[int],
) -> list[str]:
    """Per class, how a hidden failure fails ("" for the others): :data:`NEVER_PREDICTED` (no
    pixel predicted as the class: missed entirely), :data:`PREDICTED_ELSEWHERE` (predicted,
    but not on one of its pixels: found at the wrong place) or :data:`PARTLY_FOUND` (some of
    its pixels found, too few for the IoU floor)."""

    def how(c: int) -> str:
        if c not in hidden:
            return ""
        if not predicted_share[c] > 0:
            return NEVER_PREDICTED
        return PREDICTED_ELSEWHERE if not recall[c] > 0 else PARTLY_FOUND

    return [how(c) for c in range(len(recall))]
