"""``data=oxford_pet``: Oxford-IIIT Pet trimaps from TensorFlow Datasets, read offline.

The TFDS ``oxford_iiit_pet`` builder keeps the dataset's trimap values (Parkhi et al., "Cats and
Dogs", CVPR 2012): 1 = pet, 2 = background, 3 = border ("not classified", a thin band around the
pet). seglab remaps them to class indices that put the background first::

    trimap 2 -> 0 background      trimap 1 -> 1 pet      trimap 3 -> 2 border

The border is a thin, rare class: the kind of class whose IoU a mean loss hides. Any other trimap
value is an error naming the example's file. Images and masks are resized like ``data=folder``.
TFDS reads from ``data_dir`` and never downloads unless ``download=true``: on a machine without
network, prepare the dataset elsewhere and copy its ``data_dir``.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from seglab.data.dataset import SegmentationData, image_size_pair, limited
from seglab.data.decode import resize_pair

DATASET = "oxford_iiit_pet"
CLASS_NAMES = ("background", "pet", "border")
# Index = trimap value, entry = seglab class; -1 marks a value the trimaps never hold.
TRIMAP_TO_CLASS = (-1, 1, 0, 2)


def remap_trimap(trimap: tf.Tensor, file_name: tf.Tensor) -> tf.Tensor:
    """Trimap values (1 pet, 2 background, 3 border) → class indices; other values raise."""
    values = tf.cast(trimap, tf.int32)
    check = tf.Assert(
        tf.reduce_all((values >= 1) & (values < len(TRIMAP_TO_CLASS))),
        [
            "oxford_iiit_pet: trimap values must be 1 (pet), 2 (background) or 3 (border); got",
            tf.reduce_min(values),
            "to",
            tf.reduce_max(values),
            "in",
            file_name,
        ],
    )
    with tf.control_dependencies([check]):
        return tf.gather(tf.constant(TRIMAP_TO_CLASS, tf.int32), values)


def stream(dataset: tf.data.Dataset, size: tuple[int, int], cache: bool) -> tf.data.Dataset:
    def example(features: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        name = features["file_name"]
        mask = remap_trimap(features["segmentation_mask"], name)
        return resize_pair(features["image"], mask, size, name, name)

    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.cache() if cache else dataset


def oxford_pet(
    data_dir: str | None = None,
    image_size: int | Sequence[int] = 128,
    train_split: str = "train",
    val_split: str = "test",
    download: bool = False,
    cache: bool = False,
    limit: int | None = None,
) -> SegmentationData:
    """Oxford-IIIT Pet as a 3-class segmentation set (see the module docstring).

    Args:
        data_dir: TFDS data folder holding a prepared ``oxford_iiit_pet``; ``None``: TFDS's
            default (``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).
        image_size: Side, or ``[height, width]``, every image and mask is resized to.
        train_split: TFDS split (slicing allowed: ``"train[:90%]"``) to train on.
        val_split: TFDS split to validate on (``"test"``, or ``"train[90%:]"``).
        download: Let TFDS download and prepare the dataset (needs network, ~800 MB).
        cache: Keep decoded, resized images in memory after the first epoch.
        limit: At most this many images per split (the first ones; quick runs).

    Raises:
        ImportError: ``tensorflow-datasets`` is not installed.
        ValueError: The dataset is not in ``data_dir`` and ``download`` is false.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "data=oxford_pet needs tensorflow-datasets: pip install -e .[tfds]"
        ) from error
    size = image_size_pair(image_size)
    try:
        train, val = tfds.load(
            DATASET,
            split=[train_split, val_split],
            data_dir=data_dir,
            download=download,
            shuffle_files=False,
        )
    except AssertionError as error:  # what TFDS raises for "not prepared here"
        raise ValueError(
            f"data.data_dir={data_dir!r} holds no prepared {DATASET}: prepare it on a machine "
            f"with network (tfds.load('{DATASET}', data_dir=...)) and copy the folder, or set "
            f"data.download=true. TFDS said: {error}"
        ) from error
    counts = [limited(int(split.cardinality()), limit) for split in (train, val)]
    train, val = train.take(counts[0]), val.take(counts[1])
    return SegmentationData(
        train=stream(train, size, cache),
        val=stream(val, size, cache),
        class_names=CLASS_NAMES,
        ignore_index=255,
        image_shape=(*size, 3),
        num_train=counts[0],
        num_val=counts[1],
    )
