"""Per-class scores of where a class's outline is, beside region IoU: boundary IoU, the 95th
percentile Hausdorff distance (HD95) and the normalized surface Dice (NSD).

Region IoU says *that* a thin class fails, not *how*: a pole predicted one pixel off scores
like a pole not predicted at all. These say how far off it is.

Conventions (tested against the references in ``tests/test_boundary.py``):

- **Ignored pixels** (the truth's ``ignore_index``, or any label outside the classes) are
  neither truth nor prediction: per image and class, truth is ``truth == c`` and prediction is
  ``(prediction == c) & valid``.
- **Boundary IoU** (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
  Evaluation", CVPR 2021), as the authors' ``boundary-iou-api`` computes it: a mask's boundary
  is the mask minus its erosion by ``d`` iterations of a 3x3 square, outside the image counting
  as background (so a class touching the border has boundary there), with
  ``d = max(1, round(ratio * image diagonal))`` (ratio 0.02 by default). Over a split,
  ``sum |Gb & Pb| / sum |Gb | Pb|`` (summed over images, as region IoU sums its confusion
  matrix).
- **Surface distances**, as MONAI's ``get_edge_surface_distance`` computes them: a mask's edge
  is the mask minus its erosion by the 4-neighbour cross (outside the image is background);
  each edge pixel's Euclidean distance to the nearest edge pixel of the other mask.
- **HD95** of an image: the larger of the two directed 95th percentiles (linear interpolation),
  as MONAI's ``compute_hausdorff_distance(percentile=95)``.
- **NSD** of an image at a tolerance ``tau`` pixels: the edge pixels of both masks within
  ``tau`` of the other's edge, over all edge pixels, as MONAI's ``compute_surface_dice``.
- A class **absent from both** truth and prediction is NaN and left out of means; **absent from
  one** gives the worst value: boundary IoU and NSD 0, HD95 infinite (shown as ``inf``). The
  split's HD95 and NSD are the means over the images where they are defined (an infinite HD95
  keeps the mean infinite: a class missed entirely in one image is missed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from seglab import schema

SQUARE = np.ones((3, 3), dtype=bool)  # the boundary-iou-api's erosion kernel
CROSS = ndimage.generate_binary_structure(2, 1)  # scipy's default: MONAI's edges
BoolMask = NDArray[np.bool_]


def boundary_width(height: int, width: int, ratio: float = 0.02) -> int:
    """The boundary's width ``d`` in pixels: ``round(ratio * diagonal)``, at least 1."""
    return max(1, round(ratio * math.hypot(height, width)))  # Python's round, as the API


def inner_boundary(mask: BoolMask, width: int) -> BoolMask:
    """The pixels of ``mask`` within ``width`` (chessboard distance) of a background pixel or of
    the image's border: the mask minus its erosion (boundary IoU's ``G_d & G``)."""
    if not mask.any():
        return mask.copy()
    eroded: BoolMask = ndimage.binary_erosion(mask, SQUARE, iterations=width, border_value=0)
    return mask & ~eroded


def edges(mask: BoolMask) -> BoolMask:
    """The mask's edge pixels: those with a 4-neighbour outside it (or on the image border)."""
    eroded: BoolMask = ndimage.binary_erosion(mask, CROSS, border_value=0)
    return mask & ~eroded


def directed_distances(source: BoolMask, target: BoolMask) -> NDArray[np.float64]:
    """The Euclidean distance from each ``source`` pixel to the nearest ``target`` pixel (all
    infinite when ``target`` is empty)."""
    if not target.any():
        return np.full(int(source.sum()), np.inf)
    return np.asarray(ndimage.distance_transform_edt(~target))[source]


def hd95(prediction: BoolMask, truth: BoolMask) -> float:
    """The 95th-percentile Hausdorff distance between two masks' edges (NaN when both are
    empty, infinite when one is)."""
    pred_edges, true_edges = edges(prediction), edges(truth)
    if not pred_edges.any() and not true_edges.any():
        return math.nan
    if not pred_edges.any() or not true_edges.any():
        return math.inf
    return max(
        float(np.percentile(directed_distances(pred_edges, true_edges), 95)),
        float(np.percentile(directed_distances(true_edges, pred_edges), 95)),
    )


def surface_dice(prediction: BoolMask, truth: BoolMask, tolerance: float) -> float:
    """The normalized surface Dice at ``tolerance`` pixels (NaN when both masks are empty)."""
    pred_edges, true_edges = edges(prediction), edges(truth)
    total = int(pred_edges.sum() + true_edges.sum())
    if total == 0:
        return math.nan
    near = (directed_distances(pred_edges, true_edges) <= tolerance).sum() + (
        directed_distances(true_edges, pred_edges) <= tolerance
    ).sum()
    return float(near) / total


@dataclass
class SurfaceScores:
    """Boundary IoU, HD95 and NSD per class, accumulated image by image over a split.

    Args:
        num_classes: Classes ``0 .. num_classes - 1``.
        ignore_index: The truth's label of pixels that are neither truth nor prediction.
        ratio: Boundary IoU's width as a share of the image diagonal.
        tolerance: NSD's tolerance in pixels.
    """

    num_classes: int
    ignore_index: int = 255
    ratio: float = 0.02
    tolerance: float = 1.0
    intersection: NDArray[np.int64] = field(init=False)
    union: NDArray[np.int64] = field(init=False)
    distances: list[list[float]] = field(init=False)  # per class, HD95 of each image
    surface: list[list[float]] = field(init=False)  # per class, NSD of each image

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.ratio > 0:
            raise ValueError(f"the boundary width ratio must be > 0, got {self.ratio}")
        if not self.tolerance >= 0:
            raise ValueError(f"the surface Dice tolerance must be >= 0, got {self.tolerance}")
        self.intersection = np.zeros(self.num_classes, dtype=np.int64)
        self.union = np.zeros(self.num_classes, dtype=np.int64)
        self.distances = [[] for _ in range(self.num_classes)]
        self.surface = [[] for _ in range(self.num_classes)]

    def add(self, truths: NDArray[np.integer], predictions: NDArray[np.integer]) -> None:
        """Adds a batch of ``(N, H, W)`` truth and predicted label maps."""
        if truths.shape != predictions.shape or truths.ndim != 3:
            raise ValueError(
                f"truths {truths.shape} and predictions {predictions.shape} must both be "
                "(images, height, width)"
            )
        width = boundary_width(truths.shape[1], truths.shape[2], self.ratio)
        for truth, prediction in zip(truths, predictions, strict=True):
            valid = (truth >= 0) & (truth < self.num_classes)
            for c in range(self.num_classes):
                true_mask = truth == c
                pred_mask = (prediction == c) & valid
                true_band = inner_boundary(true_mask, width)
                pred_band = inner_boundary(pred_mask, width)
                self.intersection[c] += int((true_band & pred_band).sum())
                self.union[c] += int((true_band | pred_band).sum())
                self.distances[c].append(hd95(pred_mask, true_mask))
                self.surface[c].append(surface_dice(pred_mask, true_mask, self.tolerance))

    def boundary_iou(self) -> NDArray[np.float64]:
        """Per class: ``sum |Gb & Pb| / sum |Gb | Pb|`` over the split (NaN for a class in no
        truth and no prediction)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.union > 0, self.intersection / self.union, np.nan)

    def hd95(self) -> NDArray[np.float64]:
        """Per class: the mean HD95 over the images where it is defined (NaN: in none)."""
        return np.array([defined_mean(values) for values in self.distances])

    def nsd(self) -> NDArray[np.float64]:
        """Per class: the mean NSD over the images where it is defined (NaN: in none)."""
        return np.array([defined_mean(values) for values in self.surface])

    def metrics(self, class_names: Sequence[str], prefix: str) -> dict[str, float]:
        """``<prefix>/boundary_iou|hd95|nsd/<class>`` of every class (MLflow keeps an infinite
        HD95 as its largest float, 1.8e308)."""
        kinds = {
            schema.BOUNDARY_IOU: self.boundary_iou(),
            schema.HD95: self.hd95(),
            schema.NSD: self.nsd(),
        }
        return {
            schema.per_class(prefix, kind, name): float(values[c])
            for kind, values in kinds.items()
            for c, name in enumerate(class_names)
        }


def defined_mean(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (infinite ones included); NaN when none is."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan
