"""The input side: is the tf.data pipeline ever the bottleneck, and is the class count cheap?

1. Pipeline-only images/s (iterating the training batches, no model) for the in-memory shapes
   set and for the same images as PNG files read by ``data=folder`` (decode + resize), each
   with ``augment=none`` and ``augment=medium``, against the U-Net's training images/s on the
   same 64 px batches: the pipeline must be much faster than the model.
2. The class-count pass that feeds the weight schemes: images/s when it counts, and the time of
   a second call with the same data config (read from ``paths.cache_dir``, not recounted).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common
import keras
import numpy as np
import tensorflow as tf

from seglab.data.augment import Augmenter
from seglab.data.counting import class_counts, split_counts
from seglab.data.datasets.folder import folder
from seglab.data.datasets.shapes import shapes
from seglab.data.pipeline import batches
from seglab.training.model import build_unet

BATCH = 16


def write_folder(data, root: Path) -> None:
    for name, split in (("train", data.train), ("val", data.val)):
        for i, (image, mask) in enumerate(split.as_numpy_iterator()):
            stem = f"{name}{i:04d}.png"
            for kind, array in (("images", (image * 255).round()), ("masks", mask[..., None])):
                path = root / name / kind / stem
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tf.io.encode_png(array.astype(np.uint8)).numpy())


def pipeline_rate(dataset, images: int, augment, repeats: int) -> float:
    stream = batches(dataset, BATCH, shuffle_seed=0, augment=augment)
    return images / common.iterate_seconds(stream, repeats)[0]


def model_rate(data, repeats: int, seconds: float) -> float:
    keras.utils.set_random_seed(0)
    model = build_unet(data.image_shape, data.num_classes, depth=3, base_filters=8)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy())
    return common.train_rate(model, next(iter(batches(data.train, BATCH))), repeats, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per timed model epoch")
    args = parser.parse_args()
    data = shapes()
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(data, Path(tmp) / "pngs")
        pngs = folder(str(Path(tmp) / "pngs"), list(data.class_names), image_size=64)
        pipeline = {}
        for source, split in (("shapes", data), ("folder_png", pngs)):
            for level, augment in (("none", None), ("medium", Augmenter(0.5))):
                key = f"{source}/augment={level}"
                pipeline[key] = pipeline_rate(split.train, split.num_train, augment, args.repeats)
                print(key, pipeline[key], flush=True)
        model = model_rate(data, args.repeats, args.seconds)
        counting = {}
        for source, split in (("shapes", data), ("folder_png", pngs)):
            start = time.perf_counter()
            class_counts(split.train, split.num_classes, split.ignore_index)
            counting[f"{source}/count_images_per_second"] = split.num_train / (
                time.perf_counter() - start
            )
        cache = Path(tmp) / "cache"
        key = {"root": "pngs", "image_size": 64}
        calls = []
        for _ in range(3):
            start = time.perf_counter()
            split_counts(pngs, "train", key, cache)
            calls.append(time.perf_counter() - start)
        counting["folder_png/cached_calls_seconds"] = calls
        counting["cache_files_after_3_calls"] = len(list(cache.iterdir()))
    slowest = min(pipeline.values())
    common.write(
        "input_pipeline",
        {
            "batch_size": BATCH,
            "pipeline_images_per_second": pipeline,
            "model_train_images_per_second": model,
            "slowest_pipeline_vs_model": slowest / model,
            "class_counts": counting,
        },
        [
            "Training images/s, 800 images of 64 px, batch 16 (pipeline: iterate batches only):",
            *(f"- pipeline {k}: {v:.0f}" for k, v in pipeline.items()),
            f"- U-Net training (depth 3, base 8, one in-memory batch repeated): {model:.0f}",
            f"- slowest pipeline / model: {slowest / model:.1f}x (must stay well above 1)",
            "Class-count pass (feeds the weight schemes): "
            f"shapes {counting['shapes/count_images_per_second']:.0f} img/s, PNG folder "
            f"{counting['folder_png/count_images_per_second']:.0f} img/s; three calls with one "
            "data config: "
            + ", ".join(f"{s:.3f} s" for s in calls)
            + f" ({counting['cache_files_after_3_calls']} cache file: counted once)",
        ],
    )


if __name__ == "__main__":
    main()
