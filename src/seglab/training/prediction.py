"""Prediction passes: a model's per-pixel class labels, traced once for a whole run, and what a
run keeps of them (per-image counts of a split, samples for the overlays).

Calling a Keras model eagerly dispatches every layer's operations from Python (about 0.1 s per
call for the default U-Net on two CPU cores), and a ``tf.function`` built for one pass pays a
trace of the whole model (about 0.25 s) each time. A run predicts many times: the failure
gallery every epoch, then the per-image counts of the validation and test splits and the
overlays. :class:`LabelPredictor` traces the model once, for every batch size, and every one of
those calls reuses the trace; loading other weights into the model (the best checkpoint's)
needs no new trace, because the traced function reads the model's variables.

The model is called directly (not through ``model.predict``): a model built under a
``tf.distribute`` strategy then runs on one device, and no replica gets an empty batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from seglab.core.boundary import SurfaceScores
from seglab.core.calibration import Calibration
from seglab.core.per_image import COUNT_COLUMNS, PerImageCounts, count_batch
from seglab.data.counting import readable_batches
from seglab.data.dataset import SegmentationData, take_samples
from seglab.data.decode import image_array, scale_image
from seglab.training.runtime import usable_cores


class Predictor(Protocol):
    """What maps a batch of images to their ``(N, H, W)`` class labels for a run's passes, and
    keeps that batch's class probabilities: a :class:`LabelPredictor`, or
    :class:`seglab.keras.callback.NumpyPredictor` on any Keras backend."""

    model: keras.Model

    def __call__(self, images: np.ndarray) -> Any: ...

    @property
    def probabilities(self) -> np.ndarray:
        """The last call's ``float32 (N, H, W, C)`` class probabilities."""
        ...


class LabelPredictor:
    """``predictor(images)``: the argmax class of every pixel, ``int32 (N, H, W)``; the
    batch's class probabilities (the model's softmax or sigmoid output) are kept, so one
    prediction of a split gives both its labels and its calibration.

    Args:
        model: A segmentation model whose output's last axis holds one score per class.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        self._both = tf.function(self._predict, input_signature=(spec,))
        self._probabilities: tf.Tensor | None = None

    def _predict(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        probabilities = tf.cast(self.model(images, training=False), tf.float32)
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32), probabilities

    def __call__(self, images: tf.Tensor | np.ndarray) -> tf.Tensor:
        labels, self._probabilities = self._both(tf.convert_to_tensor(images, tf.float32))
        return labels

    @property
    def probabilities(self) -> np.ndarray:
        """The last call's ``float32 (N, H, W, C)`` class probabilities."""
        if self._probabilities is None:
            raise RuntimeError("no batch predicted yet: call the predictor first")
        return np.asarray(self._probabilities)


def label_predictor(model: keras.Model | Predictor) -> Predictor:
    """A :class:`LabelPredictor` for a model; a predictor itself (for functions that take
    either: a run passes its one predictor, a notebook a model)."""
    return LabelPredictor(model) if isinstance(model, keras.Model) else model


def per_image_counts(
    model: keras.Model | Predictor,
    stream: tf.data.Dataset,
    num_classes: int,
    ignore_index: int,
    batch_size: int = 8,
    files: Sequence[Sequence[str]] | None = None,
    split: str = "split",
    observe: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> PerImageCounts:
    """Predicts every image of an unbatched ``(image, mask)`` stream and counts per image.

    ``model`` may be a :class:`~seglab.prediction.LabelPredictor`, whose one trace a run
    shares between its passes; a model gets one of its own. ``files`` (each sample's image,
    then mask) name the images by their mask files, else ``<split>[<index>]``. ``observe``
    gets each batch's ``(truths, predicted labels)`` as well (e.g.
    :meth:`seglab.core.boundary.SurfaceScores.add`), once its labels are checked.

    Raises:
        ValueError: On a true label outside ``[0, num_classes)`` that is not ``ignore_index``,
            naming the image, and on a file that cannot be read, naming it.
    """
    predict = label_predictor(model)
    names = [sample[-1] for sample in files] if files else None
    rows: dict[str, list[np.ndarray]] = {k: [] for k in COUNT_COLUMNS}
    seen = 0
    for images, masks in readable_batches(stream, batch_size, files):
        truths, labels = masks.numpy(), np.asarray(predict(images))
        *counts, bad = count_batch(truths, labels, num_classes, ignore_index)
        if bad.any():
            index = seen + int(np.argmax(bad))
            name = names[index] if names else f"{split}[{index}]"
            raise ValueError(
                f"mask {name} has labels outside 0..{num_classes - 1} that are not "
                f"ignore_index={ignore_index}"
            )
        for key, value in zip(COUNT_COLUMNS, counts, strict=True):
            rows[key].append(value)
        if observe is not None:
            observe(truths, labels)
        seen += len(bad)
    if seen == 0:
        raise ValueError(f"the {split} split is empty: nothing to evaluate")
    image_names = tuple(names) if names else tuple(f"{split}[{i}]" for i in range(seen))
    return PerImageCounts(image_names, *(np.concatenate(rows[k]) for k in COUNT_COLUMNS))


def split_counts_per_image(
    model: keras.Model | Predictor,
    data: SegmentationData,
    split: str,
    batch_size: int,
    observe: Callable[[np.ndarray, np.ndarray], None] | None = None,
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
        observe,
    )


@dataclass
class SplitScores:
    """What one prediction pass over a split gives: its per-image counts, where each class's
    outline is (``None`` when not asked for) and the calibration of its probabilities."""

    counts: PerImageCounts
    surface: SurfaceScores | None
    calibration: Calibration

    def beyond_region(self, class_names: Sequence[str], prefix: str) -> dict[str, float]:
        """``<prefix>/boundary_iou|hd95|nsd/<class>`` (when scored) and
        ``<prefix>/ece/<class>``."""
        outline = {} if self.surface is None else self.surface.metrics(class_names, prefix)
        return outline | self.calibration.metrics(class_names, prefix)


def score_split(
    predict: Predictor,
    data: SegmentationData,
    split: str,
    batch_size: int,
    boundary: bool = True,
) -> SplitScores:
    """Predicts ``split`` of ``data`` once: its per-image counts, the calibration of the kept
    probabilities and, with ``boundary``, where each class's outline is (two parts of a batch
    at once where two cores are usable)."""
    threads = min(2, usable_cores())
    surface = (
        SurfaceScores(data.num_classes, data.ignore_index, threads=threads) if boundary else None
    )
    calibration = Calibration(data.num_classes, data.ignore_index)

    def observe(truths: np.ndarray, labels: np.ndarray) -> None:
        if surface is not None:
            surface.add(truths, labels)
        calibration.add(predict.probabilities, truths)

    counts = split_counts_per_image(predict, data, split, batch_size, observe)
    return SplitScores(counts, surface, calibration)


def predict_samples(
    model: keras.Model | Predictor,
    data: SegmentationData,
    count: int,
    prefer_class: int,
    pool: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``count`` validation (image, truth, prediction) triples for overlays.

    Samples that contain ``prefer_class`` (usually the worst class) come first, so the figure
    shows where the failing class is missed.
    """
    images, truths = take_samples(data.val, pool)
    order = showing_first(truths, prefer_class, count)
    predictions = np.asarray(label_predictor(model)(images[order]))
    return images[order], truths[order], predictions


def showing_first(truths: np.ndarray, target: int, count: int) -> np.ndarray:
    """The indices of ``count`` of the ``(N, H, W)`` ``truths``, those that contain class
    ``target`` first (in their order), then the others."""
    return np.argsort(~(truths == target).any(axis=(1, 2)), kind="stable")[:count]


def segment_files(
    model: keras.Model, files: list[Path], batch_size: int
) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    """Each file with its ``uint8 (H, W, 3)`` image and index mask at the image's size, read and
    predicted one batch at a time (memory: one batch, however many files)."""
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    predict = LabelPredictor(model)
    for start in range(0, len(files), batch_size):
        chunk = [(file, image_array(file)) for file in files[start : start + batch_size]]
        labels = predict(tf.stack([scale_image(image, size) for _, image in chunk])).numpy()
        for (file, image), label in zip(chunk, labels, strict=True):
            back = tf.image.resize(label[..., None], image.shape[:2], method="nearest")
            yield file, image, np.asarray(back)[..., 0]
