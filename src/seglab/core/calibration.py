"""Per-class calibration: does a predicted probability of 0.8 for a class come true 80 % of the
time? The expected calibration error (ECE) one class against the rest, and the data of its
reliability diagram.

For class ``c``, every valid pixel (the truth's ``ignore_index`` and labels outside the classes
are left out) falls into one of ``bins`` equal-width bins of its predicted probability ``p_c``
(a bin holds its right edge, not its left, as ``torch.bucketize`` puts it in MONAI's
``calibration_binning``; 0 is in the first bin); over the split,
``ECE_c = sum_b (n_b / N) * |mean(p_c in b) - share of b whose truth is c|`` (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017), as MONAI's ``CalibrationErrorMetric``
(``calibration_reduction="expected"``) computes it for one image holding every pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from seglab import schema


@dataclass
class Calibration:
    """Per class and probability bin: the pixels, their summed probability and how many of
    them truly are the class, accumulated batch by batch over a split.

    Args:
        num_classes: Classes ``0 .. num_classes - 1``.
        ignore_index: The truth's label of pixels left out.
        bins: Equal-width probability bins (15, as Guo et al.).
    """

    num_classes: int
    ignore_index: int = 255
    bins: int = 15
    counts: NDArray[np.int64] = field(init=False)
    confidence: NDArray[np.float64] = field(init=False)
    positives: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.bins < 1:
            raise ValueError(
                f"num_classes and bins must be >= 1, got {self.num_classes} and {self.bins}"
            )
        shape = (self.num_classes, self.bins)
        self.counts = np.zeros(shape, dtype=np.int64)
        self.confidence = np.zeros(shape, dtype=np.float64)
        self.positives = np.zeros(shape, dtype=np.int64)

    def add(self, probabilities: NDArray[np.floating], truths: NDArray[np.integer]) -> None:
        """Adds a batch: ``(N, H, W, C)`` class probabilities and ``(N, H, W)`` labels."""
        if probabilities.shape != (*truths.shape, self.num_classes):
            raise ValueError(
                f"probabilities {probabilities.shape} must be the truths' shape {truths.shape} "
                f"and {self.num_classes} classes"
            )
        valid = (truths >= 0) & (truths < self.num_classes)
        p = probabilities[valid]  # (pixels, classes)
        y = truths[valid]
        inner = np.linspace(0.0, 1.0, self.bins + 1)[1:-1]
        # Every (class, bin) at once: bin ``b`` of class ``c`` is cell ``c * bins + b``.
        cell = np.searchsorted(inner, p, side="left") + np.arange(self.num_classes) * self.bins
        size = self.num_classes * self.bins
        shape = (self.num_classes, self.bins)
        self.counts += np.bincount(cell.ravel(), minlength=size).reshape(shape)
        self.confidence += np.bincount(cell.ravel(), p.ravel(), size).reshape(shape)
        truly = cell[np.arange(len(y)), y]  # the cell of each pixel's true class
        self.positives += np.bincount(truly, minlength=size).reshape(shape)

    def ece(self) -> NDArray[np.float64]:
        """Per class, the expected calibration error (NaN without a valid pixel)."""
        total = self.counts.sum(axis=1)
        gap = np.abs(self.confidence - self.positives).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, gap / total, np.nan)

    def metrics(self, class_names: Sequence[str], prefix: str) -> dict[str, float]:
        """``<prefix>/ece/<class>`` of every class."""
        return {
            schema.per_class(prefix, schema.ECE, name): float(ece)
            for name, ece in zip(class_names, self.ece(), strict=True)
        }

    def reliability(self, class_names: list[str]) -> pd.DataFrame:
        """The reliability diagram's data: per class and bin, its edges, pixels, mean
        probability and the share of its pixels that truly are the class (NaN when empty)."""
        edges = np.linspace(0.0, 1.0, self.bins + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.confidence / self.counts
            share = self.positives / self.counts
        return pd.DataFrame(
            {
                "class": np.repeat(class_names, self.bins),
                "low": np.tile(edges[:-1], self.num_classes),
                "high": np.tile(edges[1:], self.num_classes),
                "pixels": self.counts.ravel(),
                "mean_probability": mean.ravel(),
                "truly_class": share.ravel(),
            }
        )
