"""From unbatched streams to the batches a model trains on: shuffle, image boost, augmentation,
per-pixel class weights, batching."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from seglab.data.augment import Augmenter


def steady_epochs() -> tf.data.Options:
    """Options that keep tf.data's autotuner off the batches a model trains and predicts on.

    With it on (TensorFlow 2.21, 2 cores), Keras' ``fit`` waited 4-5 s, idle, before the first
    batch of about a third of its epochs, even over ``from_tensor_slices`` and ``batch`` alone;
    with it off, no epoch did (``docs/guide/performance.md``). Parallel maps then run on every
    core and prefetching keeps its default buffer: the model, not the input, is the slower side.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


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
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(steady_epochs())
