"""The dataset every seglab run trains on: unbatched ``tf.data`` streams and what they hold.

Every dataset is a :class:`SegmentationData`: an unbatched train and val stream (and, when the
dataset has one, a held-out test stream) of ``(image float32 HxWx3 in [0, 1], mask int32 HxW)``
plus the class names and ignore index. The rest of seglab (class weights, augmentation, the
trainer, the evaluation) works on those streams only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from seglab.core.checks import check_class_names

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SegmentationData:
    """A dataset split into unbatched train/val (and optionally test) streams.

    Attributes:
        train: Unbatched ``(image, mask)`` training stream, in a fixed order.
        val: Unbatched ``(image, mask)`` validation stream, in a fixed order.
        class_names: One name per class index.
        ignore_index: Mask value that counts in neither loss nor metrics.
        image_shape: ``(height, width, channels)`` of every image.
        num_train: Number of training images.
        num_val: Number of validation images.
        colors: The dataset's own ``[r, g, b]`` per class (colour masks), if it has them.
        test: Unbatched ``(image, mask)`` held-out test stream, if the dataset has one: only
            the best checkpoint is evaluated on it, once, at the end of a run.
        num_test: Number of test images (0 without a test split).
        files: Per split, the files each sample is read from (its image, then its mask), when
            the samples are files: they name a sample in errors and per-image tables, and key
            the class-count cache.
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    class_names: tuple[str, ...]
    ignore_index: int
    image_shape: tuple[int, int, int]
    num_train: int
    num_val: int
    colors: tuple[tuple[int, int, int], ...] | None = None
    test: tf.data.Dataset | None = None
    num_test: int = 0
    files: Mapping[str, tuple[tuple[str, ...], ...]] | None = None

    def __post_init__(self) -> None:
        check_class_names(self.class_names, "data.class_names")
        if 0 <= self.ignore_index < len(self.class_names):  # that class would count nowhere
            raise ValueError(
                f"data.ignore_index={self.ignore_index} is the label of class "
                f"{self.class_names[self.ignore_index]!r}; choose a value outside "
                f"0..{len(self.class_names) - 1} (255 is usual)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this dataset has: ``train``, ``val`` and, when present, ``test``."""
        return SPLITS if self.test is not None else SPLITS[:2]

    def stream(self, split: str) -> tf.data.Dataset:
        """The unbatched stream of ``split``; raises naming the splits it has."""
        if split not in self.splits:
            raise ValueError(f"split={split!r} is not one of this dataset's splits {self.splits}")
        return getattr(self, split)

    def sample_files(self, split: str) -> tuple[tuple[str, ...], ...] | None:
        """Each sample's files (image, then mask) in ``split``, if its samples are files."""
        return None if self.files is None else self.files[split]

    def size(self, split: str) -> int:
        """The number of images in ``split``."""
        return getattr(self, f"num_{split}")


def image_size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``data.image_size`` as ``(height, width)``: one side, or ``[height, width]``; raises
    naming the option on anything else."""
    size = [image_size] * 2 if isinstance(image_size, int) else list(image_size)
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ValueError(
            f"data.image_size must be a positive side or [height, width], got {image_size}"
        )
    return int(size[0]), int(size[1])


def limited(count: int, limit: int | None) -> int:
    """``count`` capped at ``data.limit`` (``None``: no cap); raises on a limit below 1."""
    if limit is None:
        return count
    if limit < 1:
        raise ValueError(f"data.limit must be >= 1 (or null for every image), got {limit}")
    return min(count, limit)


def from_arrays(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    class_names: Sequence[str],
    ignore_index: int,
) -> SegmentationData:
    """Wraps in-memory uint8 images (N,H,W,3) and integer masks (N,H,W) as a dataset."""
    for split, (images, masks) in {"train": train, "val": val}.items():
        if len(images) == 0:
            raise ValueError(f"the {split} split is empty")
        if images.shape[:3] != masks.shape:
            raise ValueError(
                f"{split} images {images.shape} and masks {masks.shape} differ in size"
            )

    shape = train[0].shape[1:]

    def stream(images: np.ndarray, masks: np.ndarray) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((images, masks.astype(np.int32)))
        return ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))

    return SegmentationData(
        train=stream(*train),
        val=stream(*val),
        class_names=tuple(class_names),
        ignore_index=ignore_index,
        image_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        num_train=len(train[0]),
        num_val=len(val[0]),
    )


def take_samples(stream: tf.data.Dataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` ``(image, mask)`` pairs of an unbatched stream, stacked."""
    pairs = list(stream.take(count).as_numpy_iterator())
    if not pairs:
        raise ValueError("the split is empty: no samples to show")
    images, masks = (np.stack(x) for x in zip(*pairs, strict=True))
    return images, masks
