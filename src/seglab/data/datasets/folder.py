"""``data=folder``: your own images and masks, streamed from disk with ``tf.data``.

Layout (masks matched to images by their path below the folder, without the suffix), the first
that fits::

    data.splits={train: {images: <dir>, masks: <dir>}, val: {...}, test: {...}}   given folders
    <root>/train/{images,masks}, <root>/val/{images,masks} [, <root>/test/{images,masks}]
    <root>/images/**.png|jpg|jpeg, <root>/masks/**.png      seeded train/val split

Sub-folders are read (``images/a/1.png`` pairs with ``masks/a/1.png``); hidden files (``.*``,
macOS's ``._*``) are not. ``data.splits`` names each split's image and mask folder relative to
``root``, so layouts such as SegNet's CamVid (``train/`` beside ``trainannot/``) need no code:
see ``conf/data/camvid.yaml``. A ``test`` split is optional; when present, the best checkpoint is
evaluated on it at the end of a run.

Masks hold class indices, read exactly as stored: grey 8- and 16-bit PNGs, 1-bit PNGs (0/1) and
palette PNGs (their indices: Pascal VOC's 255 border is the default ``ignore_index``). Colour
masks (RGB, RGBA, or palette read by colour) map through a colour table: one ``[r, g, b]`` per
class, plus the colours that mean "ignore". Without a table, colour masks are refused with the
colours they hold and a ``classes.suggested.yaml`` to fill in. Class names, ignore index and
colours come from the config or from ``<root>/classes.yaml``::

    classes: [background, road, person]
    ignore_index: 255                  # the value counted nowhere
    colors: [[0, 0, 0], [128, 64, 128], [220, 20, 60]]    # only for colour masks
    ignore_color: [[255, 255, 255], [0, 0, 64]]             # optional: one colour or several

Every file's header is read when the folder is listed: sizes (after the EXIF orientation, which
is applied), modes and pixel counts (``data.max_pixels``) are checked before any pixel is
decoded. Images are decoded and resized (bilinear; masks nearest neighbour, so labels stay
labels) one at a time: the set is never loaded into memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import yaml

from seglab.core.checks import check_class_names
from seglab.data.colors import (
    ColorTable,
    color_census,
    described_census,
    suggested_classes_yaml,
    write_suggestion,
)
from seglab.data.dataset import SPLITS, SegmentationData, image_size_pair, limited
from seglab.data.decode import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    FileHeader,
    check_colour_mask,
    decoded,
    load_pair,
    read_header,
    size_mismatch,
)
from seglab.data.errors import DataFileError

Pairs = tuple[list[str], list[str]]
# data.image_size=null: sides rounded to a multiple of 16, what a U-Net of depth <= 4 divides.
SIZE_MULTIPLE = 16
# Colour masks read for the colour list of the error that asks for a colour table.
CENSUS_MASKS = 200


def files_by_stem(folder: Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    """The ``suffixes`` files below ``folder`` (sub-folders too, hidden files not), by their path
    relative to it without the suffix; two files of one such name (``a.png`` beside ``a.jpg``)
    are refused, naming both."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.suffix.lower() not in suffixes or not path.is_file():
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        stem = relative.with_suffix("").as_posix()
        if stem in found:
            raise ValueError(
                f"{found[stem]} and {path} are two {what}s named {stem!r}: keep one (which "
                "one to read would be a guess)"
            )
        found[stem] = path
    return found


def pairs(images_dir: Path, masks_dir: Path, option: str = "data.root") -> Pairs:
    """Sorted ``(image paths, mask paths)`` of two folders, matched by :func:`files_by_stem`.

    Raises naming ``option`` when a folder is missing, and the file when an image has no mask or
    a mask has no image.
    """
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise ValueError(f"{option}: missing folder {needed}")
    images = files_by_stem(images_dir, IMAGE_SUFFIXES, "image")
    masks = files_by_stem(masks_dir, MASK_SUFFIXES, "mask")
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
        raise ValueError(f"{option}: no images in {images_dir} ({', '.join(IMAGE_SUFFIXES)})")
    stems = sorted(images)
    return [str(images[s]) for s in stems], [str(masks[s]) for s in stems]


def checked_headers(
    found: Mapping[str, Pairs],
    color_table: ColorTable | None,
    max_pixels: int,
    root: Path,
    ignore_index: int,
) -> dict[str, list[FileHeader]]:
    """Every image's header per split, once each file's is read (unreadable files and files
    past ``max_pixels`` are refused), each mask's size matches its image's and each mask's mode
    fits ``color_table``: index masks without one, colour masks with one."""
    images: dict[str, list[FileHeader]] = {}
    colour_masks = []
    for split, (image_paths, mask_paths) in found.items():
        images[split] = []
        for image_path, mask_path in zip(image_paths, mask_paths, strict=True):
            image, mask = read_header(image_path, max_pixels), read_header(mask_path, max_pixels)
            if image.size != mask.size:
                raise DataFileError(size_mismatch(image, mask))
            if color_table is not None:
                check_colour_mask(mask_path, mask.mode)
            if color_table is None and mask.mode in ("RGB", "RGBA"):
                colour_masks.append(mask_path)
            images[split].append(image)
    if colour_masks:
        raise colour_masks_need_a_table(colour_masks, root, ignore_index, max_pixels)
    return images


def colour_masks_need_a_table(
    masks: Sequence[str], root: Path, ignore_index: int, max_pixels: int
) -> DataFileError:
    """The error for colour masks without ``data.colors``: the colours they hold, with their
    pixel shares, and a ``classes.suggested.yaml`` written in ``root`` to fill in."""
    read = masks[:CENSUS_MASKS]
    arrays = []
    for path in read:
        with decoded(path, max_pixels) as image:
            arrays.append(np.asarray(image.convert("RGB")))
    census = color_census(arrays)
    where = write_suggestion(root, suggested_classes_yaml(census, ignore_index))
    counted = f"the first {len(read)} of them" if len(read) < len(masks) else "they"
    return DataFileError(
        f"{len(masks)} masks are colour PNGs (the first: {masks[0]}) but data.colors is not set: "
        f"{counted} hold {len(census)} colours ({described_census(census)}); {where}"
    )


def stream(
    images: Sequence[str],
    masks: Sequence[str],
    size: tuple[int, int],
    cache: bool,
    colors: ColorTable | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((list(images), list(masks))).map(
        lambda x, y: load_pair(x, y, size, colors, max_pixels),
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
    image_size: int | Sequence[int] | None = None,
    ignore_index: int | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    cache: bool = False,
    colors: Sequence[Sequence[int]] | None = None,
    ignore_color: Sequence[int] | Sequence[Sequence[int]] | None = None,
    splits: Mapping[str, Mapping[str, str]] | None = None,
    limit: int | None = None,
    max_side: int = 256,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SegmentationData:
    """A folder dataset (see the module docstring for the layouts and mask kinds).

    Args:
        root: The data folder.
        class_names: One name per class index; ``None``: read ``<root>/classes.yaml``.
        image_size: Side, or ``[height, width]``, every image and mask is resized to;
            ``None``: the training images' most common size, its aspect kept, shrunk to
            ``max_side`` and rounded to a multiple of 16 (printed).
        ignore_index: Mask value counted nowhere; ``None``: ``classes.yaml``'s, else 255.
        val_fraction: Share of the images held out for validation when ``root`` has one
            ``images/`` folder and no splits.
        split_seed: Seed of that split (the same seed gives the same split).
        cache: Keep decoded, resized images in memory after the first epoch.
        colors: For colour masks: one ``[r, g, b]`` per class; ``None``: ``classes.yaml``'s,
            else the masks hold class indices.
        ignore_color: For colour masks: the colour, or list of colours, counted nowhere (they
            become ``ignore_index``).
        splits: Image and mask folder of each split, relative to ``root``:
            ``{train: {images: train, masks: trainannot}, val: {...}, test: {...}}`` (``test``
            optional); ``None``: the ``train/``/``val/``/``test/`` or single-folder layout.
        limit: At most this many images per split (the first by file name; quick runs).
        max_side: With ``image_size=None``: the longest side images are shrunk to.
        max_pixels: Files with more pixels are refused, naming them, before they are decoded.
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
        ignore_index = meta_ignore_index(meta, table)
    check_label("data.ignore_index", ignore_index)
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
    elif ignore_color:
        raise ValueError("data.ignore_color is set but data.colors is not: give both")
    if max_pixels < 1:
        raise ValueError(f"data.max_pixels must be >= 1, got {max_pixels}")
    found = split_folders(base, splits) or seeded_split(base, val_fraction, split_seed)
    found = {
        split: (images[: limited(len(images), limit)], masks[: limited(len(masks), limit)])
        for split, (images, masks) in found.items()
    }
    headers = checked_headers(found, color_table, max_pixels, base, ignore_index)
    sizes = Counter(header.size for header in headers["train"])
    size = (
        image_size_pair(image_size) if image_size is not None else size_from_data(sizes, max_side)
    )
    print(listed(base, found, sizes, size, image_size is None, max_side))
    streams = {
        split: stream(*found[split], size, cache, color_table, max_pixels) for split in found
    }
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


def meta_ignore_index(meta: Mapping[str, Any], table: Path) -> int:
    """``classes.yaml``'s ``ignore_index``: 255 when absent or null."""
    value = meta.get("ignore_index")
    if value is None:
        return 255
    check_label(f"'ignore_index' in {table}", value)
    return int(value)


def check_label(option: str, value: Any) -> None:
    """Refuses an ignore index that is no whole number (YAML's ``yes``, ``"255"``, 2.5)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{option} must be a whole number such as 255, got {value!r}")


def size_from_data(sizes: Counter[tuple[int, int]], max_side: int) -> tuple[int, int]:
    """``data.image_size=null``: the most common training image size (of ``sizes``, how many
    images have each), shrunk so its longer side is at most ``max_side`` (aspect kept), each side
    rounded to a multiple of 16."""
    if max_side < SIZE_MULTIPLE:
        raise ValueError(f"data.max_side must be >= {SIZE_MULTIPLE}, got {max_side}")
    (height, width), _ = sizes.most_common(1)[0]
    scale = min(1.0, max_side / max(height, width))
    return tuple(  # type: ignore[return-value]
        max(SIZE_MULTIPLE, round(side * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        for side in (height, width)
    )


def listed(
    base: Path,
    found: Mapping[str, Pairs],
    sizes: Counter[tuple[int, int]],
    size: tuple[int, int],
    from_data: bool,
    max_side: int,
) -> str:
    """The line that says what was found (``sizes``: the training images' sizes, how many of
    each) and what the model will see."""
    counts = ", ".join(f"{split} {len(found[split][0])}" for split in found)
    (height, width), _ = sizes.most_common(1)[0]
    seen = f"{height}x{width}" + (f" and {len(sizes) - 1} other sizes" if len(sizes) > 1 else "")
    how = (
        f" (data.image_size=null: the images' aspect, longer side <= data.max_side={max_side}, "
        f"sides rounded to multiples of {SIZE_MULTIPLE})"
        if from_data
        else " (data.image_size)"
    )
    return (
        f"[data] {base}: {counts} image/mask pairs; training images {seen}, "
        f"resized to {size[0]}x{size[1]}{how}"
    )
