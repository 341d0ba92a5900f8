"""The callback's validation pass: any validation data a Keras user has, read as batches, and
what one pass of their model over it gives (the epoch's record and per-image counts).

Validation data is a ``tf.data.Dataset`` (batched or not) or a tuple of arrays, of
``(images, masks)`` or ``(images, masks, sample_weight)``. Masks are integer labels
``(B, H, W)`` or ``(B, H, W, 1)``, or one-hot ``(B, H, W, C)`` (a pixel with no class is
ignored). The model's output is softmax or sigmoid, probabilities or logits; a sigmoid with one
channel is the foreground of two classes.

The pass predicts each batch once with the model's own predict function and computes the rest
in NumPy, so it runs on every Keras backend: the loss the model was compiled with
(``model.compute_loss``, regularisation included, as Keras' ``val_loss``), the unweighted
cross-entropy and its per-class terms (seglab's :class:`~seglab.losses.CrossEntropy` formula:
probabilities renormalised, clipped to ``[1e-7, 1 - 1e-7]``), the confusion matrix and the
per-image counts. Batches are weighted by their size, as Keras weights ``val_loss``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from seglab.core.checks import check_choice
from seglab.core.per_image import COUNT_COLUMNS, PerImageCounts
from seglab.core.records import EpochRecord
from seglab.core.scores import class_histograms, label_validity, scores_from_confusion
from seglab.losses.functional import EPSILON

OUTPUTS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Batch:
    """One validation batch.

    Attributes:
        images: What the model takes.
        targets: The masks as the user gave them (what the model's loss takes).
        labels: ``int64 (B, H, W)`` class indices; ignored pixels hold the ignore value.
        weights: The ``sample_weight`` the user gave, if any.
    """

    images: np.ndarray
    targets: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None


class ValidationSet:
    """The validation data as NumPy batches, read again for every pass.

    Args:
        data: A ``tf.data.Dataset`` of ``(images, masks[, sample_weight])`` (unbatched ones
            are batched by ``batch_size``) or a tuple of arrays.
        num_classes: Number of classes C.
        ignore_index: Mask label that counts nowhere (``None``: every pixel counts).
        batch_size: Images per batch for arrays and unbatched datasets.

    Raises:
        ValueError: On data that is neither, or a batch size below 1.
    """

    def __init__(
        self, data: Any, num_classes: int, ignore_index: int | None, batch_size: int = 8
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"SeglabCallback batch_size must be >= 1, got {batch_size}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.batch_size = batch_size
        if hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator"):
            spec = data.element_spec
            if not isinstance(spec, tuple) or len(spec) not in (2, 3):
                raise ValueError(
                    "SeglabCallback validation_data: the dataset must yield (images, masks) or "
                    f"(images, masks, sample_weight), got elements {spec}"
                )
            self.dataset = data.batch(batch_size) if len(spec[0].shape) == 3 else data
            self.arrays: tuple[np.ndarray, ...] | None = None
        elif isinstance(data, tuple | list) and len(data) in (2, 3):
            self.arrays = tuple(np.asarray(part) for part in data)
            lengths = {len(part) for part in self.arrays}
            if len(lengths) != 1 or not lengths.pop():
                raise ValueError(
                    "SeglabCallback validation_data: the arrays must hold the same, non-zero "
                    f"number of images, got shapes {[part.shape for part in self.arrays]}"
                )
            self.dataset = None
        else:
            raise ValueError(
                "SeglabCallback validation_data must be a tf.data.Dataset of (images, masks) or "
                f"a tuple (images, masks) of arrays, got {type(data).__name__}"
            )

    def batches(self) -> Iterator[Batch]:
        """Every batch, masks checked and read as labels (see :func:`mask_labels`)."""
        if self.arrays is not None:
            size = len(self.arrays[0])
            parts: Iterator[tuple[np.ndarray, ...]] = (
                tuple(part[start : start + self.batch_size] for part in self.arrays)
                for start in range(0, size, self.batch_size)
            )
        else:
            parts = self.dataset.as_numpy_iterator()
        for images, targets, *weights in parts:
            labels = mask_labels(targets, self.num_classes, self.ignore_index)
            yield Batch(images, targets, labels, weights[0] if weights else None)

    @property
    def ignore_value(self) -> int:
        """The label ignored pixels hold in :attr:`Batch.labels` (-1 without an ignore index:
        then no pixel may be ignored)."""
        return -1 if self.ignore_index is None else self.ignore_index


def mask_labels(masks: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """``int64 (B, H, W)`` labels of integer ``(B, H, W)`` / ``(B, H, W, 1)`` or one-hot
    ``(B, H, W, C)`` masks; a one-hot pixel with no class becomes ``ignore_index``.

    Raises:
        ValueError: On another shape, non-integer labels, a label that is neither a class
            index nor ``ignore_index``, or a one-hot pixel with no class and no ignore index.
    """
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == num_classes and num_classes > 1:
        empty = masks.sum(axis=-1) == 0
        if empty.any() and ignore_index is None:
            raise ValueError(
                "SeglabCallback: one-hot validation masks have pixels with no class; pass "
                "ignore_index= to ignore them"
            )
        labels = masks.argmax(axis=-1).astype(np.int64)
        labels[empty] = -1 if ignore_index is None else ignore_index
        return labels
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim != 3:
        raise ValueError(
            f"SeglabCallback: validation masks of shape {masks.shape}: use integer labels "
            f"(B, H, W) or (B, H, W, 1), or one-hot (B, H, W, {num_classes})"
        )
    if masks.dtype.kind == "f" and not np.array_equal(masks, np.round(masks)):
        raise ValueError(
            "SeglabCallback: validation masks hold non-integer values; give class indices"
        )
    labels = masks.astype(np.int64)
    _, bad = label_validity(labels, num_classes, ignore_index)
    if bad.any():
        shown = sorted(np.unique(labels[bad]).tolist())
        raise ValueError(
            f"SeglabCallback: validation masks have labels {shown[:8]} beyond the "
            f"{num_classes} class_names (0..{num_classes - 1}) that are not "
            f"ignore_index={ignore_index}"
        )
    return labels


class OutputHead:
    """Reads a model's output as per-class probabilities ``(B, H, W, C)``.

    Args:
        num_classes: Number of classes C.
        output: ``softmax`` (C channels) or ``sigmoid`` (C channels, or one channel for the
            foreground of two classes).
        from_logits: The model outputs logits, not probabilities.
    """

    def __init__(self, num_classes: int, output: str = "softmax", from_logits: bool = False):
        check_choice("SeglabCallback output", output, OUTPUTS)
        self.num_classes = num_classes
        self.output = output
        self.from_logits = from_logits

    def channels(self) -> tuple[int, ...]:
        """The output channel counts this head reads."""
        if self.output == "sigmoid" and self.num_classes == 2:
            return (1, 2)
        return (self.num_classes,)

    def check(self, shape: Sequence[int | None], mask_shape: Sequence[int]) -> None:
        """Raises on a model output shape this head cannot read for masks of ``mask_shape``."""
        if len(shape) != 4:
            raise ValueError(
                f"SeglabCallback: the model outputs shape {tuple(shape)}; a segmentation model "
                "outputs (batch, height, width, channels)"
            )
        if shape[-1] not in self.channels():
            raise ValueError(
                f"SeglabCallback: the model outputs {shape[-1]} channels per pixel; "
                f"{self.num_classes} class_names with output={self.output!r} need "
                f"{' or '.join(map(str, self.channels()))}"
            )
        if tuple(shape[1:3]) != tuple(mask_shape[1:3]):
            raise ValueError(
                f"SeglabCallback: the model outputs {shape[1]}x{shape[2]} pixels, the "
                f"validation masks are {mask_shape[1]}x{mask_shape[2]}"
            )

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """``float32 (B, H, W, C)`` probabilities of the model's ``outputs``."""
        y = np.asarray(outputs, dtype=np.float32)
        if self.output == "softmax":
            if self.from_logits:
                y = np.exp(y - y.max(axis=-1, keepdims=True))
                y /= y.sum(axis=-1, keepdims=True)
            return y
        p = np.float32(1.0) / (1.0 + np.exp(-y)) if self.from_logits else y
        return np.concatenate([1.0 - p, p], axis=-1) if p.shape[-1] == 1 else p


def cross_entropy_terms(
    labels: np.ndarray, probabilities: np.ndarray, ignore_value: int
) -> np.ndarray:
    """(C,) per-class terms of the batch's mean cross-entropy over its counted pixels:
    ``-log p`` of each pixel's true class (renormalised, clipped to ``[eps, 1 - eps]``) summed
    over the pixels of each true class, divided by the number of counted pixels."""
    num_classes = probabilities.shape[-1]
    valid, _ = label_validity(labels, num_classes, ignore_value)
    counted = labels[valid]
    probabilities = probabilities[valid]
    p_true = np.take_along_axis(probabilities, counted[:, None], axis=-1)[:, 0]
    total = probabilities.sum(axis=-1, dtype=np.float64)
    p_true = np.clip(p_true.astype(np.float64) / total, EPSILON, 1.0 - EPSILON)
    sums = np.bincount(counted, weights=-np.log(p_true), minlength=num_classes)
    return sums / max(len(counted), 1)


@dataclass
class ValidationPass:
    """The sums of one pass over the validation set, batch by batch (:meth:`add`).

    Attributes:
        num_classes: Number of classes C.
        ignore_value: The label of ignored pixels.
        images: Images seen.
        loss: Batch losses times batch sizes, summed.
        ce_terms: Per-class cross-entropy terms times batch sizes, summed.
        loss_terms: Per-class loss terms times batch sizes, summed (``None``: the loss has no
            per-class terms; the cross-entropy's shares stand in).
        confusion: The confusion matrix.
        counts: Per-image ``tp``, ``fp``, ``fn`` arrays, one per batch.
    """

    num_classes: int
    ignore_value: int
    images: int = 0
    loss: float = 0.0
    ce_terms: np.ndarray = field(init=False)
    loss_terms: np.ndarray | None = None
    confusion: np.ndarray = field(init=False)
    counts: dict[str, list[np.ndarray]] = field(init=False)

    def __post_init__(self) -> None:
        self.ce_terms = np.zeros(self.num_classes)
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.counts = {column: [] for column in COUNT_COLUMNS}

    def add(
        self,
        labels: np.ndarray,
        probabilities: np.ndarray,
        loss: float | None,
        loss_terms: np.ndarray | None = None,
    ) -> None:
        """One batch: its true labels, predicted probabilities, the model's loss on it
        (``None``: it has none; the cross-entropy stands in) and the loss's per-class terms,
        if it has them."""
        size = len(labels)
        predictions = probabilities.argmax(axis=-1)
        ce_terms = cross_entropy_terms(labels, probabilities, self.ignore_value)
        self.images += size
        self.loss += (ce_terms.sum() if loss is None else loss) * size
        self.ce_terms += ce_terms * size
        if loss_terms is not None:
            self.loss_terms = (0.0 if self.loss_terms is None else self.loss_terms) + np.asarray(
                loss_terms, np.float64
            ) * size
        # One count gives both: each image's confusion matrix (the labels are checked already).
        c = self.num_classes
        valid, _ = label_validity(labels, c, self.ignore_value)
        cells = class_histograms(labels * c + predictions, valid, c * c).reshape(-1, c, c)
        tp = np.diagonal(cells, axis1=1, axis2=2)
        self.confusion += cells.sum(axis=0)
        per_image = (tp, cells.sum(axis=1) - tp, cells.sum(axis=2) - tp)  # tp, fp, fn
        for column, value in zip(COUNT_COLUMNS, per_image, strict=True):
            self.counts[column].append(value)

    def record(self, epoch: int, train_loss: float, seconds: float) -> EpochRecord:
        """The epoch's record (``epoch`` 1-based)."""
        terms = self.ce_terms if self.loss_terms is None else self.loss_terms
        total = terms.sum()
        return EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=self.loss / self.images,
            val_ce=float(self.ce_terms.sum() / self.images),
            loss_share=terms / total if total else np.full(self.num_classes, np.nan),
            confusion=self.confusion,
            scores=scores_from_confusion(self.confusion),
            seconds=seconds,
        )

    def per_image(self) -> PerImageCounts:
        """The per-image counts, images named ``val[<index>]``."""
        names = tuple(f"val[{i}]" for i in range(self.images))
        return PerImageCounts(names, *(np.concatenate(self.counts[c]) for c in COUNT_COLUMNS))


def model_loss(model: keras.Model, batch: Batch, outputs: np.ndarray) -> float | None:
    """The loss ``model`` was compiled with on one batch, regularisation included (``None``
    when it was compiled without one)."""
    if getattr(model, "loss", None) is None:
        return None
    loss = model.compute_loss(
        x=batch.images,
        y=batch.targets,
        y_pred=outputs,
        sample_weight=batch.weights,
        training=False,
    )
    return float(keras.ops.convert_to_numpy(loss))


def regularization(model: keras.Model) -> float:
    """The sum of ``model.losses`` (weight regularisers), which Keras adds to ``val_loss``."""
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses))
