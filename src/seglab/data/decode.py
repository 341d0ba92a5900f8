"""Image and mask files to arrays: the one decoder every dataset and command reads files with.

Files are read with Pillow, which sees what TensorFlow's decoders do not: a 1-bit PNG's 0/1, a
palette PNG's indices, a JPEG's EXIF orientation and a file's pixel count before it is decoded.
Every error is a :class:`~seglab.data.errors.DataFileError`: one sentence naming the file.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

from seglab.data.colors import ColorTable
from seglab.data.errors import DataFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png",)
# 40 megapixels (about 6300 x 6300): decoding, resizing and counting such an image needs about
# 1 GB; a 420 KB PNG can claim 144 megapixels (12000 x 12000, 3.8 GB).
DEFAULT_MAX_PIXELS = 40_000_000
ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 turn the image a quarter: its displayed height is its stored width.
QUARTER_TURNS = {5, 6, 7, 8}
COLOR_MODES = {"RGB", "RGBA", "P"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class FileHeader:
    """What a file's header says: its size as displayed (EXIF orientation applied), Pillow's
    mode, the EXIF orientation (1 = as stored) and the PNG bit depth (8 for other files)."""

    path: str
    height: int
    width: int
    mode: str
    orientation: int = 1
    bit_depth: int = 8

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def described(self) -> str:
        """``96x128``, with the stored size when an EXIF orientation turns it."""
        size = f"{self.height}x{self.width}"
        if self.orientation in QUARTER_TURNS:
            return (
                f"{size} (EXIF orientation {self.orientation}: stored {self.width}x{self.height})"
            )
        if self.orientation != 1:
            return f"{size} (EXIF orientation {self.orientation})"
        return size


@contextmanager
def opened(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """The file opened lazily (header only); refuses a missing or undecodable file, and one
    past ``max_pixels``, naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise DataFileError(f"cannot read {path}: no such file") from None
    except Image.DecompressionBombError:  # past Pillow's own limit: the PNG header says more
        width, height, _ = png_ihdr(path) or (0, 0, 8)
        raise DataFileError(too_many_pixels(path, height, width, max_pixels)) from None
    except UnidentifiedImageError:
        raise DataFileError(f"cannot read {path}: {unidentified(path)}") from None
    except OSError as error:
        raise DataFileError(f"cannot read {path}: {error.strerror or error}") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise DataFileError(too_many_pixels(path, height, width, max_pixels))
        yield image


def too_many_pixels(path: str | Path, height: int, width: int, max_pixels: int) -> str:
    """The sentence for a file past the pixel limit (its size, when known)."""
    pixels = f"{width * height:,} pixels ({height}x{width})" if width else "more pixels"
    return (
        f"{path} has {pixels}, more than data.max_pixels={max_pixels:,}; shrink the file or "
        "raise data.max_pixels"
    )


def unidentified(path: str | Path) -> str:
    """Why Pillow could not identify a file, from its first bytes."""
    with open(path, "rb") as file:
        start = file.read(8)
    if not start:
        return "an empty file"
    if start.startswith((PNG_SIGNATURE, b"\xff\xd8")):
        return "a truncated or corrupt PNG or JPEG"
    return "not a PNG or JPEG image"


def png_ihdr(path: str | Path) -> tuple[int, int, int] | None:
    """A PNG's ``(width, height, bit depth per sample)`` from its IHDR chunk; ``None`` for any
    other file."""
    with open(path, "rb") as file:
        start = file.read(26)
    if not start.startswith(PNG_SIGNATURE) or len(start) < 26:
        return None
    return int.from_bytes(start[16:20], "big"), int.from_bytes(start[20:24], "big"), start[24]


def png_bit_depth(path: str | Path) -> int:
    """A PNG's bit depth per sample; 8 for any other file."""
    return (png_ihdr(path) or (0, 0, 8))[2]


def read_header(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> FileHeader:
    """The file's :class:`FileHeader`, without decoding its pixels."""
    with opened(path, max_pixels) as image:
        orientation = int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
        width, height = image.size
        if orientation in QUARTER_TURNS:
            width, height = height, width
        return FileHeader(str(path), height, width, image.mode, orientation, png_bit_depth(path))


@contextmanager
def decoded(path: str | Path, max_pixels: int) -> Iterator[Image.Image]:
    """The file's pixels, turned as its EXIF orientation says; a truncated or corrupt file is
    refused naming it."""
    with opened(path, max_pixels) as image:
        try:
            image.load()
            turned = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise DataFileError(f"cannot read {path}: {error}") from None
        yield turned


def image_array(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as ``uint8 (H, W, 3)``: grey, palette and RGBA become RGB, 16-bit keeps its
    high byte, the EXIF orientation is applied."""
    with decoded(path, max_pixels) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            values = np.clip(np.asarray(image, np.int64), 0, 65535) >> 8
            return np.repeat(values.astype(np.uint8)[..., None], 3, axis=-1)
        if image.mode == "F":
            raise DataFileError(f"cannot read {path}: floating-point images are not supported")
        return np.asarray(image.convert("RGB"))


def mask_array(
    path: str | Path, colors: ColorTable | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A mask file as ``int32 (H, W)`` class indices.

    Without a colour table the values are the labels: grey 8- and 16-bit PNGs as stored, 1-bit
    PNGs as 0/1 (Pillow's bool), palette PNGs as their palette indices (Pascal VOC: 255 is the
    border). With one, RGB/RGBA and palette masks map through it by colour; a palette index past
    the palette, a 16-bit colour mask or an index mask are refused naming the file.
    """
    with decoded(path, max_pixels) as image:
        mode = image.mode
        if colors is None:
            if mode in ("RGB", "RGBA"):
                raise DataFileError(
                    f"mask {path} is a colour ({mode}) PNG: give data.colors, one [r, g, b] per "
                    "class (seglab stats data=folder lists the colours the masks hold)"
                )
            if mode not in ("1", "L", "P", "I;16", "I;16B", "I;16L", "I"):
                raise DataFileError(
                    f"mask {path} is a {mode} PNG; masks are single-channel PNGs of class "
                    "indices (1-, 8- or 16-bit grey, or palette), or colour masks with data.colors"
                )
            return np.asarray(image).astype(np.int32)
        check_colour_mask(path, mode)
        if png_bit_depth(path) == 16:
            raise DataFileError(f"mask {path}: 16-bit colour masks are not supported")
        return colors.labels(palette_colors(image, path), str(path))


def check_colour_mask(path: str | Path, mode: str) -> None:
    """Refuses a mask of Pillow ``mode`` that holds no colours while ``data.colors`` is set."""
    if mode not in COLOR_MODES:
        raise DataFileError(
            f"mask {path} is a {mode} PNG, not an RGB/RGBA/palette PNG, but data.colors is "
            "set: unset data.colors for masks of class indices"
        )


def palette_colors(image: Image.Image, path: str | Path) -> np.ndarray:
    """A colour mask's ``uint8 (H, W, 3)`` colours; a palette index past the palette (which
    TensorFlow decodes as black) is refused."""
    if image.mode != "P":
        return np.asarray(image.convert("RGB"))
    indices = np.asarray(image)
    palette = np.array(image.getpalette() or [], np.uint8).reshape(-1, 3)
    if indices.max(initial=0) >= len(palette):
        row, col = np.argwhere(indices >= len(palette))[0]
        raise DataFileError(
            f"mask {path} has palette index {indices[row, col]} (first at row {row}, column "
            f"{col}) past its {len(palette)}-colour palette"
        )
    return palette[indices]


def size_mismatch(image: FileHeader, mask: FileHeader) -> str:
    """The sentence for an image and mask of different sizes."""
    return (
        f"image {image.path} is {image.described()} but its mask {mask.path} is {mask.described()}"
    )


def load_pair(
    image_path: tf.Tensor,
    mask_path: tf.Tensor,
    size: tuple[int, int],
    colors: ColorTable | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one image/mask pair (inside a ``tf.data`` map), checks they match, resizes both to
    ``size`` (:func:`resize_pair`)."""

    def read(image_file: bytes, mask_file: bytes) -> tuple[np.ndarray, np.ndarray]:
        image = image_array(image_file.decode(), max_pixels)
        mask = mask_array(mask_file.decode(), colors, max_pixels)
        if image.shape[:2] != mask.shape:
            headers = (read_header(f.decode(), max_pixels) for f in (image_file, mask_file))
            raise DataFileError(size_mismatch(*headers))
        return image, mask[..., None]

    image, mask = tf.numpy_function(read, [image_path, mask_path], [tf.uint8, tf.int32])
    image.set_shape([None, None, 3])
    mask.set_shape([None, None, 1])
    return resize_pair(image, mask, size, image_path, mask_path)


def encode_png(array: np.ndarray) -> bytes:
    """A ``uint8`` or ``uint16`` ``(H, W, channels)`` array as PNG bytes."""
    return bytes(tf.io.encode_png(array).numpy())


def tf_reason(message: str) -> str:
    """The readable part of a TensorFlow error: its first line without the function and
    iterator prefixes, an eager op's ``[Op:...]`` suffix or the exception name a decoder raised
    inside ``tf.numpy_function``, and for a failed ``tf.Assert`` only what the assertion says."""
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message.strip()).splitlines()[0]
    if "assertion failed:" in line:
        return line.split("assertion failed:", 1)[1].strip()
    line = re.sub(r"\s*\[Op:\w+\](\s*name:\s*\S*)?\s*$", "", line)
    line = re.sub(r"^.*?transformation with iterator: \S+: ", "", line)
    return re.sub(rf"^(ValueError|{DataFileError.__name__}): ", "", line)


def data_file_reason(message: str) -> str | None:
    """What a :class:`DataFileError` raised inside a ``tf.data`` map said, if that is what
    ended the stream."""
    return tf_reason(message) if f"{DataFileError.__name__}: " in message else None


def undecodable_file(paths: Sequence[str]) -> str | None:
    """The first of ``paths`` that is missing or not a decodable image, if any."""
    for path in paths:
        try:
            image_array(path, max_pixels=np.iinfo(np.int64).max)
        except DataFileError:
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
