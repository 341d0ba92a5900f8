"""Parameters and training speed of each encoder of the shared U-Net at the CamVid size.

Each variant is seglab's trainer (batch 8, Adam, CE) on 64 training and 16 validation images of
random pixels at 128x160 with 11 classes, held in memory: ``none`` (the CamVid experiment's own
U-Net, depth 4, 16 base filters) and every ``model.encoder`` with random weights
(``encoder_weights=null``; pretrained weights change the values, not the cost). Each run trains
2 epochs and the first (tracing) is dropped; rounds interleave the variants, the order reversed
every round. Seconds per CamVid epoch are extrapolated from the seconds per image of the timed
epoch (367 training + 101 validation images at the measured rates).
"""

from __future__ import annotations

import argparse

import common
import keras

from seglab.losses import CrossEntropy
from seglab.training.encoders import ENCODERS
from seglab.training.model import build_unet
from seglab.training.trainer import Trainer

SHAPE, CLASSES, BATCH, TRAIN, VAL = (128, 160, 3), 11, 8, 64, 16
CAMVID_IMAGES = 367 + 101


def model(encoder: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    if encoder == "none":
        return build_unet(SHAPE, CLASSES, depth=4, base_filters=16)
    return build_unet(SHAPE, CLASSES, encoder=encoder)


def epoch_seconds(encoder: str, dataset) -> tuple[float, float, int]:
    """Wall and CPU seconds of the second epoch, and the model's parameter count."""
    built = model(encoder)
    timer = common.EpochTimer()
    trainer = Trainer(lambda: keras.optimizers.Adam(1e-3), epochs=2, batch_size=BATCH)
    trainer.fit(built, CrossEntropy(255), dataset, callbacks=[timer])
    return timer.seconds[1], timer.cpu_seconds[1], built.count_params()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    dataset = common.random_segmentation_data(TRAIN, VAL, SHAPE, CLASSES)
    names = ["none", *ENCODERS]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    params: dict[str, int] = {}
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            seconds, cpu_seconds, params[name] = epoch_seconds(name, dataset)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    per_image = {name: common.median(wall[name]) / (TRAIN + VAL) for name in names}
    camvid = {name: per_image[name] * CAMVID_IMAGES for name in names}
    lines = [
        f"{TRAIN} train + {VAL} val images at {SHAPE[0]}x{SHAPE[1]}, {CLASSES} classes, batch "
        f"{BATCH}, random weights; {args.rounds} interleaved rounds, the second epoch of each "
        "run timed.",
        "",
        "| model.encoder | parameters | epoch (s, wall) | CPU-s | CamVid epoch, extrapolated (s) "
        "| vs none |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        lines.append(
            f"| {name} | {params[name]:,} | {common.median(wall[name]):.2f} | "
            f"{common.median(cpu[name]):.2f} | {camvid[name]:.0f} | "
            f"{camvid[name] / camvid['none']:.2f}x |"
        )
    common.write(
        "encoders",
        {
            "shape": SHAPE,
            "classes": CLASSES,
            "batch": BATCH,
            "train_images": TRAIN,
            "val_images": VAL,
            "rounds": args.rounds,
            "parameters": params,
            "epoch_seconds": wall,
            "epoch_cpu_seconds": cpu,
            "camvid_epoch_seconds_extrapolated": camvid,
        },
        lines,
    )


if __name__ == "__main__":
    main()
