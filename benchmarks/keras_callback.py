"""What SeglabCallback costs an epoch at the CamVid experiment's size, variants interleaved.

The CamVid experiment's U-Net (128x160 input, depth 4, 16 base filters, 11 classes, batch 8)
on 367 training and 101 validation images of random pixels and labels held in memory, Adam:
  trainer    seglab's shared trainer (its own validation pass, streaming metrics)
  keras      plain model.fit(validation_data=...): Keras' validation loss only
  callback   plain model.fit + SeglabCallback(validation data), fit given none: the callback's
             pass gives the loss, per-class IoU, loss shares and verdict, logged to MLflow
The callback's own seconds per epoch (its whole on_epoch_end) are timed inside it, split into
its prediction of the validation images (the forward pass any validation runs: Keras' in the
keras variant, the trainer's in its own) and the rest (NumPy scores, MLflow, the epoch line).
Ratios of medians; the first epoch of every run is dropped (tracing).
Goal: what the callback adds to a validated epoch <= 5 % of an epoch of the shared trainer.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import common
import keras

from seglab.data.pipeline import batches
from seglab.keras import SeglabCallback
from seglab.losses import CrossEntropy
from seglab.training.model import build_unet
from seglab.training.trainer import Trainer

SHAPE, CLASSES, BATCH, TRAIN, VAL = (128, 160, 3), 11, 8, 367, 101
IGNORE = 255


class TimedCallback(SeglabCallback):
    """SeglabCallback whose ``on_epoch_end`` is clocked (wall and this process's CPU)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.predicting: list[float] = []
        self._predicting = 0.0  # seconds in predict_on_batch since the counter was reset

    def set_model(self, model) -> None:
        super().set_model(model)
        model.predict_on_batch = common.clocked(model.predict_on_batch, self._add_predicting)

    def _add_predicting(self, seconds: float) -> None:
        self._predicting += seconds

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._predicting = 0.0
        start, cpu_start = time.perf_counter(), time.process_time()
        super().on_epoch_end(epoch, logs)
        self.wall.append(time.perf_counter() - start)
        self.cpu.append(time.process_time() - cpu_start)
        self.predicting.append(self._predicting)


def new_model():
    keras.utils.set_random_seed(0)
    return build_unet(SHAPE, CLASSES, depth=4, base_filters=16)


def trainer(data, epochs: int, uri: str) -> common.EpochTimer:
    timer = common.EpochTimer()
    Trainer(lambda: keras.optimizers.Adam(1e-3), epochs=epochs, batch_size=BATCH).fit(
        new_model(), CrossEntropy(IGNORE), data, callbacks=[timer]
    )
    return timer


def plain_fit(data, epochs: int, uri: str, with_callback: bool) -> common.EpochTimer:
    model = new_model()
    model.compile(keras.optimizers.Adam(1e-3), CrossEntropy(IGNORE))
    train = batches(data.train, BATCH, shuffle_seed=0)
    val = batches(data.val, BATCH)
    timer = common.EpochTimer()
    if with_callback:
        callback = TimedCallback(
            val, data.class_names, IGNORE, tracking_uri=uri, experiment_name="bench"
        )
        model.fit(train, epochs=epochs, callbacks=[callback, timer], verbose=0)
        timer.callback = callback
    else:
        model.fit(train, validation_data=val, epochs=epochs, callbacks=[timer], verbose=0)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="per run, the first is dropped")
    args = parser.parse_args()
    data = common.random_segmentation_data(TRAIN, VAL, SHAPE, CLASSES, IGNORE)
    wall: dict[str, list[float]] = {"trainer": [], "keras": [], "callback": []}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    callback_wall: list[float] = []
    callback_cpu: list[float] = []
    predicting: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        variants = {
            "trainer": lambda: trainer(data, args.epochs, uri),
            "keras": lambda: plain_fit(data, args.epochs, uri, with_callback=False),
            "callback": lambda: plain_fit(data, args.epochs, uri, with_callback=True),
        }
        for round_ in range(args.repeats):
            names = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
            for name in names:  # interleaved, the order reversed every round
                timer = variants[name]()
                wall[name] += timer.seconds[1:]
                cpu[name] += timer.cpu_seconds[1:]
                if name == "callback":
                    callback_wall += timer.callback.wall[1:]
                    callback_cpu += timer.callback.cpu[1:]
                    predicting += timer.callback.predicting[1:]
    epoch = {name: common.median(values) for name, values in wall.items()}
    epoch_cpu = {name: common.median(values) for name, values in cpu.items()}
    own, own_cpu = common.median(callback_wall), common.median(callback_cpu)
    added = common.median([w - p for w, p in zip(callback_wall, predicting, strict=True)])
    ratios = {
        "callback_beyond_prediction_share_of_trainer_epoch": added / epoch["trainer"],
        "callback_seconds_share_of_trainer_epoch": own / epoch["trainer"],
        "callback_cpu_share_of_trainer_epoch_cpu": own_cpu / epoch_cpu["trainer"],
        "fit_with_callback_vs_trainer_epoch": epoch["callback"] / epoch["trainer"],
        "fit_with_callback_vs_keras_validation_epoch": epoch["callback"] / epoch["keras"],
    }
    timed = args.repeats * (args.epochs - 1)
    common.write(
        "keras_callback",
        {
            "shape": SHAPE,
            "classes": CLASSES,
            "batch": BATCH,
            "train_images": TRAIN,
            "val_images": VAL,
            "repeats": args.repeats,
            "epochs": args.epochs,
            "epoch_seconds": wall,
            "epoch_cpu_seconds": cpu,
            "callback_seconds": callback_wall,
            "callback_cpu_seconds": callback_cpu,
            "callback_prediction_seconds": predicting,
            "ratios": ratios,
        },
        [
            f"CamVid size ({TRAIN} train + {VAL} val images, {SHAPE[0]}x{SHAPE[1]}, {CLASSES} "
            f"classes, U-Net depth 4 base 16, batch {BATCH}), {timed} timed epochs per variant, "
            "interleaved.",
            "Median epoch wall (CPU seconds, all threads): "
            + ", ".join(f"{k} {epoch[k]:.2f} s ({epoch_cpu[k]:.2f})" for k in epoch),
            f"- SeglabCallback's own seconds per epoch: {own:.2f} s wall, {own_cpu:.2f} CPU-s, "
            f"{ratios['callback_seconds_share_of_trainer_epoch']:.1%} of a trainer epoch "
            f"({ratios['callback_cpu_share_of_trainer_epoch_cpu']:.1%} of its CPU time); of "
            f"these, {added:.2f} s beyond predicting the validation images (which any "
            "validation does): "
            f"{ratios['callback_beyond_prediction_share_of_trainer_epoch']:.1%} of a trainer "
            "epoch (goal <= 5 %)",
            "- model.fit + SeglabCallback vs fit with Keras' own validation: "
            f"{ratios['fit_with_callback_vs_keras_validation_epoch']:.3f}x the epoch time; "
            f"vs the shared trainer: {ratios['fit_with_callback_vs_trainer_epoch']:.3f}x",
        ],
    )


if __name__ == "__main__":
    main()
