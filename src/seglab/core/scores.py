"""Per-class segmentation scores from pixel counts summed over a whole split.

IoU and Dice are computed once from the counts summed over every pixel of the split (a
confusion matrix, or per-image counts added up), never as a mean of per-batch scores (which
over-weights small batches and rare-class batches).

NaN rule: a class absent from both the truth and the prediction has ``TP + FP + FN = 0``; its
IoU and Dice are NaN (undefined, not 0 and not 1) and it is left out of ``miou``, ``min_iou`` and
the worst class. A class absent from the truth but predicted somewhere scores 0. Recall
``TP / (TP + FN)`` is NaN for a class absent from the truth, and left out of ``class_acc``.

The three numbers SegNet-style papers report are ``pixel_acc`` (global accuracy, "G"),
``class_acc`` (class-average accuracy: the mean per-class recall, "C") and ``miou``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from seglab.core.verdicts import how_hidden


@dataclass(frozen=True)
class Scores:
    """Scores of one split, all derived from its confusion matrix.

    Attributes:
        iou: Per-class IoU = TP / (TP + FP + FN), NaN where undefined.
        dice: Per-class Dice = 2TP / (2TP + FP + FN), NaN where undefined.
        recall: Per-class recall (accuracy of that class) = TP / (TP + FN), NaN for a class
            with no true pixels.
        support: True pixels of each class.
        predicted_share: Share of the counted pixels predicted as each class = (TP + FP) / N:
            near 1 for one class when a model predicts that class everywhere.
        miou: Mean IoU over defined classes.
        min_iou: IoU of the worst defined class.
        worst_class: Index of that class (-1 when no class is defined).
        pixel_acc: Correct pixels / all counted pixels (global accuracy, "G").
        class_acc: Mean recall over the classes with true pixels (class-average accuracy, "C").
    """

    iou: np.ndarray
    dice: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    predicted_share: np.ndarray
    miou: float
    min_iou: float
    worst_class: int
    pixel_acc: float
    class_acc: float


def class_histograms(labels: np.ndarray, keep: np.ndarray, num_classes: int) -> np.ndarray:
    """The pixels of each class in each image, ``int64 (N, num_classes)``, of ``(N, ...)``
    integer labels, counting only where ``keep`` is true (labels there must lie in
    ``[0, num_classes)``): one ``bincount`` for the whole batch, image ``i`` counting into
    bins ``[i * num_classes, (i + 1) * num_classes)``."""
    n = len(labels)
    slots = np.arange(n).reshape(n, *[1] * (labels.ndim - 1)) * num_classes + labels
    return np.bincount(slots[keep], minlength=n * num_classes).reshape(n, num_classes)


def iou(tp: Any, fp: Any, fn: Any, where: Callable[..., Any] = np.where) -> Any:
    """``IoU_c = TP / (TP + FP + FN)``, NaN where the class is neither true nor predicted.

    The one IoU formula of seglab. Written with operators and ``where`` only, so the same
    function computes it on NumPy arrays and, given ``keras.ops.where``, on Keras tensors inside a
    compiled step (the Keras confusion-matrix metric's mIoU).
    """
    union = tp + fp + fn
    defined = union > 0
    return where(defined, tp / where(defined, union, 1), np.nan)


def label_validity(labels: Any, num_classes: int, ignore_index: int | None) -> tuple[Any, Any]:
    """``(valid, bad)`` boolean masks of integer ``labels``: ``valid`` where a label is a class
    index in ``[0, num_classes)`` and not ``ignore_index``; ``bad`` where it is neither a class
    index nor ``ignore_index`` (a mask value nothing counts: an error, not a silent skip).

    The one label check of seglab: operators only, so it runs on NumPy arrays and on TensorFlow
    tensors in a compiled step alike.
    """
    in_range = (labels >= 0) & (labels < num_classes)
    if ignore_index is None:
        return in_range, ~in_range
    ignored = labels == ignore_index
    return in_range & ~ignored, ~in_range & ~ignored


def scores_from_confusion(cm: np.ndarray) -> Scores:
    """Per-class IoU, Dice and recall, mIoU, worst class, pixel and class-average accuracy from
    a confusion matrix (rows truth, columns prediction)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    return scores_from_counts(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp)


def scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> Scores:
    """:class:`Scores` from per-class true-positive, false-positive and false-negative pixel
    counts summed over a split (what a confusion matrix or per-image counts give)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    per_class = iou(tp, fp, fn)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    defined = ~np.isnan(per_class)
    total = (tp + fn).sum()
    return Scores(
        iou=per_class,
        dice=dice,
        recall=recall,
        support=(tp + fn).astype(np.int64),
        predicted_share=(tp + fp) / total if total else np.full(tp.shape, np.nan),
        miou=nan_mean(per_class),
        min_iou=float(np.nanmin(per_class)) if defined.any() else float("nan"),
        worst_class=int(np.nanargmin(per_class)) if defined.any() else -1,
        pixel_acc=float(tp.sum() / total) if total else float("nan"),
        class_acc=nan_mean(recall),
    )


def nan_mean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none (no warning)."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def per_class_table(
    scores: Scores,
    class_names: Sequence[str],
    train_pixel_share: np.ndarray,
    loss_share: np.ndarray,
    class_weights: np.ndarray | None = None,
    hidden: Sequence[int] = (),
    missed: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per class: training pixel share, class weight, val IoU, Dice, recall, share of
    the pixels predicted as the class, loss share, pixels, whether its failure is hidden (see
    :mod:`seglab.verdicts`) and how (:func:`~seglab.core.verdicts.how_hidden`) and, given
    per-image counts, the share of its images where it was missed entirely."""
    weights = np.ones(len(class_names)) if class_weights is None else class_weights
    columns = {
        "class": list(class_names),
        "train_pixel_share": np.asarray(train_pixel_share, dtype=float),
        "class_weight": np.asarray(weights, dtype=float),
        "val_iou": scores.iou,
        "val_dice": scores.dice,
        "val_recall": scores.recall,
        "val_predicted_share": scores.predicted_share,
        "val_loss_share": np.asarray(loss_share, dtype=float),
        "val_pixels": scores.support,
        "hidden_failure": [c in hidden for c in range(len(class_names))],
        "hidden_how": how_hidden(scores.recall, scores.predicted_share, hidden),
    }
    if missed is not None:
        columns["val_missed"] = np.asarray(missed, dtype=float)
    return pd.DataFrame(columns)
