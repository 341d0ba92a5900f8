"""Precision: seglab's trainer in float32, in what ``trainer.precision=auto`` picks, and that
with XLA, at the CamVid experiment's shape; ``auto`` through a bare ``model.fit``; both
precisions with Keras' own batch normalization in place of seglab's fused one, and with four
batches per call of the compiled step (``trainer.steps_per_execution=4``).

The CamVid experiment's U-Net (128x160, depth 4, 16 base filters, batch 8, 11 classes, Adam
1e-3) trains on random images held in memory (speed does not depend on what the pixels show)
through seglab's trainer, the variants alternating in this one process over rounds (each round
a fresh model and session; its first epoch, which traces and compiles, dropped). Per epoch:
images per second (wall), images per CPU-second, and the cores kept busy (CPU-seconds per
wall-second). ``auto`` is bfloat16 on a CPU with AVX512-BF16 or AMX and on GPUs of compute
capability >= 8.0, float16 on older GPUs, float32 otherwise: on a GPU machine the same command
measures the GPU path. Goals: on CPU every epoch keeps >= 1.8 of 2 cores busy.
"""

from __future__ import annotations

import argparse
from functools import partial
from unittest import mock

import common
import keras
import tensorflow as tf

import seglab.training.model as model_module
from seglab.losses import CrossEntropy
from seglab.training.model import build_unet
from seglab.training.runtime import resolve_precision
from seglab.training.trainer import Trainer

SHAPE, CLASSES, BATCH = (128, 160, 3), 11, 8


def timed_fit(
    precision: str,
    xla: bool,
    data: object,
    epochs: int,
    keras_norm: bool = False,
    steps_per_execution: int = 1,
) -> common.EpochTimer:
    """``epochs`` epochs of a fresh U-Net through seglab's trainer in ``precision``; with
    ``keras_norm``, its batch normalization is ``keras.layers.BatchNormalization`` (element-wise
    ops, float32 casts under a mixed policy) instead of seglab's fused kernel;
    ``steps_per_execution`` batches per call of the compiled step."""
    trainer = Trainer(
        lambda: keras.optimizers.Adam(1e-3),
        epochs,
        BATCH,
        jit_compile=xla,
        precision=precision,
        steps_per_execution=steps_per_execution,
    )
    trainer.prepare()
    norm = keras.layers.BatchNormalization if keras_norm else model_module.BatchNormalization
    with trainer.building(), mock.patch.object(model_module, "BatchNormalization", norm):
        model = build_unet(SHAPE, CLASSES, depth=4, base_filters=16)
    timer = common.EpochTimer()
    trainer.fit(model, CrossEntropy(255), data, callbacks=[timer])
    return timer


def bare_fit(precision: str, data: object, epochs: int) -> common.EpochTimer:
    """The same U-Net on the same batches in ``precision`` through a bare ``model.fit``
    (Keras' own loss; none of seglab's metrics or callbacks): what seglab's loop adds."""
    trainer = Trainer(lambda: keras.optimizers.Adam(1e-3), epochs, BATCH, precision=precision)
    trainer.prepare()
    with trainer.building():
        model = build_unet(SHAPE, CLASSES, depth=4, base_filters=16)
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=255)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    train, val = trainer.streams(data)
    timer = common.EpochTimer()
    model.fit(train, validation_data=val, epochs=epochs, callbacks=[timer], verbose=0)
    return timer


VARIANTS = {
    "float32": partial(timed_fit, "float32", False),
    "auto": partial(timed_fit, "auto", False),
    "auto_xla": partial(timed_fit, "auto", True),
    "keras_auto": partial(bare_fit, "auto"),
    "float32_keras_norm": partial(timed_fit, "float32", False, keras_norm=True),
    "auto_keras_norm": partial(timed_fit, "auto", False, keras_norm=True),
    "float32_steps4": partial(timed_fit, "float32", False, steps_per_execution=4),
    "auto_steps4": partial(timed_fit, "auto", False, steps_per_execution=4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=96, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="per round, the first dropped")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = common.random_segmentation_data(args.images, 16, SHAPE, CLASSES)

    def measure(_: str, variant: partial[common.EpochTimer], __: int) -> list[dict[str, float]]:
        timer = variant(data, args.epochs)
        return [
            {"wall": wall, "cpu": cpu, "images_per_second": args.images / wall,
             "images_per_cpu_second": args.images / cpu, "cores_busy": cpu / wall}
            for wall, cpu in list(zip(timer.seconds, timer.cpu_seconds, strict=True))[1:]
        ]  # fmt: skip

    rounds = common.interleaved(VARIANTS, args.rounds, measure)
    epochs = {name: [e for found in rounds[name] for e in found] for name in rounds}
    medians = {
        p: {k: common.median([e[k] for e in epochs[p]]) for k in epochs[p][0]} for p in VARIANTS
    }
    rate = {p: m["images_per_second"] for p, m in medians.items()}
    speedup = rate["auto"] / rate["float32"]
    fused = {p: rate[p] / rate[f"{p}_keras_norm"] for p in ("float32", "auto")}
    steps4 = {p: rate[f"{p}_steps4"] / rate[p] for p in ("float32", "auto")}
    least_busy = {p: min(e["cores_busy"] for e in epochs[p]) for p in VARIANTS}
    auto = resolve_precision("auto")
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    common.write(
        "precision",
        {
            "settings": {"shape": list(SHAPE), "classes": CLASSES, "batch": BATCH, **vars(args)},
            "device": device,
            "auto": {"precision": auto.name, "reason": auto.reason},
            "epochs": epochs,
            "medians": medians,
            "auto_over_float32_images_per_second": speedup,
            "fused_over_keras_norm_images_per_second": fused,
            "steps4_over_steps1_images_per_second": steps4,
            "least_cores_busy": least_busy,
            "goals": {"least_cores_busy": ">= 1.8"},
        },
        [
            f"seglab's trainer on {device}, U-Net depth 4 base 16 at {SHAPE[0]}x{SHAPE[1]}, batch "
            f"{BATCH}, {args.images} random images per epoch, {args.rounds} interleaved rounds "
            f"(first epoch of each dropped); `auto` here: {auto.name} ({auto.reason}):",
            *(
                f"- {p}: {m['images_per_second']:.1f} images/s, {m['images_per_cpu_second']:.1f} "
                f"per CPU-second, {m['cores_busy']:.2f} cores busy (least {least_busy[p]:.2f}; "
                "goal >= 1.8)"
                for p, m in medians.items()
            ),
            f"- auto / float32: {speedup:.2f}x images/s (medians)",
            "- keras_auto: the same U-Net and batches in `auto` through a bare `model.fit` "
            "(Keras' loss, no seglab metrics or callbacks)",
            f"- seglab's fused batch norm / Keras' `BatchNormalization`: {fused['float32']:.2f}x "
            f"in float32, {fused['auto']:.2f}x in auto (images/s, medians)",
            f"- `trainer.steps_per_execution=4` / 1: {steps4['float32']:.2f}x in float32, "
            f"{steps4['auto']:.2f}x in auto (images/s, medians)",
        ],
    )


if __name__ == "__main__":
    main()
