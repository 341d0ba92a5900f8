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
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from seglab import schema

BoolMask = NDArray[np.bool_]


def boundary_width(height: int, width: int, ratio: float = 0.02) -> int:
    """The boundary's width ``d`` in pixels: ``round(ratio * diagonal)``, at least 1."""
    return max(1, round(ratio * math.hypot(height, width)))  # Python's round, as the API


def compact(labels: NDArray[np.integer], num_classes: int) -> NDArray[np.signedinteger]:
    """``labels`` (classes ``0 .. num_classes - 1`` and -1) in the smallest signed type that
    holds them: the filters and comparisons over whole label maps then read an eighth of the
    bytes of int64."""
    if num_classes < 2**7:
        return labels.astype(np.int8)
    if num_classes < 2**15:
        return labels.astype(np.int16)
    return labels.astype(np.int64)


def inner_boundary(mask: BoolMask, width: int) -> BoolMask:
    """The pixels of ``mask`` within ``width`` (chessboard distance) of a background pixel or of
    the image's border: the mask minus its erosion by ``width`` 3x3 squares (boundary IoU's
    ``G_d & G``); :func:`band` of the one mask."""
    around: BoolMask = band(mask[None].astype(np.int8), width)[0]
    return mask & around


def edges(mask: BoolMask) -> BoolMask:
    """The mask's edge pixels: those with a 4-neighbour outside it (or on the image border), the
    mask minus its erosion by the cross; :func:`band_cross` of the one mask."""
    outline: BoolMask = band_cross(mask[None].astype(np.int8))[0]
    return mask & outline


def surface_scores(prediction: BoolMask, truth: BoolMask, tolerance: float) -> tuple[float, float]:
    """``(HD95, NSD at tolerance)`` of two masks: HD95 the larger directed 95th percentile
    between their edges (NaN when both are empty, infinite when one is), NSD the share of both
    edges within ``tolerance`` of the other (NaN when both are empty)."""
    pred, true = (EdgePixels.of(np.where(m, 0, -1)[None], 1) for m in (prediction, truth))
    distance, near = grouped_surface_scores(pred, true, tolerance)
    return float(distance[0]), float(near[0])


@dataclass(frozen=True)
class EdgePixels:
    """Every class's edge pixels in ``(N, H, W)`` label maps (:func:`band_cross`), as a map and as
    coordinates; each ``(image, class)`` is a group, ``image * num_classes + class``."""

    owner: NDArray[np.signedinteger]  # (N, H, W): a pixel's class on its class's edge, else -1
    image: NDArray[np.intp]
    row: NDArray[np.intp]
    column: NDArray[np.intp]
    label: NDArray[np.signedinteger]
    num_classes: int

    @classmethod
    def of(cls, labels: NDArray[np.signedinteger], num_classes: int) -> EdgePixels:
        """The edge pixels of ``labels``' classes ``0 .. num_classes - 1`` (others dropped)."""
        edge = band_cross(labels) & (labels >= 0) & (labels < num_classes)
        image, row, column = np.nonzero(edge)
        owner = compact(np.where(edge, labels, -1), num_classes)
        return cls(owner, image, row, column, labels[edge], num_classes)

    @cached_property
    def groups(self) -> NDArray[np.int64]:
        return self.image * self.num_classes + self.label

    @property
    def group_count(self) -> int:
        return len(self.owner) * self.num_classes


def grouped_surface_scores(
    pred: EdgePixels, true: EdgePixels, tolerance: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`surface_scores` of every ``(image, class)`` group at once, from each edge pixel's
    distance to the nearest edge pixel of the other mask in its group (:func:`nearest_edge`), as
    MONAI computes them. Per group ``(HD95, NSD)``."""
    groups = pred.group_count
    to_true, to_pred = nearest_edge(pred, true), nearest_edge(true, pred)
    pred_count = np.bincount(pred.groups, minlength=groups)
    true_count = np.bincount(true.groups, minlength=groups)
    distance = np.maximum(
        group_percentile(to_true, pred.groups, groups, 95.0),
        group_percentile(to_pred, true.groups, groups, 95.0),
    )
    near = np.bincount(pred.groups, to_true <= tolerance, groups) + np.bincount(
        true.groups, to_pred <= tolerance, groups
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        surface = near / (pred_count + true_count)
    one_missing = (pred_count == 0) != (true_count == 0)
    distance = np.where(one_missing, math.inf, distance)
    return distance, np.where(one_missing, 0.0, surface)


def rings(radius: int) -> list[tuple[float, list[tuple[int, int]]]]:
    """The ``(row, column)`` offsets within ``radius`` pixels grouped by their length, nearest
    first."""
    steps = range(-radius, radius + 1)
    lengths: dict[float, list[tuple[int, int]]] = {}
    for dy in steps:
        for dx in steps:
            if (length := math.hypot(dy, dx)) <= radius:
                lengths.setdefault(length, []).append((dy, dx))
    return sorted(lengths.items())


NEAR = rings(3)


def nearest_edge(points: EdgePixels, others: EdgePixels) -> NDArray[np.float64]:
    """Each of ``points``' distance to the nearest pixel of ``others`` in its group (infinite
    when its group has none), Euclidean and exact.

    A trained model's edges lie mostly within a few pixels of the truth's, so the offsets within
    3 pixels are tried first, ring by ring of equal length, nearest first: per offset, the
    points' edge map against the other edge map shifted by it, every image and class at once
    (a comparison of two small-integer maps, cheaper than gathering the points one by one); the
    rest go to one k-d tree over the other edges of their groups, each group's columns shifted
    further apart than two points of one image can be, the search bounded by the image's diagonal.
    """
    radius = int(NEAR[-1][0])
    mine = points.owner
    height, width = mine.shape[1:]
    padded = np.pad(others.owner, ((0, 0), (radius, radius), (radius, radius)), constant_values=-1)
    found = np.full(mine.shape, math.inf)
    unresolved = mine >= 0
    for length, offsets in NEAR:
        hit = np.zeros(mine.shape, dtype=bool)
        for dy, dx in offsets:
            top, left = radius + dy, radius + dx
            hit |= padded[:, top : top + height, left : left + width] == mine
        hit &= unresolved
        np.copyto(found, length, where=hit)
        unresolved &= ~hit
        if not unresolved.any():
            break
    distance = found[points.image, points.row, points.column]
    # A point whose group has no other edge stays infinitely far: left out of the search, where
    # it would look through its neighbours' groups up to the bound.
    reachable = np.bincount(others.groups, minlength=points.group_count) > 0
    pending = np.flatnonzero(np.isinf(distance) & reachable[points.groups])
    if not len(pending):
        return distance
    groups = points.groups[pending]
    candidates = np.isin(others.groups, groups)
    spacing = 4.0 * float(height + width)  # > 2 * (largest distance + width)

    def lifted(
        rows: NDArray[np.intp], columns: NDArray[np.intp], group: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        return np.column_stack([rows, columns + group * spacing]).astype(np.float64)

    tree = cKDTree(
        lifted(others.row[candidates], others.column[candidates], others.groups[candidates]),
        balanced_tree=False,  # built in half the time, queried as fast
    )
    query = lifted(points.row[pending], points.column[pending], groups)
    # Within an image no two pixels are further apart than its diagonal; other groups are
    # further still.
    bound = math.hypot(height, width) + 1.0
    distance[pending] = tree.query(query, distance_upper_bound=bound)[0]
    return distance


def group_percentile(
    values: NDArray[np.float64], groups: NDArray[np.int64], count: int, q: float
) -> NDArray[np.float64]:
    """The ``q``-th percentile of each group's values (linear interpolation, as
    ``np.percentile``; NaN for an empty group), every group in one sort."""
    # One sort of a single key (twice as fast as sorting by two): the group, scaled above every
    # finite value, plus the value; an infinite value sorts last in its group.
    finite = np.isfinite(values)
    top = float(values[finite].max(initial=0.0)) + 1.0
    order = np.argsort(groups * (top + 1.0) + np.where(finite, values, top), kind="stable")
    ordered = values[order]
    sizes = np.bincount(groups, minlength=count)
    starts = np.cumsum(sizes) - sizes
    position = starts + q / 100.0 * np.maximum(sizes - 1, 0)
    low = np.floor(position).astype(np.int64)
    high = np.ceil(position).astype(np.int64)
    result = np.full(count, math.nan)
    filled = sizes > 0
    a, b = ordered[low[filled]], ordered[high[filled]]
    fraction = position[filled] - low[filled]
    with np.errstate(invalid="ignore"):
        result[filled] = np.where(b == a, a, a + (b - a) * fraction)
    return result


CROSS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # the 4-neighbours
SQUARE = (*CROSS, (-1, -1), (-1, 1), (1, -1), (1, 1))  # the 8-neighbours


def differs_around(
    labels: NDArray[np.signedinteger], neighbours: Sequence[tuple[int, int]]
) -> BoolMask:
    """Per pixel of ``(N, H, W)`` label maps: whether one of its ``neighbours`` (offsets of at
    most one pixel) holds another label or is outside the image."""
    height, width = labels.shape[1:]
    padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=-2)
    centre = padded[:, 1:-1, 1:-1]
    found = np.zeros(labels.shape, dtype=bool)
    for dy, dx in neighbours:
        found |= padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] != centre
    return found


def band(labels: NDArray[np.signedinteger], width: int) -> BoolMask:
    """Per pixel of ``(N, H, W)`` label maps: whether its ``(2 * width + 1)``-square window
    holds another label or leaves the image: every class's :func:`inner_boundary` at once.

    Such a window holds another label exactly when the pixel is within ``width - 1`` (chessboard
    distance) of a pixel whose 8-neighbours do (on the straight way there, the last pixel before
    the other label; and a pixel within ``width - 1`` whose own label differs has that 8-neighbour
    itself), so the 8-neighbour band grown by one ``(2 * width - 1)``-square maximum: one filter
    over booleans instead of a minimum and a maximum over labels.
    """
    return square_dilation(differs_around(labels, SQUARE), width - 1)


def square_dilation(mask: BoolMask, radius: int) -> BoolMask:
    """``(N, H, W)`` masks grown by ``radius`` pixels in chessboard distance (a
    ``(2 * radius + 1)``-square maximum, outside the image counting as False): along the rows,
    then the columns, each an OR of shifted views (ten times faster than
    ``ndimage.maximum_filter`` at these sizes)."""
    grown = mask
    for axis in (2, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(grown, pad)
        grown = np.zeros(mask.shape, dtype=bool)
        window: list[slice] = [slice(None)] * 3
        for shift in range(2 * radius + 1):
            window[axis] = slice(shift, shift + mask.shape[axis])
            grown |= padded[tuple(window)]
    return grown


def band_cross(labels: NDArray[np.signedinteger]) -> BoolMask:
    """Per pixel of ``(N, H, W)`` label maps: whether a 4-neighbour holds another label or is
    outside the image: every class's :func:`edges` at once."""
    return differs_around(labels, CROSS)


def hd95(prediction: BoolMask, truth: BoolMask) -> float:
    """The 95th-percentile Hausdorff distance between two masks' edges (NaN when both are
    empty, infinite when one is)."""
    return surface_scores(prediction, truth, 0.0)[0]


def surface_dice(prediction: BoolMask, truth: BoolMask, tolerance: float) -> float:
    """The normalized surface Dice at ``tolerance`` pixels (NaN when both masks are empty)."""
    return surface_scores(prediction, truth, tolerance)[1]


class OutlineCounts(NamedTuple):
    """A block of images' outline scores: per class, the boundary bands' intersection and union
    summed over the images; per image and class, HD95 and NSD."""

    intersection: NDArray[np.int64]
    union: NDArray[np.int64]
    distance: NDArray[np.float64]  # (images, classes)
    near: NDArray[np.float64]  # (images, classes)


def outline_counts(
    truths: NDArray[np.integer],
    predictions: NDArray[np.integer],
    num_classes: int,
    width: int,
    tolerance: float,
) -> OutlineCounts:
    """The outline scores of ``(N, H, W)`` truth and predicted label maps, every class at once
    where it can be: a pixel is in its class's boundary band when its ``(2 * width + 1)``-square
    window holds another label or leaves the image (what eroding each class's mask by ``width``
    squares removes), and on its class's edge when a 4-neighbour does; only the distances
    between edges go class by class."""
    n = num_classes
    valid = (truths >= 0) & (truths < n)
    truth = compact(np.where(valid, truths, -1), n)  # ignored: neither truth nor prediction
    prediction = compact(np.where(valid, predictions, -1), n)
    true_band = band(truth, width) & (truth >= 0)
    pred_band = band(prediction, width) & (prediction >= 0)
    inter = np.bincount(truth[true_band & pred_band & (truth == prediction)], minlength=n)
    union = np.bincount(truth[true_band], minlength=n) + np.bincount(
        prediction[pred_band], minlength=n
    )
    distance, near = grouped_surface_scores(
        EdgePixels.of(prediction, n), EdgePixels.of(truth, n), tolerance
    )
    return OutlineCounts(inter, union - inter, distance.reshape(-1, n), near.reshape(-1, n))


@dataclass
class SurfaceScores:
    """Boundary IoU, HD95 and NSD per class, accumulated image by image over a split.

    Args:
        num_classes: Classes ``0 .. num_classes - 1``.
        ignore_index: The truth's label of pixels that are neither truth nor prediction.
        ratio: Boundary IoU's width as a share of the image diagonal.
        tolerance: NSD's tolerance in pixels.
        threads: How many parts of a batch are scored at once (the cores the caller may use).
    """

    num_classes: int
    ignore_index: int = 255
    ratio: float = 0.02
    tolerance: float = 1.0
    threads: int = 1
    intersection: NDArray[np.int64] = field(init=False)
    union: NDArray[np.int64] = field(init=False)
    distances: list[list[float]] = field(init=False)  # per class, HD95 of each image
    surface: list[list[float]] = field(init=False)  # per class, NSD of each image
    seconds: float = field(init=False, default=0.0)  # spent in add, for the run's timings

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.ratio > 0:
            raise ValueError(f"the boundary width ratio must be > 0, got {self.ratio}")
        if not self.tolerance >= 0:
            raise ValueError(f"the surface Dice tolerance must be >= 0, got {self.tolerance}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        self.intersection = np.zeros(self.num_classes, dtype=np.int64)
        self.union = np.zeros(self.num_classes, dtype=np.int64)
        self.distances = [[] for _ in range(self.num_classes)]
        self.surface = [[] for _ in range(self.num_classes)]

    def add(self, truths: NDArray[np.integer], predictions: NDArray[np.integer]) -> None:
        """Adds a batch of ``(N, H, W)`` truth and predicted label maps
        (:func:`outline_counts`)."""
        if truths.shape != predictions.shape or truths.ndim != 3:
            raise ValueError(
                f"truths {truths.shape} and predictions {predictions.shape} must both be "
                "(images, height, width)"
            )
        started = time.perf_counter()
        n = self.num_classes
        width = boundary_width(truths.shape[1], truths.shape[2], self.ratio)

        def score(images: slice) -> OutlineCounts:
            return outline_counts(truths[images], predictions[images], n, width, self.tolerance)

        # NumPy and the k-d tree let go of the GIL in their loops: two halves of a batch in two
        # threads take about three quarters of the time of one.
        threads = min(self.threads, len(truths))
        halves = [
            slice(i * len(truths) // threads, (i + 1) * len(truths) // threads)
            for i in range(threads)
        ]
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(score, halves))
        else:
            parts = [score(halves[0])]
        for part in parts:
            self.intersection += part.intersection
            self.union += part.union
            for c in range(n):
                self.distances[c].extend(part.distance[:, c].tolist())
                self.surface[c].extend(part.near[:, c].tolist())
        self.seconds += time.perf_counter() - started

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
