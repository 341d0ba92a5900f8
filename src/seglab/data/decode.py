"""Image and mask files to tensors: the one decoder every dataset and command reads files with,
and TensorFlow's errors made readable."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def encode_png(array: np.ndarray) -> bytes:
    """A ``uint8`` or ``uint16`` ``(H, W, channels)`` array as PNG bytes."""
    return bytes(tf.io.encode_png(array).numpy())


def tf_reason(message: str) -> str:
    """The readable part of a TensorFlow error: its first line without the function and
    iterator prefixes or an eager op's ``[Op:...]`` suffix, and for a failed ``tf.Assert`` only
    what the assertion says."""
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message.strip()).splitlines()[0]
    if "assertion failed:" in line:
        return line.split("assertion failed:", 1)[1].strip()
    line = re.sub(r"\s*\[Op:\w+\](\s*name:\s*\S*)?\s*$", "", line)
    return re.sub(r"^.*?transformation with iterator: \S+: ", "", line)


def read_image(path: tf.Tensor | str) -> tf.Tensor:
    """Decodes a PNG or JPEG file to ``uint8 (H, W, 3)`` (grey and RGBA become RGB)."""
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def read_mask(path: tf.Tensor | str, colors: bool) -> tf.Tensor:
    """Decodes a mask PNG to ``int32 (H, W, channels)`` with its values as stored.

    TensorFlow's default decode rescales a 16-bit PNG to 8 bits (labels 0, 1, 2 all become 0),
    and a 16-bit decode rescales an 8-bit one (x 257): the bit depth in the PNG header (byte 24,
    in IHDR) picks the decode. 16-bit colour masks are refused, naming the file.
    """
    contents = tf.io.read_file(path)
    depth = tf.io.decode_raw(tf.strings.substr(contents, 24, 1), tf.uint8)[0]
    if colors:
        check = tf.Assert(tf.not_equal(depth, 16), ["16-bit colour masks are not supported:", path])
        with tf.control_dependencies([check]):
            return tf.cast(tf.io.decode_png(contents, channels=0), tf.int32)
    return tf.cond(
        tf.equal(depth, 16),
        lambda: tf.cast(tf.io.decode_png(contents, channels=0, dtype=tf.uint16), tf.int32),
        lambda: tf.cast(tf.io.decode_png(contents, channels=0), tf.int32),
    )


def undecodable_file(paths: Sequence[str]) -> str | None:
    """The first of ``paths`` that is missing or not a decodable image, if any."""
    for path in paths:
        try:
            read_image(path)
        except tf.errors.OpError:
            return path
    return None


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
