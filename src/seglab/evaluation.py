"""Per-image evidence: one prediction pass over a split, kept as per-image per-class counts.

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

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from seglab.data import SegmentationData, readable_batches
from seglab.metrics import Scores, class_histograms, scores_from_counts
from seglab.prediction import LabelPredictor, label_predictor

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
        return (self.tp + self.fn) > 0

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
        union = self.tp + self.fp + self.fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.tp / union, np.nan)

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


def per_image_counts(
    model: keras.Model | LabelPredictor,
    stream: tf.data.Dataset,
    num_classes: int,
    ignore_index: int,
    batch_size: int = 8,
    files: Sequence[Sequence[str]] | None = None,
    split: str = "split",
) -> PerImageCounts:
    """Predicts every image of an unbatched ``(image, mask)`` stream and counts per image.

    ``model`` may be a :class:`~seglab.prediction.LabelPredictor`, whose one trace a run
    shares between its passes; a model gets one of its own. ``files`` (each sample's image,
    then mask) name the images by their mask files, else ``<split>[<index>]``.

    Raises:
        ValueError: On a true label outside ``[0, num_classes)`` that is not ``ignore_index``,
            naming the image, and on a file that cannot be read, naming it.
    """
    predict = label_predictor(model)
    names = [sample[-1] for sample in files] if files else None
    rows: dict[str, list[np.ndarray]] = {k: [] for k in COUNT_COLUMNS}
    seen = 0
    for images, masks in readable_batches(stream, batch_size, files):
        *counts, bad = count_batch(
            masks.numpy(), predict(images).numpy(), num_classes, ignore_index
        )
        if bad.any():
            index = seen + int(np.argmax(bad))
            name = names[index] if names else f"{split}[{index}]"
            raise ValueError(
                f"mask {name} has labels outside 0..{num_classes - 1} that are not "
                f"ignore_index={ignore_index}"
            )
        for key, value in zip(COUNT_COLUMNS, counts, strict=True):
            rows[key].append(value)
        seen += len(bad)
    if seen == 0:
        raise ValueError(f"the {split} split is empty: nothing to evaluate")
    image_names = tuple(names) if names else tuple(f"{split}[{i}]" for i in range(seen))
    return PerImageCounts(image_names, *(np.concatenate(rows[k]) for k in COUNT_COLUMNS))


def split_counts_per_image(
    model: keras.Model | LabelPredictor, data: SegmentationData, split: str, batch_size: int
) -> PerImageCounts:
    """:func:`per_image_counts` of one of ``data``'s splits, its images named by their files."""
    return per_image_counts(
        model,
        data.stream(split),
        data.num_classes,
        data.ignore_index,
        batch_size,
        data.sample_files(split),
        split,
    )


def count_batch(
    masks: np.ndarray, predictions: np.ndarray, num_classes: int, ignore_index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-image ``(tp, fp, fn)``, each ``(N, num_classes)``, of a batch of ``(N, H, W)`` true
    and predicted labels, and per image whether it has a true label outside
    ``[0, num_classes)`` that is not ``ignore_index`` (such pixels, and ignored ones, count
    nowhere)."""
    masks = masks.astype(np.int64)
    in_range = (masks >= 0) & (masks < num_classes)
    valid = in_range & (masks != ignore_index)
    truth = class_histograms(masks, valid, num_classes)
    predicted = class_histograms(predictions, valid, num_classes)
    tp = class_histograms(masks, valid & (masks == predictions), num_classes)
    bad = (~in_range & (masks != ignore_index)).any(axis=(1, 2))
    return tp, predicted - tp, truth - tp, bad


def split_metrics(
    counts: PerImageCounts, class_names: Sequence[str], prefix: str
) -> dict[str, float]:
    """Metric dict of a split evaluation, keyed ``<prefix>/...``: ``miou``, ``min_iou``,
    ``pixel_acc``, ``class_acc`` and per class ``iou``, ``recall``, ``missed``."""
    scores = counts.scores()
    metrics = {
        f"{prefix}/miou": scores.miou,
        f"{prefix}/min_iou": scores.min_iou,
        f"{prefix}/pixel_acc": scores.pixel_acc,
        f"{prefix}/class_acc": scores.class_acc,
    }
    missed = counts.missed()
    for c, name in enumerate(class_names):
        metrics[f"{prefix}/iou/{name}"] = float(scores.iou[c])
        metrics[f"{prefix}/recall/{name}"] = float(scores.recall[c])
        metrics[f"{prefix}/missed/{name}"] = float(missed[c])
    return metrics
