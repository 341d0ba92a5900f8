"""``data=folder``: your own images and index masks, streamed from disk with ``tf.data``.

Layout (masks matched to images by file stem), the first that fits::

    data.splits={train: {images: <dir>, masks: <dir>}, val: {...}, test: {...}}   given folders
    <root>/train/{images,masks}, <root>/val/{images,masks} [, <root>/test/{images,masks}]
    <root>/images/*.png|jpg|jpeg, <root>/masks/*.png      seeded train/val split

``data.splits`` names each split's image and mask folder relative to ``root``, so layouts such as
SegNet's CamVid (``train/`` beside ``trainannot/``) need no code: see ``conf/data/camvid.yaml``.
A ``test`` split is optional; when present, the best checkpoint is evaluated on it at the end of
a run.

Masks are either single-channel 8- or 16-bit PNGs whose values are class indices (and
``ignore_index``), read exactly as stored, or colour masks (RGB, RGBA or palette PNGs, which
TensorFlow decodes to their colours) mapped through a colour table: one ``[r, g, b]`` per class,
plus an optional colour that means "ignore" (Pascal VOC's boundary colour, say). Class names,
ignore index and colours come from the config or from ``<root>/classes.yaml``::

    classes: [background, road, person]
    ignore_index: 255                  # index masks: the value counted nowhere
    colors: [[0, 0, 0], [128, 64, 128], [220, 20, 60]]    # only for colour masks
    ignore_color: [255, 255, 255]                           # optional

Images are decoded and resized (bilinear; masks nearest neighbour, so labels stay labels) one at
a time: the set is never loaded into memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import yaml

from seglab.core.checks import check_class_names
from seglab.data.dataset import SPLITS, SegmentationData, image_size_pair, limited
from seglab.data.decode import IMAGE_SUFFIXES, read_image, read_mask, resize_pair

Pairs = tuple[list[str], list[str]]


def pairs(images_dir: Path, masks_dir: Path, option: str = "data.root") -> Pairs:
    """Sorted ``(image paths, mask paths)`` of two folders, matched by file stem.

    Raises naming ``option`` when a folder is missing, and the file when an image has no mask or
    a mask has no image.
    """
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise ValueError(f"{option}: missing folder {needed}")
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


class ColorTable:
    """Maps colour-mask pixels to class indices; a colour not in the table is an error.

    Args:
        colors: One ``[r, g, b]`` per class, in class order.
        ignore_color: Colour mapped to ``ignore_index``, if any.
        ignore_index: Index the ignore colour becomes.
    """

    def __init__(
        self,
        colors: Sequence[Sequence[int]],
        ignore_color: Sequence[int] | None,
        ignore_index: int,
    ) -> None:
        table = [*map(list, colors), *([list(ignore_color)] if ignore_color is not None else [])]
        for color in table:
            if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
                raise ValueError(f"data.colors: {color} is not an [r, g, b] of 0..255 values")
        codes = [self.code(np.array(c, np.int32)) for c in table]
        if len(set(codes)) != len(codes):
            raise ValueError(f"data.colors: the same colour is given twice in {table}")
        indices = [*range(len(colors)), *([ignore_index] if ignore_color is not None else [])]
        self.colors = table
        self.lookup = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(codes, tf.int32), tf.constant(indices, tf.int32)
            ),
            default_value=-1,
        )

    @staticmethod
    def code(rgb: Any) -> Any:
        """One int per colour: ``r * 65536 + g * 256 + b`` (works on numpy and tensors)."""
        return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]

    def __call__(self, mask: tf.Tensor, mask_path: tf.Tensor) -> tf.Tensor:
        """``(H, W, 3|4)`` uint8 colours → ``(H, W, 1)`` int32 indices; unknown colours raise."""
        labels = self.lookup.lookup(self.code(tf.cast(mask[..., :3], tf.int32)))
        unknown = tf.where(labels < 0)
        check = tf.Assert(
            tf.equal(tf.shape(unknown)[0], 0),
            [
                "mask has a colour that is not in data.colors:",
                mask_path,
                "first such pixel (row, col) and its colour:",
                unknown[:1],
                tf.gather_nd(mask[..., :3], unknown[:1]),
                f"colours in the table: {self.colors}",
            ],
        )
        with tf.control_dependencies([check]):
            return tf.identity(labels)[..., None]


def load_pair(
    image_path: tf.Tensor,
    mask_path: tf.Tensor,
    size: tuple[int, int],
    colors: ColorTable | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one image/mask pair, checks they match, resizes both to ``size``."""
    image = read_image(image_path)
    mask = read_mask(mask_path, colors is not None)
    if colors is None:
        channels = tf.Assert(
            tf.equal(tf.shape(mask)[2], 1),
            [
                "mask is not a single-channel PNG of class indices:",
                mask_path,
                "(colour or palette masks need data.colors: one [r, g, b] per class)",
            ],
        )
    else:
        channels = tf.Assert(
            tf.greater_equal(tf.shape(mask)[2], 3),
            ["data.colors is set but this mask is not an RGB/RGBA/palette PNG:", mask_path],
        )
    with tf.control_dependencies([channels]):
        mask = tf.identity(mask)
    if colors is not None:
        mask = colors(mask, mask_path)
    return resize_pair(image, mask, size, image_path, mask_path)


def stream(
    images: Sequence[str],
    masks: Sequence[str],
    size: tuple[int, int],
    cache: bool,
    colors: ColorTable | None = None,
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((list(images), list(masks))).map(
        lambda x, y: load_pair(x, y, size, colors),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.cache() if cache else dataset


def read_classes_file(path: Path) -> dict[str, Any]:
    """``classes.yaml`` as a mapping; raises naming the file when it is not one."""
    if not path.is_file():
        return {}
    try:
        meta = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or error
        raise ValueError(f"{path} is not valid YAML{line}: {problem}") from None
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValueError(
            f"{path} must be a mapping such as 'classes: [background, cell]', "
            f"got a {type(meta).__name__}"
        )
    return dict(meta)


def split_folders(
    base: Path, splits: Mapping[str, Mapping[str, str]] | None
) -> dict[str, Pairs] | None:
    """Image/mask pairs per split from ``data.splits`` or the ``train/``, ``val/`` [``test/``]
    layout; ``None`` when ``root`` has neither (one folder to split)."""
    if splits is not None:
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"data.splits: unknown splits {unknown}; the splits are {SPLITS}")
        found = {}
        for split in SPLITS:
            if split not in splits:
                if split != "test":
                    raise ValueError(f"data.splits needs a {split!r} entry: {{images, masks}}")
                continue
            entry = splits[split]
            if not isinstance(entry, Mapping) or set(entry) != {"images", "masks"}:
                raise ValueError(
                    f"data.splits.{split} must be {{images: <folder>, masks: <folder>}} relative "
                    f"to data.root, got {entry!r}"
                )
            found[split] = pairs(
                base / entry["images"], base / entry["masks"], f"data.splits.{split}"
            )
        return found
    if (base / "train").is_dir() and (base / "val").is_dir():
        present = [s for s in SPLITS if s != "test" or (base / s).is_dir()]
        return {s: pairs(base / s / "images", base / s / "masks") for s in present}
    return None


def seeded_split(base: Path, val_fraction: float, split_seed: int) -> dict[str, Pairs]:
    """``<root>/images`` and ``<root>/masks`` split into train and val by a seeded shuffle."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    images, masks = pairs(base / "images", base / "masks")
    order = np.random.default_rng(split_seed).permutation(len(images))
    n_val = max(1, round(val_fraction * len(images)))
    if n_val >= len(images):
        raise ValueError(
            f"data.root has {len(images)} images: too few to split off a "
            f"validation set with data.val_fraction={val_fraction}"
        )
    held_out = sorted(order[:n_val].tolist())
    kept = sorted(set(range(len(images))) - set(held_out))
    return {
        "train": ([images[i] for i in kept], [masks[i] for i in kept]),
        "val": ([images[i] for i in held_out], [masks[i] for i in held_out]),
    }


def folder(
    root: str,
    class_names: Sequence[str] | None = None,
    image_size: int | Sequence[int] = 128,
    ignore_index: int | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    cache: bool = False,
    colors: Sequence[Sequence[int]] | None = None,
    ignore_color: Sequence[int] | None = None,
    splits: Mapping[str, Mapping[str, str]] | None = None,
    limit: int | None = None,
) -> SegmentationData:
    """A folder dataset (see the module docstring for the layouts).

    Args:
        root: The data folder.
        class_names: One name per class index; ``None``: read ``<root>/classes.yaml``.
        image_size: Side, or ``[height, width]``, every image and mask is resized to.
        ignore_index: Mask value counted nowhere; ``None``: ``classes.yaml``'s, else 255.
        val_fraction: Share of the images held out for validation when ``root`` has one
            ``images/`` folder and no splits.
        split_seed: Seed of that split (the same seed gives the same split).
        cache: Keep decoded, resized images in memory after the first epoch.
        colors: For colour masks: one ``[r, g, b]`` per class; ``None``: ``classes.yaml``'s,
            else the masks hold class indices.
        ignore_color: For colour masks: the colour counted nowhere (becomes ``ignore_index``).
        splits: Image and mask folder of each split, relative to ``root``:
            ``{train: {images: train, masks: trainannot}, val: {...}, test: {...}}`` (``test``
            optional); ``None``: the ``train/``/``val/``/``test/`` or single-folder layout.
        limit: At most this many images per split (the first by file name; quick runs).
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ValueError(f"data.root={root!r} is not a folder")
    table = base / "classes.yaml"
    meta = read_classes_file(table)
    if class_names:
        class_names = check_class_names(class_names, "data.class_names")
    else:
        class_names = check_class_names(meta.get("classes") or [], f"'classes' in {table}")
    if ignore_index is None:
        ignore_index = int(meta.get("ignore_index", 255))
    colors = colors if colors is not None else meta.get("colors")
    ignore_color = ignore_color if ignore_color is not None else meta.get("ignore_color")
    color_table = None
    if colors is not None:
        if len(colors) != len(class_names):
            raise ValueError(
                f"data.colors: {len(colors)} colours for {len(class_names)} classes "
                f"{class_names}; give one [r, g, b] per class, in class order"
            )
        color_table = ColorTable(colors, ignore_color, ignore_index)
    elif ignore_color is not None:
        raise ValueError("data.ignore_color is set but data.colors is not: give both")
    size = image_size_pair(image_size)
    found = split_folders(base, splits) or seeded_split(base, val_fraction, split_seed)
    found = {
        split: (images[: limited(len(images), limit)], masks[: limited(len(masks), limit)])
        for split, (images, masks) in found.items()
    }
    streams = {split: stream(*found[split], size, cache, color_table) for split in found}
    return SegmentationData(
        train=streams["train"],
        val=streams["val"],
        class_names=tuple(class_names),
        ignore_index=ignore_index,
        image_shape=(*size, 3),
        num_train=len(found["train"][0]),
        num_val=len(found["val"][0]),
        colors=None if colors is None else tuple(map(tuple, colors)),
        test=streams.get("test"),
        num_test=len(found["test"][0]) if "test" in found else 0,
        files={split: tuple(zip(*pair, strict=True)) for split, pair in found.items()},
    )
