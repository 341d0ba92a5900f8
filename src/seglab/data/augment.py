"""Augmentation strength: one knob that moves image and mask together, training stream only.

Every element gets its own stateless random seed from
``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``: the same seed gives the same
sequence of draws, every epoch draws anew (N images x E epochs = N*E distinct views, as with
Keras' random layers), and the draws do not depend on how many threads map the dataset.

Geometric transforms (rotation, zoom, translation, horizontal flip) are one affine map per image,
applied to the image (bilinear, ``fill_mode`` outside) and to the mask (nearest neighbour, so
labels stay labels; pixels from outside the image become ``ignore_index`` and count in neither
loss nor metrics). Photometric transforms (brightness, contrast) touch the image only.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from seglab.core.checks import check_choice

# The maxima at strength 1: those of the image-weights question's ImageDataGenerator
# (rotation_range=90, shifts 0.4, zoom_range=0.4, horizontal_flip), plus moderate photometric
# jitter.
FULL_STRENGTH = {
    "rotation": 90.0,  # degrees, drawn from [-r, r]
    "zoom": 0.4,  # scale drawn from [1 - z, 1 + z]
    "translation": 0.4,  # fraction of the size, drawn from [-t, t] per axis
    "flip": 0.5,  # probability of a horizontal flip
    "brightness": 0.2,  # added to [0, 1] images, drawn from [-b, b]
    "contrast": 0.3,  # factor drawn from [1 - c, 1 + c] around the image mean
}
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")


class Augmenter:
    """Joint image/mask augmentation scaled by one ``strength`` in [0, 1].

    Each factor is ``strength * FULL_STRENGTH[factor]`` unless given explicitly.

    Args:
        strength: Scales every factor; 0 is the identity.
        rotation: Max rotation in degrees (``None``: from strength).
        zoom: Max relative zoom (``None``: from strength).
        translation: Max shift as a fraction of the image size (``None``: from strength).
        flip: Probability of a horizontal flip (``None``: from strength).
        brightness: Max brightness shift (``None``: from strength).
        contrast: Max relative contrast change (``None``: from strength).
        fill_mode: How the image is filled outside its borders (the mask always gets
            ``ignore_index``).
        interpolation: Image interpolation (masks are always nearest).
        ignore_index: Mask label for pixels from outside the image.
    """

    def __init__(
        self,
        strength: float = 0.0,
        rotation: float | None = None,
        zoom: float | None = None,
        translation: float | None = None,
        flip: float | None = None,
        brightness: float | None = None,
        contrast: float | None = None,
        fill_mode: str = "reflect",
        interpolation: str = "bilinear",
        ignore_index: int = 255,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"augment.strength must be in [0, 1], got {strength}")
        check_choice("augment.fill_mode", fill_mode, FILL_MODES)
        check_choice("augment.interpolation", interpolation, INTERPOLATIONS)
        given = {
            "rotation": rotation,
            "zoom": zoom,
            "translation": translation,
            "flip": flip,
            "brightness": brightness,
            "contrast": contrast,
        }
        self.factors = {
            name: strength * FULL_STRENGTH[name] if value is None else float(value)
            for name, value in given.items()
        }
        for name, value in self.factors.items():
            if value < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {value}")
        if self.factors["flip"] > 1 or self.factors["zoom"] >= 1:
            raise ValueError(
                f"augment.flip must be <= 1 and augment.zoom < 1, got {self.factors['flip']} "
                f"and {self.factors['zoom']}"
            )
        self.strength = strength
        self.fill_mode = fill_mode
        self.interpolation = interpolation
        self.ignore_index = ignore_index

    @property
    def is_identity(self) -> bool:
        return not any(self.factors.values())

    @property
    def geometric(self) -> bool:
        f = self.factors
        return bool(f["rotation"] or f["zoom"] or f["translation"] or f["flip"])

    def __call__(
        self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Augments one ``(image HxWx3 float, mask HxW int)`` pair with a stateless seed (2,)."""
        seeds = tf.random.split(tf.cast(seed, tf.int64), 8)
        if self.geometric:
            image, mask = self._geometric(image, mask, seeds)
        f = self.factors
        if f["brightness"]:
            image = image + tf.random.stateless_uniform(
                (), seeds[6], -f["brightness"], f["brightness"]
            )
        if f["contrast"]:
            factor = tf.random.stateless_uniform((), seeds[7], 1 - f["contrast"], 1 + f["contrast"])
            mean = tf.reduce_mean(image, axis=(0, 1), keepdims=True)
            image = (image - mean) * factor + mean
        if f["brightness"] or f["contrast"]:
            image = tf.clip_by_value(image, 0.0, 1.0)
        return image, mask

    def _geometric(
        self, image: tf.Tensor, mask: tf.Tensor, seeds: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        f = self.factors
        size = tf.shape(image)[:2]
        height, width = tf.cast(size[0], tf.float32), tf.cast(size[1], tf.float32)
        angle = tf.random.stateless_uniform((), seeds[0], -1, 1) * f["rotation"] * math.pi / 180
        zoom = tf.random.stateless_uniform((), seeds[1], 1 - f["zoom"], 1 + f["zoom"])
        shift = tf.random.stateless_uniform((2,), seeds[2], -1, 1) * f["translation"]
        flip = tf.random.stateless_uniform((), seeds[3]) < f["flip"]
        # The transform maps each output pixel to the input pixel it samples:
        # in = A (out - centre) + centre - shift, with A = rotation * flip / zoom.
        sign = tf.where(flip, -1.0, 1.0)
        cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        a00, a01, a10, a11 = cos * sign, -sin, sin * sign, cos
        cx, cy = (width - 1) / 2, (height - 1) / 2
        tx, ty = shift[0] * width, shift[1] * height
        transform = tf.stack(
            [
                a00, a01, cx - a00 * cx - a01 * cy - tx,
                a10, a11, cy - a10 * cx - a11 * cy - ty,
                0.0, 0.0,
            ]
        )[None]  # fmt: skip
        image = tf.raw_ops.ImageProjectiveTransformV3(
            images=image[None],
            transforms=transform,
            output_shape=size,
            fill_value=0.0,
            interpolation=self.interpolation.upper(),
            fill_mode=self.fill_mode.upper(),
        )[0]
        moved = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(mask, tf.float32)[None, ..., None],
            transforms=transform,
            output_shape=size,
            fill_value=float(self.ignore_index),
            interpolation="NEAREST",
            fill_mode="CONSTANT",
        )[0, ..., 0]
        return image, tf.cast(moved, mask.dtype)

    def stream(self, dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
        """Maps an unbatched ``(image, mask, *rest)`` stream; ``rest`` passes through unchanged."""
        if self.is_identity:
            return dataset
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def apply(element: tuple[tf.Tensor, ...], pair: tf.Tensor) -> tuple[tf.Tensor, ...]:
            image, mask = self(element[0], element[1], pair)
            return (image, mask, *element[2:])

        return tf.data.Dataset.zip(dataset, seeds).map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def preview(
    augmenter: Augmenter, dataset: tf.data.Dataset, count: int = 4, draws: int = 3, seed: int = 0
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """``count`` training samples, each as drawn in ``draws`` epochs (first column: original).

    Returns:
        ``(images, masks)``: ``count`` rows of ``draws + 1`` numpy arrays each.
    """
    originals = list(dataset.take(count).as_numpy_iterator())
    rows_images = [[image] for image, _ in originals]
    rows_masks = [[mask] for _, mask in originals]
    stream = augmenter.stream(dataset.take(count), seed)
    for _ in range(draws):  # each pass over the stream is a new epoch: new draws
        for row, (image, mask) in enumerate(stream.as_numpy_iterator()):
            rows_images[row].append(image)
            rows_masks[row].append(mask)
    return rows_images, rows_masks
