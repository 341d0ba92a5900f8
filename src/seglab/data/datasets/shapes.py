"""``data=shapes``: a synthetic imbalanced set where plain CE hides a failing rare class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seglab.data.dataset import SegmentationData, from_arrays, image_size_pair, limited

OBJECT_KINDS = ("disk", "square", "bar")


def shapes(
    class_names: Sequence[str] = ("background", "disk", "square", "bar", "speck"),
    objects: Sequence[str] = OBJECT_KINDS,
    image_size: int | Sequence[int] = 64,
    num_train: int = 800,
    num_val: int = 200,
    seed: int = 0,
    object_probability: float = 0.7,
    rare_image_fraction: float = 0.25,
    rare_size: int = 3,
    rare_max_count: int = 2,
    rare_contrast: float = 0.35,
    noise: float = 0.05,
    ignore_index: int = 255,
    limit: int | None = None,
) -> SegmentationData:
    """Synthetic imbalanced shapes: the dataset on which plain CE hides a failing class.

    Classes, in index order: background (textured, ~90 % of pixels), the ``objects`` (by default
    a disk, a square and a thin bar), and a rare speck: ``rare_size``-pixel squares, at most
    ``rare_max_count`` of them, in ``rare_image_fraction`` of the images, whose colour departs
    from the local background by ``rare_contrast``. With the defaults the speck covers ~0.1 % of
    the training pixels.

    Train and val come from independent seeded generators (``[seed, 0]`` and ``[seed, 1]``), so
    the validation set does not change when ``num_train`` does.

    Args:
        class_names: One name per class: background, each of ``objects``, speck.
        objects: Which of the object kinds ``disk``, ``square``, ``bar`` to draw, each at most
            once per image, in class order (fewer kinds, fewer classes: ``[disk, bar]`` makes a
            4-class set).
        image_size: Height and width in pixels: one side, or ``[side, side]``.
        num_train: Training images.
        num_val: Validation images.
        seed: Seed of the generator; the same seed gives the same arrays.
        object_probability: Chance that each of disk, square and bar appears in an image.
        rare_image_fraction: Fraction of images that contain the rare class.
        rare_size: Side of one rare speck in pixels.
        rare_max_count: Most specks in one image (1 to this many).
        rare_contrast: Colour distance of a speck from its background, in [0, 1].
        noise: Standard deviation of the pixel noise.
        ignore_index: Label that counts in neither loss nor metrics (unused by this generator).
        limit: At most this many images per split (the first ones drawn; quick runs).
    """
    unknown = [kind for kind in objects if kind not in OBJECT_KINDS]
    if unknown or len(set(objects)) != len(objects):
        raise ValueError(
            f"data.objects must list distinct kinds among {list(OBJECT_KINDS)}, got {list(objects)}"
        )
    expected = ["background", *objects, "speck"]
    if len(class_names) != len(expected):
        raise ValueError(
            f"data.class_names must name {len(expected)} classes ({', '.join(expected)}) for "
            f"data=shapes with data.objects={list(objects)}, got {len(class_names)}: "
            f"{list(class_names)}"
        )
    height, width = image_size_pair(image_size)
    if height != width:
        raise ValueError(
            f"data=shapes draws square images: data.image_size=[{height}, {width}] (give one side)"
        )
    if height < 16:
        raise ValueError(f"data.image_size must be at least 16 for data=shapes, got {height}")
    for name, value in {
        "object_probability": object_probability,
        "rare_image_fraction": rare_image_fraction,
        "rare_contrast": rare_contrast,
    }.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"data.{name} must be in [0, 1], got {value}")
    params: dict[str, Any] = dict(
        labels={kind: label for label, kind in enumerate(objects, start=1)},
        image_size=height,
        object_probability=object_probability,
        rare_image_fraction=rare_image_fraction,
        rare_size=rare_size,
        rare_max_count=rare_max_count,
        rare_contrast=rare_contrast,
        noise=noise,
    )
    num_train, num_val = (limited(n, limit) for n in (num_train, num_val))
    train = _draw_shapes(num_train, np.random.default_rng([seed, 0]), **params)
    val = _draw_shapes(num_val, np.random.default_rng([seed, 1]), **params)
    return from_arrays(train, val, class_names, ignore_index)


_CLASS_COLOURS = np.array([[0.85, 0.25, 0.2], [0.25, 0.75, 0.3], [0.2, 0.35, 0.9]])
_SPECK_DIRECTION = np.array([1.0, 1.0, -0.6]) / np.linalg.norm([1.0, 1.0, -0.6])


def _draw_shapes(
    count: int,
    rng: np.random.Generator,
    *,
    labels: dict[str, int],
    image_size: int,
    object_probability: float,
    rare_image_fraction: float,
    rare_size: int,
    rare_max_count: int,
    rare_contrast: float,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    size, speck = image_size, len(labels) + 1
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.zeros((count, size, size), np.uint8)
    scale = size / 64  # object sizes are set for 64 px and scale with the image
    for i in range(count):
        # Background: a grey gradient, so the speck can't be found by one global colour.
        base = rng.uniform(0.3, 0.6)
        tilt = rng.uniform(-0.15, 0.15, size=2)
        image = base + tilt[0] * (yy / size - 0.5) + tilt[1] * (xx / size - 0.5)
        image = np.repeat(image[..., None], 3, axis=-1)
        mask = np.zeros((size, size), np.uint8)
        # Every kind's draws happen whether or not it is drawn, so that leaving one out does not
        # change the others.
        shapes_here = rng.random(3) < object_probability
        if shapes_here[0]:
            r = rng.uniform(5, 9) * scale
            cy, cx = rng.uniform(r, size - r, size=2)
            if "disk" in labels:
                mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = labels["disk"]
        if shapes_here[1]:
            side = int(rng.integers(6, 15) * scale)
            y0, x0 = rng.integers(0, size - side, size=2)
            if "square" in labels:
                mask[y0 : y0 + side, x0 : x0 + side] = labels["square"]
        if shapes_here[2]:
            length, width = int(rng.integers(15, 41) * scale), max(int(2 * scale), 2)
            y0, x0 = rng.integers(0, size - length, size=2)
            bar = (slice(y0, y0 + width), slice(x0, x0 + length))
            if rng.random() >= 0.5:
                bar = (slice(y0, y0 + length), slice(x0, x0 + width))
            if "bar" in labels:
                mask[bar] = labels["bar"]
        for kind, colour_mean in zip(OBJECT_KINDS, _CLASS_COLOURS, strict=True):
            colour = np.clip(colour_mean + rng.normal(0, 0.05, 3), 0, 1)
            if kind in labels:
                image[mask == labels[kind]] = colour
        if rng.random() < rare_image_fraction:
            for _ in range(rng.integers(1, rare_max_count + 1)):
                y0, x0 = rng.integers(0, size - rare_size, size=2)
                region = (slice(y0, y0 + rare_size), slice(x0, x0 + rare_size))
                mask[region] = speck
                image[region] = np.clip(image[region] + rare_contrast * _SPECK_DIRECTION, 0, 1)
        image += rng.normal(0, noise, image.shape)
        images[i] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
        masks[i] = mask
    return images, masks
