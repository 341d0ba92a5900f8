"""Per-class segmentation scores from a confusion matrix streamed over a whole split.

IoU and Dice are computed once from the confusion matrix summed over every validation pixel,
never as a mean of per-batch scores (which over-weights small batches and rare-class batches).

NaN rule: a class absent from both the truth and the prediction has ``TP + FP + FN = 0``; its
IoU and Dice are NaN (undefined, not 0 and not 1) and it is left out of ``miou``, ``min_iou`` and
the worst class. A class absent from the truth but predicted somewhere scores 0. Recall
``TP / (TP + FN)`` is NaN for a class absent from the truth, and left out of ``class_acc``.

The three numbers SegNet-style papers report are ``pixel_acc`` (global accuracy, "G"),
``class_acc`` (class-average accuracy: the mean per-class recall, "C") and ``miou``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops


class ValidationOnly:
    """Mixin: batches count only while ``validating`` is true, checked when Keras traces a step.

    Keras updates compile metrics in training steps too; seglab reads them after validation
    only. Its trainer clears ``validating`` before ``fit`` and ``seglab.callbacks.ValidationGate``
    sets it around each validation pass, so the training step is traced with no metric ops at
    all and the test step with them. (A gate variable read inside the graph still cost up to 3 %
    of a small U-Net's training step.) Outside that trainer ``validating`` stays true and every
    batch counts. Subclasses compute the increments of their ``accumulators`` in
    :meth:`deltas`.
    """

    validating: bool = True
    accumulators: tuple[Any, ...] = ()

    def deltas(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tuple[Any, ...]:
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        if not self.validating:
            return
        deltas = self.deltas(y_true, y_pred, sample_weight)
        for variable, delta in zip(self.accumulators, deltas, strict=True):
            variable.assign_add(delta)


@keras.saving.register_keras_serializable(package="seglab")
class ConfusionMatrix(ValidationOnly, keras.metrics.Metric):
    """Streams a (C, C) confusion matrix (rows: truth, columns: argmax prediction).

    Memory is O(C^2), independent of the dataset. Pixels labelled ``ignore_index`` are skipped;
    ``sample_weight`` is ignored on purpose: the matrix counts pixels, so class weights applied
    to the loss never distort the scores. Its ``result()`` is the mIoU (NaN-aware); read the
    whole matrix with :meth:`matrix`.

    A true label outside ``[0, C)`` that is not ``ignore_index`` has no row: such pixels are
    counted in :attr:`out_of_range` and :meth:`matrix` raises rather than return scores that
    silently leave them out.

    Args:
        num_classes: Number of classes C.
        ignore_index: Mask label to skip (``None``: none).
        name: Metric name (the key in Keras logs).
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = None, name: str = "miou", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", dtype="int64", name="counts"
        )
        self.invalid = self.add_variable(
            shape=(), initializer="zeros", dtype="int64", name="out_of_range"
        )
        self.accumulators = (self.counts, self.invalid)

    def deltas(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tuple[Any, ...]:
        del sample_weight  # pixels are counted, not weighted
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, axis=-1)
        truth = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        pred = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        c = self.num_classes
        in_range = (truth >= 0) & (truth < c)
        ignored = (
            ops.zeros_like(in_range) if self.ignore_index is None else truth == self.ignore_index
        )
        valid = in_range & ~ignored
        # Invalid pixels go to bin c*c, which the slice below drops. A segment sum with a fixed
        # number of bins, not bincount, whose output size XLA (jit_compile) cannot know.
        flat = ops.where(valid, truth * c + pred, c * c)
        counts = ops.segment_sum(ops.ones_like(flat), flat, num_segments=c * c + 1)[: c * c]
        out_of_range = ops.sum(ops.cast(~in_range & ~ignored, "int64"))
        return ops.reshape(ops.cast(counts, "int64"), (c, c)), out_of_range

    @property
    def out_of_range(self) -> int:
        """Pixels whose true label was neither a class index nor ``ignore_index``."""
        return int(ops.convert_to_numpy(self.invalid))

    def result(self) -> Any:
        cm = ops.cast(self.counts, "float64")
        tp = ops.diagonal(cm)
        union = ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - tp
        present = ops.cast(union > 0, "float64")
        iou = ops.divide_no_nan(tp, union)
        return ops.cast(ops.divide_no_nan(ops.sum(iou * present), ops.sum(present)), "float32")

    def matrix(self) -> np.ndarray:
        """The accumulated confusion matrix as int64 numpy (rows truth, columns prediction).

        Raises:
            ValueError: When some true labels were outside ``[0, C)`` and not ``ignore_index``.
        """
        if bad := self.out_of_range:
            raise ValueError(
                f"ConfusionMatrix: {bad} pixels have a true label outside 0..{self.num_classes - 1}"
                f" that is not ignore_index={self.ignore_index}; they have no row in the matrix. "
                "Check num_classes and ignore_index against the masks"
            )
        return np.asarray(ops.convert_to_numpy(self.counts), dtype=np.int64)

    def reset_state(self) -> None:
        self.counts.assign(ops.zeros_like(self.counts))
        self.invalid.assign(0)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }


@keras.saving.register_keras_serializable(package="seglab")
class PerClassLoss(ValidationOnly, keras.metrics.Metric):
    """Streams a loss's per-class terms over a split: how much of the loss each class carries.

    Accumulates ``loss.per_class(y_true, y_pred, sample_weight) * batch_size`` per batch, the
    same batch-size weighting Keras uses for ``val_loss``, so the terms of the whole split sum
    to the reported loss. ``result()`` is that loss; :meth:`shares` gives each class's fraction.

    Args:
        loss: A ``seglab.losses.SegmentationLoss`` (anything with ``per_class``).
        num_classes: Number of classes C.
        use_sample_weight: Pass the pixel weights on (``False``: the unweighted loss, e.g. an
            unweighted CE that is comparable across runs with different class weights).
        name: Metric name (the key in Keras logs).
    """

    def __init__(
        self,
        loss: Any,
        num_classes: int,
        use_sample_weight: bool = True,
        name: str = "loss_terms",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.loss = loss
        self.num_classes = num_classes
        self.use_sample_weight = use_sample_weight
        self.totals = self.add_variable(
            shape=(num_classes,), initializer="zeros", dtype="float64", name="totals"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")
        self.accumulators = (self.totals, self.count)

    def deltas(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tuple[Any, ...]:
        terms = self.loss.per_class(
            y_true, y_pred, sample_weight if self.use_sample_weight else None
        )
        batch = ops.cast(ops.shape(y_pred)[0], "float64")
        return ops.cast(terms, "float64") * batch, batch

    def result(self) -> Any:
        return ops.cast(ops.divide_no_nan(ops.sum(self.totals), self.count), "float32")

    def terms(self) -> np.ndarray:
        """Per-class terms of the split (they sum to the loss)."""
        count = float(ops.convert_to_numpy(self.count))
        return np.asarray(ops.convert_to_numpy(self.totals)) / max(count, 1.0)

    def shares(self) -> np.ndarray:
        """Each class's fraction of the loss (terms / their sum; NaN when the sum is 0)."""
        terms = self.terms()
        total = terms.sum()
        return terms / total if total else np.full_like(terms, np.nan)

    def reset_state(self) -> None:
        self.totals.assign(ops.zeros_like(self.totals))
        self.count.assign(ops.zeros_like(self.count))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "num_classes": self.num_classes,
            "use_sample_weight": self.use_sample_weight,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PerClassLoss:
        loss = keras.saving.deserialize_keras_object(config.pop("loss"))
        return cls(loss, **config)


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
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
    defined = ~np.isnan(iou)
    total = (tp + fn).sum()
    return Scores(
        iou=iou,
        dice=dice,
        recall=recall,
        support=(tp + fn).astype(np.int64),
        predicted_share=(tp + fp) / total if total else np.full(tp.shape, np.nan),
        miou=nan_mean(iou),
        min_iou=float(np.nanmin(iou)) if defined.any() else float("nan"),
        worst_class=int(np.nanargmin(iou)) if defined.any() else -1,
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
    :mod:`seglab.verdicts`) and, given per-image counts, the share of its images where it was
    missed entirely."""
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
    }
    if missed is not None:
        columns["val_missed"] = np.asarray(missed, dtype=float)
    return pd.DataFrame(columns)
