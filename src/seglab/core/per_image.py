"""Per-image evidence: a split's prediction kept as per-image per-class counts.

For every image and class, the pass keeps the true positives, false positives and false
negatives (pixels; ignored pixels count nowhere). Memory is O(images x classes), never the
predictions. Everything else derives from those counts:

- the split's scores (summed over images they equal the split's confusion-matrix scores);
- ``missed/<class>``: the share of the images that contain the class in which the prediction
  has no true positive for it (the class was "missed entirely" there);
- per-image IoU, for its distribution and for paired comparisons of two runs on the same images
  (:func:`seglab.analysis.compare_runs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seglab import schema
from seglab.core.scores import Scores, class_histograms, iou, label_validity, scores_from_counts

COUNT_COLUMNS = ("tp", "fp", "fn")


@dataclass(frozen=True)
class PerImageCounts:
    """Per-image, per-class pixel counts of one split.

    Attributes:
        names: One name per image (its mask file, or ``<split>[i]``).
        tp: True positives, shape (images, classes).
        fp: False positives, shape (images, classes).
        fn: False negatives, shape (images, classes).
    """

    names: tuple[str, ...]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def present(self) -> np.ndarray:
        """(images, classes): the class has true pixels in the image."""
        return np.asarray((self.tp + self.fn) > 0)

    def scores(self) -> Scores:
        """The split's scores from the counts summed over images."""
        return scores_from_counts(self.tp.sum(axis=0), self.fp.sum(axis=0), self.fn.sum(axis=0))

    def missed(self) -> np.ndarray:
        """(classes,): share of the images containing the class with no true positive for it;
        NaN for a class no image contains."""
        present = self.present
        missed = present & (self.tp == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present.any(axis=0), missed.sum(axis=0) / present.sum(axis=0), np.nan)

    def iou(self) -> np.ndarray:
        """(images, classes) per-image IoU, NaN where the class is neither true nor predicted."""
        return np.asarray(iou(self.tp, self.fp, self.fn))

    def frame(self, class_names: Sequence[str], split: str) -> pd.DataFrame:
        """Tidy rows: split, image, class, tp, fp, fn, present (one per image x class)."""
        images, classes = self.tp.shape
        return pd.DataFrame(
            {
                "split": split,
                "image": np.repeat(np.asarray(self.names, dtype=object), classes),
                "class": np.tile(np.asarray(class_names, dtype=object), images),
                "tp": self.tp.ravel(),
                "fp": self.fp.ravel(),
                "fn": self.fn.ravel(),
                "present": self.present.ravel(),
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, class_names: Sequence[str]) -> PerImageCounts:
        """Inverse of :meth:`frame` for one split (rows in any order)."""
        images = list(dict.fromkeys(frame["image"]))
        arrays = {
            column: frame.pivot(index="image", columns="class", values=column)
            .reindex(index=images, columns=list(class_names))
            .to_numpy(dtype=np.int64)
            for column in COUNT_COLUMNS
        }
        return cls(tuple(images), **arrays)


def count_batch(
    masks: np.ndarray, predictions: np.ndarray, num_classes: int, ignore_index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-image ``(tp, fp, fn)``, each ``(N, num_classes)``, of a batch of ``(N, H, W)`` true
    and predicted labels, and per image whether it has a true label outside
    ``[0, num_classes)`` that is not ``ignore_index`` (such pixels, and ignored ones, count
    nowhere)."""
    masks = masks.astype(np.int64)
    valid, bad = label_validity(masks, num_classes, ignore_index)
    truth = class_histograms(masks, valid, num_classes)
    predicted = class_histograms(predictions, valid, num_classes)
    tp = class_histograms(masks, valid & (masks == predictions), num_classes)
    return tp, predicted - tp, truth - tp, bad.any(axis=(1, 2))


def split_metrics(
    counts: PerImageCounts, class_names: Sequence[str], prefix: str
) -> dict[str, float]:
    """Metric dict of a split evaluation, keyed ``<prefix>/...``: ``miou``, ``min_iou``,
    ``pixel_acc``, ``class_acc`` and per class ``iou``, ``recall``, ``missed``."""
    scores = counts.scores()
    metrics = {
        schema.key(prefix, name): float(getattr(scores, name)) for name in schema.SPLIT_SCORES
    }
    per_class = {
        schema.IOU: scores.iou,
        schema.RECALL: scores.recall,
        schema.MISSED: counts.missed(),
    }
    for kind in schema.SPLIT_KINDS:
        for c, name in enumerate(class_names):
            metrics[schema.per_class(prefix, kind, name)] = float(per_class[kind][c])
    return metrics
