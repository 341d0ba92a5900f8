"""Boundary scores: what boundary IoU, HD95 and surface Dice add to the end of a CamVid run.

At the end of a run, seglab predicts the val split (101 images at CamVid's size) with the final
model and the test split (233) with the best checkpoint, counting each image's pixels; the
boundary scores ride on the same two passes (:class:`seglab.core.boundary.SurfaceScores`). This
times the two passes with and without them, interleaved over rounds, on the CamVid experiment's
U-Net (depth 4, 16 filters, 128x160, 11 classes) and synthetic masks whose classes are smooth
blobs (about 3,300 edge pixels per image); the labels scored are each mask shifted by (1, 2)
pixels, every outline a little off (an untrained model's labels would be one class; pixel
accuracy 0.875). The passes are not the whole end of a run
(figures, tables and the logged model come on top), so the share here is an upper bound of the
boundary scores' share of it. Goal: at most 10 %.
"""

from __future__ import annotations

import time

import common
import numpy as np
import tensorflow as tf
from scipy import ndimage

from seglab.core.boundary import SurfaceScores
from seglab.data.dataset import SegmentationData
from seglab.training.model import build_unet
from seglab.training.prediction import split_counts_per_image

SHAPE, CLASSES, VAL, TEST, ROUNDS = (128, 160), 11, 101, 233, 3


def blobs(count: int, seed: int) -> np.ndarray:
    """``count`` label maps of smooth random class regions (the argmax of blurred noise)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(count, *SHAPE, CLASSES)), (0, 12, 12, 0))
    return field.argmax(-1).astype(np.int32)


class Labels:
    """Runs the U-Net on every batch (the pass's real cost), then returns the masks shifted by
    (1, 2) pixels: the image's first channel encodes its mask."""

    def __init__(self, model: object) -> None:
        self.model = model

    def __call__(self, images: tf.Tensor) -> np.ndarray:
        np.asarray(self.model(images, training=False))
        masks = np.asarray(images)[..., 0].round().astype(np.int32)
        return np.roll(masks, (1, 2), axis=(1, 2))


def stream(masks: np.ndarray) -> tf.data.Dataset:
    """Images whose channels hold their masks."""
    images = np.repeat(masks[..., None], 3, axis=-1).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, masks))


def main() -> None:
    val, test = blobs(VAL, 0), blobs(TEST, 1)
    data = SegmentationData(
        train=stream(val[:8]),
        val=stream(val),
        test=stream(test),
        class_names=tuple(f"c{i}" for i in range(CLASSES)),
        ignore_index=255,
        image_shape=(*SHAPE, 3),
        num_train=8,
        num_val=VAL,
        num_test=TEST,
    )
    model = build_unet((*SHAPE, 3), CLASSES, depth=4, base_filters=16)
    predictor = Labels(model)
    seconds: dict[str, list[float]] = {"plain": [], "with_boundary": []}
    cpu: dict[str, list[float]] = {"plain": [], "with_boundary": []}
    scoring: list[float] = []
    for split in ("val", "test"):  # trace and warm up once
        split_counts_per_image(predictor, data, split, 8)
    for _ in range(ROUNDS):
        for variant in ("plain", "with_boundary"):  # interleaved
            start, start_cpu = time.perf_counter(), time.process_time()
            spent: list[float] = []
            for split in ("val", "test"):
                observe = None
                if variant == "with_boundary":
                    surface = SurfaceScores(CLASSES)
                    observe = common.clocked(surface.add, spent.append)
                split_counts_per_image(predictor, data, split, 8, observe)
            seconds[variant].append(time.perf_counter() - start)
            cpu[variant].append(time.process_time() - start_cpu)
            if variant == "with_boundary":
                scoring.append(sum(spent))
    plain, boundary = common.median(seconds["plain"]), common.median(seconds["with_boundary"])
    share = common.median([s / w for s, w in zip(scoring, seconds["with_boundary"], strict=True)])
    payload = {
        "images": {"val": VAL, "test": TEST, "shape": list(SHAPE), "classes": CLASSES},
        "rounds": ROUNDS,
        "wall_seconds": seconds,
        "cpu_seconds": cpu,
        "boundary_scoring_seconds": scoring,
        "boundary_share_of_the_passes": share,
        "passes_with_over_without": boundary / plain,
        "goal": {"boundary_share_of_the_passes": "<= 0.10"},
    }
    common.write(
        "boundary_scores",
        payload,
        [
            f"End-of-run passes over val ({VAL}) and test ({TEST}) images at {SHAPE[0]}x"
            f"{SHAPE[1]}, {CLASSES} classes, U-Net depth 4 base 16, {ROUNDS} interleaved rounds:",
            f"- the two passes: {plain:.1f} s without the boundary scores, {boundary:.1f} s with "
            f"them (wall, medians; CPU {common.median(cpu['plain']):.1f} s and "
            f"{common.median(cpu['with_boundary']):.1f} s)",
            f"- boundary IoU, HD95 and surface Dice: {common.median(scoring):.2f} s, "
            f"{share:.1%} of the passes (goal <= 10 %; an upper bound of their share of the "
            "end of a run)",
        ],
    )


if __name__ == "__main__":
    main()
