"""Class-weight schemes: pure functions from whole-training-set counts to one weight per class.

Weights are computed once from the whole training set (``seglab.data.class_counts``). In the
one-class-everywhere question they were recomputed from each batch and the U-Net predicted one
class everywhere; the ``per_batch`` scheme recomputes inverse frequency per batch to study that
(see :func:`batch_inverse_frequency` and ``experiments/per_batch_weights_pitfall``, where it did
not collapse: the near-infinite weight the question's loss gives a class absent from a batch is
not reproduced by this scheme).

How weights reach the loss: pixelwise losses (CE, focal) receive a per-pixel ``sample_weight``
map ``w[mask]`` built in ``tf.data``; region losses (Dice, Tversky, ...) take the weights as
``class_weights`` in their mean over classes. Keras' ``fit(class_weight=...)`` is never used: it
fails on (B, H, W) masks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seglab.core.checks import check_choice

SCHEMES = (
    "none",
    "inverse_frequency",
    "inverse_sqrt",
    "median_frequency",
    "enet",
    "effective_number",
    "manual",
    "per_batch",
)
NORMALIZATIONS = ("none", "mean", "pixel")


@dataclass(frozen=True)
class ClassCounts:
    """Per-class pixel statistics of one split, from a single streaming pass.

    Attributes:
        pixels: Pixels of each class, shape (C,).
        images: Images that contain each class, shape (C,).
        image_pixels: Labelled pixels of the images that contain each class, shape (C,) (the
            denominator of median-frequency balancing).
        num_images: Images in the split.
    """

    pixels: np.ndarray
    images: np.ndarray
    image_pixels: np.ndarray
    num_images: int

    @property
    def pixel_share(self) -> np.ndarray:
        """Fraction of the split's labelled pixels that belong to each class."""
        return self.pixels / max(int(self.pixels.sum()), 1)


def inverse_frequency(counts: ClassCounts) -> np.ndarray:
    """``w_c = N / (C * n_c)``, scikit-learn's "balanced" weights (inf or NaN for an absent
    class)."""
    n = counts.pixels
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(n.sum() / (len(n) * n), dtype=float)


def inverse_sqrt(counts: ClassCounts) -> np.ndarray:
    """``w_c = 1 / sqrt(p_c)``, a milder inverse frequency (p_c: pixel share)."""
    with np.errstate(divide="ignore"):
        return np.asarray(1.0 / np.sqrt(counts.pixel_share), dtype=float)


def median_frequency(counts: ClassCounts) -> np.ndarray:
    """Median frequency balancing (Eigen & Fergus 2015).

    ``f_c = pixels of c / pixels of the images that contain c``; ``w_c = median(f) / f_c``, the
    median over the classes present in the training set.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        freq = counts.pixels / counts.image_pixels
        return np.asarray(np.median(freq[counts.pixels > 0]) / freq, dtype=float)


def enet(counts: ClassCounts, k: float = 1.02) -> np.ndarray:
    """ENet weighting (Paszke et al. 2016): ``w_c = 1 / ln(k + p_c)``.

    Bounded above by ``1 / ln(k)`` (about 50.5 for k = 1.02), so a very rare class cannot
    dominate; defined for absent classes too.
    """
    if k <= 1.0:
        raise ValueError(f"class_weights.k must be > 1 (ln(k + p) must stay positive), got {k}")
    return 1.0 / np.log(k + counts.pixel_share)


def effective_number(counts: ClassCounts, beta: float = 0.9999) -> np.ndarray:
    """Class-balanced weights (Cui et al. 2019): ``w_c = (1 - beta) / (1 - beta**n_c)``.

    ``n_c`` is the pixel count; with ``beta -> 1`` this tends to inverse frequency, with
    ``beta = 0`` to uniform weights.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class_weights.beta must be in [0, 1), got {beta}")
    with np.errstate(divide="ignore"):
        return np.asarray((1.0 - beta) / (1.0 - np.power(beta, counts.pixels.astype(float))))


def manual(
    weights: Sequence[float] | Mapping[str, float], class_names: Sequence[str]
) -> np.ndarray:
    """Weights given by hand: a list in class order, or a mapping by class name (missing: 1)."""
    values = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    bad = [w for w in values if isinstance(w, bool) or not isinstance(w, int | float)]
    if bad:
        raise ValueError(f"class_weights.weights must be numbers, got {bad}")
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(class_names))
        if unknown:
            raise ValueError(
                f"class_weights.weights names unknown classes {unknown}; "
                f"the classes are {list(class_names)}"
            )
        return np.array([float(weights.get(name, 1.0)) for name in class_names])
    if len(weights) != len(class_names):
        raise ValueError(
            f"class_weights.weights has {len(weights)} values but there are "
            f"{len(class_names)} classes {list(class_names)}"
        )
    return np.asarray(weights, dtype=float)


def batch_inverse_frequency(masks: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Per-batch weights: inverse frequency ``N_b / (C * n_c,b)`` from one batch's masks.

    A class with a few pixels in the batch gets a weight in the thousands, and the weights jump
    from batch to batch. Classes absent from the batch get 0 (they have no pixels to weight).
    NumPy reference of ``seglab.data.batch_weight_map``.
    """
    labels = masks[masks != ignore_index]
    n = np.bincount(labels.ravel(), minlength=num_classes)
    with np.errstate(divide="ignore"):
        return np.where(n > 0, n.sum() / (num_classes * n), 0.0)


def normalize(weights: np.ndarray, how: str, pixel_share: np.ndarray) -> np.ndarray:
    """Rescales weights: ``mean`` makes their mean over classes 1; ``pixel`` makes the mean
    weight of a training pixel 1 (``sum_c p_c w_c = 1``), so a weighted pixel loss keeps the
    scale of the unweighted one; ``none`` leaves them."""
    check_choice("class_weights.normalize", how, NORMALIZATIONS)
    if how == "none":
        return weights
    if how == "mean":
        return np.asarray(weights / weights.mean(), dtype=float)
    return weights / float(np.sum(pixel_share * weights))


@dataclass(frozen=True)
class Weighting:
    """How one run weighs its classes, checked against its loss once, when made
    (:meth:`for_loss`).

    Attributes:
        pixel_weighted: The loss takes per-pixel ``sample_weight`` maps (pixelwise losses).
        loss_name: The loss's name, for the error message.
        class_weights: Dataset class weights (C,), or ``None``. A pixelwise loss gets them as
            per-pixel maps ``w[mask]`` on the training and validation streams; a region loss
            already holds them (``seglab.losses.build_loss``).
        per_batch: Inverse frequency recomputed from each batch (pixelwise losses only).
        image_boost: ``(class index, factor)``: the pixel weights of the training images that
            contain the class are multiplied by ``factor`` (pixelwise losses only).

    Raises:
        ValueError: When per-batch or image weights meet a loss that takes no pixel weights.
    """

    pixel_weighted: bool = True
    loss_name: str = "loss"
    class_weights: np.ndarray | None = None
    per_batch: bool = False
    image_boost: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        if (self.per_batch or self.image_boost) and not self.pixel_weighted:
            option = "per_batch" if self.per_batch else "image_boost_class"
            raise ValueError(
                f"class_weights {option} builds per-pixel weight maps, but loss "
                f"{self.loss_name!r} takes no pixel weights; use it with a pixelwise loss (ce, "
                "focal, ce_dice)"
            )

    @classmethod
    def for_loss(
        cls,
        loss: Any,
        class_weights: np.ndarray | None = None,
        per_batch: bool = False,
        image_boost: tuple[int, float] | None = None,
    ) -> Weighting:
        """The weighting of ``loss`` (a ``seglab.losses.SegmentationLoss``)."""
        return cls(loss.pixel_weighted, loss.name, class_weights, per_batch, image_boost)

    @property
    def pixel_maps(self) -> np.ndarray | None:
        """The class weights the streams turn into per-pixel maps (none for a region loss)."""
        return self.class_weights if self.pixel_weighted else None


class WeightScheme:
    """A configured scheme: ``scheme(counts, class_names)`` -> weights (C,) or ``None``.

    Args:
        scheme: One of :data:`SCHEMES`. ``none`` returns ``None`` (no weighting); ``per_batch``
            also returns ``None`` and sets :attr:`per_batch` (weights made per batch in tf.data).
        normalize: ``pixel`` (default), ``mean`` or ``none``; see :func:`normalize`.
        clip_max: Upper bound applied after normalization (``None``: no bound).
        weights: For ``manual``: a list in class order or a mapping by class name.
        k: ENet's constant.
        beta: Effective number's beta.
        image_boost_class: Name of a class whose images get an image-level weight (training
            only; pixelwise losses), as the image-weights question boosts the images that
            contain the object.
        image_boost: That image-level weight (multiplies the image's pixel weights).
        power: How hard the weights push: ``w <- w ** power`` before normalization; 1 keeps
            the scheme's weights, 0 makes them uniform (no weighting), values between soften
            them (a temperature a search can sample).

    Classes absent from the training set get the largest finite weight (their weight only
    matters to region losses, where it scales the penalty for predicting them), with a warning.
    """

    def __init__(
        self,
        scheme: str = "none",
        normalize: str = "pixel",
        clip_max: float | None = None,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        k: float = 1.02,
        beta: float = 0.9999,
        image_boost_class: str | None = None,
        image_boost: float = 1.0,
        power: float = 1.0,
    ) -> None:
        check_choice("class_weights.scheme", scheme, SCHEMES)
        check_choice("class_weights.normalize", normalize, NORMALIZATIONS)
        if clip_max is not None and not clip_max > 0:
            raise ValueError(f"class_weights.clip_max must be > 0, got {clip_max}")
        if not image_boost > 0:
            raise ValueError(f"class_weights.image_boost must be > 0, got {image_boost}")
        if isinstance(power, bool) or not isinstance(power, int | float) or not power >= 0:
            raise ValueError(f"class_weights.power must be a number >= 0, got {power!r}")
        if scheme == "manual" and weights is None:
            raise ValueError("class_weights=manual needs class_weights.weights (list or mapping)")
        self.scheme = scheme
        self.normalization = normalize
        self.clip_max = clip_max
        self.weights = weights
        self.k = k
        self.beta = beta
        self.image_boost_class = image_boost_class
        self.image_boost = image_boost
        self.power = float(power)

    @property
    def per_batch(self) -> bool:
        return self.scheme == "per_batch"

    def weighting(
        self, weights: np.ndarray | None, class_names: Sequence[str], loss: Any
    ) -> Weighting:
        """The run's :class:`Weighting`: ``weights`` (from :meth:`__call__`), this scheme's
        per-batch mode and image boost, for ``loss``."""
        return Weighting.for_loss(loss, weights, self.per_batch, self.boost(class_names))

    def boost(self, class_names: Sequence[str]) -> tuple[int, float] | None:
        """``(class index, factor)`` of the image-level boost, or ``None``."""
        if self.image_boost_class is None:
            return None
        if self.image_boost_class not in class_names:
            raise ValueError(
                f"class_weights.image_boost_class={self.image_boost_class!r} is not a class; "
                f"the classes are {list(class_names)}"
            )
        return list(class_names).index(self.image_boost_class), float(self.image_boost)

    def __call__(self, counts: ClassCounts, class_names: Sequence[str]) -> np.ndarray | None:
        if self.scheme in ("none", "per_batch"):
            return None
        if self.scheme == "manual":
            raw = manual(self.weights or [], class_names)  # __init__ made sure there are some
        elif self.scheme == "enet":
            raw = enet(counts, self.k)
        elif self.scheme == "effective_number":
            raw = effective_number(counts, self.beta)
        else:
            raw = {
                "inverse_frequency": inverse_frequency,
                "inverse_sqrt": inverse_sqrt,
                "median_frequency": median_frequency,
            }[self.scheme](counts)
        weights = self._fill_absent(np.asarray(raw, dtype=float), counts, class_names)
        if (weights < 0).any() or not np.isfinite(weights).all() or not weights.any():
            shown = dict(zip(class_names, weights.tolist(), strict=True))
            raise ValueError(
                f"class_weights={self.scheme}: weights must be finite, >= 0 and not all 0, "
                f"got {shown}"
            )
        weights = normalize(weights**self.power, self.normalization, counts.pixel_share)
        if self.clip_max is not None:
            weights = np.minimum(weights, self.clip_max)
        return weights

    def _fill_absent(
        self, weights: np.ndarray, counts: ClassCounts, class_names: Sequence[str]
    ) -> np.ndarray:
        absent = counts.pixels == 0
        if not absent.any() or self.scheme == "manual":
            return weights
        warnings.warn(
            f"classes {np.asarray(class_names)[absent].tolist()} never occur in the "
            "training set; they get the largest finite weight",
            stacklevel=3,
        )
        finite = weights[~absent & np.isfinite(weights)]
        return np.where(absent, finite.max() if finite.size else 1.0, weights)
