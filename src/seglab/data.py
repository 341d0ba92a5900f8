"""Datasets as unbatched ``tf.data`` streams, batching, and the class-count pass over a split.

Every dataset is a :class:`SegmentationData`: an unbatched train and val stream (and, when the
dataset has one, a held-out test stream) of ``(image float32 HxWx3 in [0, 1], mask int32 HxW)``
plus the class names and ignore index. The rest of seglab (class weights, augmentation, the
trainer, the evaluation) works on those streams only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from seglab.augment import Augmenter
from seglab.class_weights import ClassCounts
from seglab.metrics import class_histograms

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


def check_class_names(names: object, source: str) -> list[str]:
    """At least two unique class names, as a list of strings; raises naming ``source``."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"{source} must be a list of class names, got {names!r}")
    names = [str(n) for n in names]
    if len(names) < 2:
        raise ValueError(f"{source}: give at least 2 class names, got {names}")
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(
            f"{source} names {duplicates} more than once: every class needs its own name "
            "(metrics are keyed by name)"
        )
    return names


def class_counts(
    dataset: tf.data.Dataset,
    num_classes: int,
    ignore_index: int,
    batch_size: int = 64,
    files: Sequence[Sequence[str]] | None = None,
) -> ClassCounts:
    """Counts class pixels over a whole unbatched ``(image, mask, ...)`` stream.

    Memory is O(batch), never the dataset. Raises on a label outside ``[0, num_classes)`` that is
    not the ignore index, naming the sample (its mask file, when ``files`` gives each sample's
    image and mask) and the value, and on a file that cannot be read, naming it.
    """
    pixels = np.zeros(num_classes, np.int64)
    images = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    seen = 0
    for batch in readable_batches(dataset, batch_size, files, lambda *x: x[1]):
        masks = batch.numpy().reshape(batch.shape[0], -1).astype(np.int64)
        valid = masks != ignore_index
        bad = valid & ((masks < 0) | (masks >= num_classes))
        if bad.any():
            index, pixel = np.argwhere(bad)[0]
            sample = f"sample {seen + index}" + (f" ({files[seen + index][-1]})" if files else "")
            raise ValueError(
                f"mask of {sample} has label {masks[index, pixel]}, but valid labels "
                f"are 0..{num_classes - 1} (and ignore_index={ignore_index}); check the data's "
                "class_names or the mask files"
            )
        per_image = class_histograms(masks, valid, num_classes)
        present = per_image > 0
        pixels += per_image.sum(axis=0)
        images += present.sum(axis=0)
        image_pixels += (present * valid.sum(axis=1, keepdims=True)).sum(axis=0)
        seen += masks.shape[0]
    if seen == 0:
        raise ValueError("the split is empty: no images to count classes on")
    return ClassCounts(pixels=pixels, images=images, image_pixels=image_pixels, num_images=seen)


def tf_reason(message: str) -> str:
    """The readable part of a TensorFlow error: its first line without the function and
    iterator prefixes or an eager op's ``[Op:...]`` suffix, and for a failed ``tf.Assert`` only
    what the assertion says."""
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message.strip()).splitlines()[0]
    if "assertion failed:" in line:
        return line.split("assertion failed:", 1)[1].strip()
    line = re.sub(r"\s*\[Op:\w+\](\s*name:\s*\S*)?\s*$", "", line)
    return re.sub(r"^.*?transformation with iterator: \S+: ", "", line)


def readable_batches(
    dataset: tf.data.Dataset,
    batch_size: int,
    files: Sequence[Sequence[str]] | None = None,
    select: Callable[..., Any] | None = None,
) -> Iterator[Any]:
    """The unbatched ``dataset`` in batches of ``batch_size`` (of ``select(*sample)`` when
    given). A batch that fails to load raises ``ValueError`` naming the first sample that fails
    and, when ``files`` gives each sample's files, the one that cannot be decoded (else the
    sample's mask)."""
    batches = iter((dataset if select is None else dataset.map(select)).batch(batch_size))
    start = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            bad = unreadable_sample(dataset, start, batch_size)
            sample = f"sample {bad}"
            if files:
                sample += f" ({undecodable_file(files[bad]) or files[bad][-1]})"
            raise ValueError(f"cannot read {sample}: {tf_reason(error.message)}") from None
        yield batch
        start += batch_size


def unreadable_sample(dataset: tf.data.Dataset, start: int, count: int) -> int:
    """Index of the first sample in ``[start, start + count)`` that fails to load."""
    for index in range(start, start + count):
        try:
            list(dataset.skip(index).take(1))
        except tf.errors.OpError:
            return index
    return start


def undecodable_file(paths: Sequence[str]) -> str | None:
    """The first of ``paths`` that is missing or not a decodable image, if any."""
    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        except tf.errors.OpError:
            return path
    return None


def cached_class_counts(
    dataset: tf.data.Dataset,
    num_classes: int,
    ignore_index: int,
    key: Mapping[str, Any],
    cache_dir: str | Path | None,
    files: Sequence[Sequence[str]] | None = None,
) -> ClassCounts:
    """:func:`class_counts`, cached on disk under a hash of ``key``.

    Pass the resolved data config (plus the split name) as ``key``: any change to the data
    (size, seed, class names, paths) recounts, and nothing else does. ``cache_dir=None``
    always counts.
    """
    if cache_dir is None:
        return class_counts(dataset, num_classes, ignore_index, files=files)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = Path(cache_dir) / f"class_counts-{digest[:16]}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return ClassCounts(
            pixels=np.array(saved["pixels"], np.int64),
            images=np.array(saved["images"], np.int64),
            image_pixels=np.array(saved["image_pixels"], np.int64),
            num_images=int(saved["num_images"]),
        )
    counts = class_counts(dataset, num_classes, ignore_index, files=files)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(counts).items()}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(fields))
    tmp.replace(path)  # atomic: parallel sweep jobs never read half a file
    return counts


def split_counts(
    data: SegmentationData,
    split: str,
    data_config: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> ClassCounts:
    """Class counts of one of ``data``'s splits, cached under the data config and, when its
    samples are files, under their names, sizes and modification times: an image or mask edited
    in place is read again (its labels and its readability validated again)."""
    files = data.sample_files(split)
    key = {"split": split, **(data_config or {})}
    if files:
        key["files"] = files_fingerprint([path for sample in files for path in sample])
    return cached_class_counts(
        data.stream(split), data.num_classes, data.ignore_index, key, cache_dir, files=files
    )


def files_fingerprint(paths: Sequence[str]) -> str:
    """A digest of every file's path, size and modification time (no content read)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:  # not a file (a TFDS record name, say): its name is all there is
            digest.update(f"{path}\n".encode())
    return digest.hexdigest()


def pixel_weight_map(mask: tf.Tensor, class_weights: tf.Tensor, ignore_index: int) -> tf.Tensor:
    """``w[mask]`` with ignored pixels weighted 0 (the TF segmentation tutorial's map)."""
    ignored = tf.equal(mask, ignore_index)
    weights = tf.gather(class_weights, tf.where(ignored, tf.zeros_like(mask), mask))
    return tf.where(ignored, tf.zeros_like(weights), weights)


def batch_weight_map(masks: tf.Tensor, num_classes: int, ignore_index: int) -> tf.Tensor:
    """The per-batch pitfall in tf.data: ``N_b / (C * n_c,b)`` from this batch's masks only.

    See :func:`seglab.class_weights.batch_inverse_frequency` (its NumPy reference).
    """
    valid = tf.not_equal(masks, ignore_index)
    counts = tf.math.bincount(
        tf.boolean_mask(masks, valid),
        minlength=num_classes,
        maxlength=num_classes,
        dtype=tf.float32,
    )
    total = tf.reduce_sum(counts)
    weights = tf.math.divide_no_nan(total, num_classes * counts)
    return pixel_weight_map(masks, weights, ignore_index)


def batches(
    dataset: tf.data.Dataset,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    shuffle: bool = True,
    buffer_size: int = 1024,
    augment: Augmenter | None = None,
    class_weights: np.ndarray | None = None,
    batch_weights: bool = False,
    image_boost: tuple[int, float] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    min_batch: int = 1,
) -> tf.data.Dataset:
    """Batches an unbatched ``(image, mask)`` stream, optionally augmented and weighted.

    Order: shuffle, image weight (from the original mask), augment, pixel weights (from the
    augmented mask, so they stay aligned with it), batch, per-batch weights.

    Args:
        dataset: Unbatched ``(image, mask)`` stream.
        batch_size: Images per batch.
        shuffle_seed: Shuffle anew every epoch with this seed (``None``: keep the order). Also
            seeds the augmentation draws.
        shuffle: ``False`` keeps the order even with a ``shuffle_seed`` (which then only seeds
            the augmentation).
        buffer_size: Shuffle buffer.
        augment: Joint image/mask augmentation (training streams only).
        class_weights: Dataset-level weights (C,): yields ``(image, mask, w[mask])``.
        batch_weights: Weights recomputed from each batch (the pitfall): yields
            ``(image, mask, weights)``; needs ``num_classes``.
        image_boost: ``(class index, factor)``: the pixel weights of an image that contains
            that class are multiplied by ``factor`` (an image-level sample weight; it is
            decided before augmentation and survives it unchanged).
        num_classes: Number of classes, for ``batch_weights`` and ``image_boost``.
        ignore_index: Mask label whose pixels get weight 0.
        min_batch: Drop a last batch of fewer images than this (see
            ``seglab.trainer.Trainer.streams``: replicas must not get empty batches).
    """
    if batch_weights and (class_weights is not None or image_boost is not None):
        raise ValueError("per-batch weights cannot be combined with dataset or image weights")
    if (batch_weights or image_boost is not None) and num_classes is None:
        raise ValueError("per-batch and image weights need num_classes")
    classes = int(num_classes or 0)
    size = int(dataset.cardinality())
    if shuffle_seed is not None and shuffle:
        dataset = dataset.shuffle(buffer_size, seed=shuffle_seed, reshuffle_each_iteration=True)
    if image_boost is not None:
        boosted, factor = image_boost
        dataset = dataset.map(
            lambda x, y: (x, y, tf.where(tf.reduce_any(tf.equal(y, boosted)), factor, 1.0))
        )
    if augment is not None:
        dataset = augment.stream(dataset, seed=shuffle_seed or 0)
    if class_weights is not None or image_boost is not None:
        table = tf.constant(
            np.ones(classes) if class_weights is None else class_weights, tf.float32
        )

        def weigh(x: tf.Tensor, y: tf.Tensor, *image_weight: tf.Tensor) -> tuple[tf.Tensor, ...]:
            weights = pixel_weight_map(y, table, ignore_index)
            return x, y, weights * image_weight[0] if image_weight else weights

        dataset = dataset.map(weigh, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size)
    if size < 0 and min_batch > 1:  # size unknown: filter (Keras then counts steps itself)
        dataset = dataset.filter(lambda x, *rest: tf.shape(x)[0] >= min_batch)
    elif 0 < size % batch_size < min_batch:  # take, not filter: Keras keeps the step count
        dataset = dataset.take(size // batch_size)
    if batch_weights:
        dataset = dataset.map(lambda x, y: (x, y, batch_weight_map(y, classes, ignore_index)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def resize_pair(
    image: tf.Tensor,
    mask: tf.Tensor,
    size: tuple[int, int],
    image_name: tf.Tensor | str,
    mask_name: tf.Tensor | str,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Checks a decoded ``uint8 (H, W, 3)`` image and ``(H, W, 1)`` mask have the same size, then
    resizes both to ``size``: the image bilinear into ``[0, 1]``, the mask nearest neighbour (so
    labels stay labels) into ``int32 (h, w)``. A size mismatch raises naming both files."""
    check = tf.Assert(
        tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask)[:2])),
        [
            "image and mask sizes differ:",
            image_name,
            tf.shape(image)[:2],
            mask_name,
            tf.shape(mask)[:2],
        ],
    )
    with tf.control_dependencies([check]):
        image = scale_image(image, size)
    mask = tf.image.resize(mask, size, method="nearest")[..., 0]
    return image, tf.cast(mask, tf.int32)


def scale_image(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """A decoded ``uint8 (H, W, 3)`` image as the model sees it: ``float32`` in ``[0, 1]``,
    resized bilinear to ``size``."""
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, size, method="bilinear")
    return tf.clip_by_value(image, 0.0, 1.0)


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
