"""``data=folder``: your own images and index masks, streamed from disk with ``tf.data``.

Layout (masks matched to images by file stem)::

    <root>/images/*.png|jpg|jpeg   <root>/masks/*.png          seeded train/val split
    <root>/train/images, <root>/train/masks, <root>/val/images, <root>/val/masks   fixed split

Masks are single-channel 8-bit PNGs whose values are class indices (and ``ignore_index``).
Class names and the ignore index come from the config or from ``<root>/classes.yaml``
(``classes: [...]``, ``ignore_index: 255``). Images are decoded and resized (bilinear; masks
nearest neighbour, so labels stay labels) one at a time: the set is never loaded into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml

from seglab.data import SegmentationData

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def pairs(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted ``(image paths, mask paths)`` of ``folder/images`` and ``folder/masks``.

    Raises naming the file when an image has no mask or a mask has no image.
    """
    images_dir, masks_dir = folder / "images", folder / "masks"
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise ValueError(f"data.root: missing folder {needed}")
    images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
    if missing := sorted(set(images) - set(masks)):
        raise ValueError(
            f"image {images[missing[0]]} has no mask {masks_dir / missing[0]}.png"
            f" ({len(missing)} images without masks)"
        )
    if orphans := sorted(set(masks) - set(images)):
        raise ValueError(
            f"mask {masks[orphans[0]]} has no image in {images_dir}"
            f" ({len(orphans)} masks without images)"
        )
    if not images:
        raise ValueError(f"data.root: no images in {images_dir} ({', '.join(IMAGE_SUFFIXES)})")
    stems = sorted(images)
    return [str(images[s]) for s in stems], [str(masks[s]) for s in stems]


def load_pair(
    image_path: tf.Tensor, mask_path: tf.Tensor, size: tuple[int, int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one image/mask pair, checks they match, resizes both to ``size``."""
    image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
    mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=0)
    checks = [
        tf.Assert(
            tf.equal(tf.shape(mask)[2], 1),
            ["mask must be a single-channel PNG of class indices:", mask_path],
        ),
        tf.Assert(
            tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask)[:2])),
            [
                "image and mask sizes differ:",
                image_path,
                tf.shape(image)[:2],
                mask_path,
                tf.shape(mask)[:2],
            ],
        ),
    ]
    with tf.control_dependencies(checks):
        image, mask = tf.identity(image), tf.identity(mask)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, size, method="bilinear")
    mask = tf.image.resize(mask, size, method="nearest")[..., 0]
    return tf.clip_by_value(image, 0.0, 1.0), tf.cast(mask, tf.int32)


def stream(
    images: Sequence[str], masks: Sequence[str], size: tuple[int, int], cache: bool
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((list(images), list(masks))).map(
        lambda x, y: load_pair(x, y, size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.cache() if cache else dataset


def folder(
    root: str,
    class_names: Sequence[str] | None = None,
    image_size: int | Sequence[int] = 128,
    ignore_index: int | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    cache: bool = False,
) -> SegmentationData:
    """A folder dataset (see the module docstring for the layout).

    Args:
        root: The data folder.
        class_names: One name per class index; ``None``: read ``<root>/classes.yaml``.
        image_size: Side, or ``[height, width]``, every image and mask is resized to.
        ignore_index: Mask value counted nowhere; ``None``: ``classes.yaml``'s, else 255.
        val_fraction: Share of the images held out for validation when ``root`` has no
            ``train/`` and ``val/`` subfolders.
        split_seed: Seed of that split (the same seed gives the same split).
        cache: Keep decoded, resized images in memory after the first epoch.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ValueError(f"data.root={root!r} is not a folder")
    table = base / "classes.yaml"
    meta = (yaml.safe_load(table.read_text()) or {}) if table.is_file() else {}
    class_names = list(class_names or meta.get("classes") or [])
    if len(class_names) < 2:
        raise ValueError(
            f"data.class_names: give at least 2 class names, or a {table} with 'classes: [...]'"
        )
    if ignore_index is None:
        ignore_index = int(meta.get("ignore_index", 255))
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if (base / "train").is_dir() and (base / "val").is_dir():
        train, val = pairs(base / "train"), pairs(base / "val")
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        images, masks = pairs(base)
        order = np.random.default_rng(split_seed).permutation(len(images))
        n_val = max(1, round(val_fraction * len(images)))
        if n_val >= len(images):
            raise ValueError(
                f"data.root has {len(images)} images: too few to split off a "
                f"validation set with data.val_fraction={val_fraction}"
            )
        held_out = set(order[:n_val].tolist())
        val = ([images[i] for i in sorted(held_out)], [masks[i] for i in sorted(held_out)])
        kept = [i for i in range(len(images)) if i not in held_out]
        train = ([images[i] for i in kept], [masks[i] for i in kept])
    return SegmentationData(
        train=stream(*train, size, cache),
        val=stream(*val, size, cache),
        class_names=tuple(class_names),
        ignore_index=ignore_index,
        image_shape=(*size, 3),
        num_train=len(train[0]),
        num_val=len(val[0]),
        train_names=tuple(train[1]),
        val_names=tuple(val[1]),
    )
