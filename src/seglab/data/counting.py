"""The class-count pass over a split: reads every mask once, validates its labels and names any
file that cannot be read, and caches the counts per data config."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from seglab.core.class_weights import ClassCounts
from seglab.core.scores import class_histograms, label_validity
from seglab.data.dataset import SegmentationData
from seglab.data.decode import data_file_reason, tf_reason, undecodable_file
from seglab.data.errors import DataFileError


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
        valid, bad = label_validity(masks, num_classes, ignore_index)
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


def readable_batches(
    dataset: tf.data.Dataset,
    batch_size: int,
    files: Sequence[Sequence[str]] | None = None,
    select: Callable[..., Any] | None = None,
) -> Iterator[Any]:
    """The unbatched ``dataset`` in batches of ``batch_size`` (of ``select(*sample)`` when
    given). A batch that fails to load raises ``ValueError`` naming the first sample that fails
    and, when ``files`` gives each sample's files, the one that cannot be decoded (else the
    sample's mask). A file seglab's decoder refuses raises its own one sentence."""
    batches = iter((dataset if select is None else dataset.map(select)).batch(batch_size))
    start = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            if reason := data_file_reason(error.message):  # it names the file already
                raise DataFileError(reason) from None
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


def count_splits(
    data: SegmentationData,
    data_config: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, ClassCounts]:
    """:func:`split_counts` of every split of ``data``: each split's labels are validated before
    any training. Raises naming the split when one has no labelled pixel at all (every pixel
    ``ignore_index``): a run would score nothing and look perfect."""
    counts = {split: split_counts(data, split, data_config, cache_dir) for split in data.splits}
    for split, split_count in counts.items():
        if not split_count.pixels.sum():
            raise ValueError(
                f"the {split} split has no labelled pixel: all {split_count.num_images} masks "
                f"hold only ignore_index={data.ignore_index}; check data.ignore_index and the "
                "masks (1-bit or palette masks, say, read as something else)"
            )
    return counts


def data_fingerprint(data: SegmentationData, counts: Mapping[str, ClassCounts]) -> dict[str, str]:
    """Per split, what identifies its data: the image count and a digest of its files (names,
    sizes, modification times) or, when its samples are no files, of its class counts. A run
    resumes only on the data it started on."""
    fingerprint = {}
    for split, split_count in counts.items():
        files = data.sample_files(split)
        if files:
            digest = files_fingerprint([path for sample in files for path in sample])
        else:
            digest = hashlib.sha256(
                json.dumps([split_count.pixels.tolist(), split_count.images.tolist()]).encode()
            ).hexdigest()
        fingerprint[split] = (
            f"{split_count.num_images} images, {'files' if files else 'labels'} {digest[:12]}"
        )
    return fingerprint


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
