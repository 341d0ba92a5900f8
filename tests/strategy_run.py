"""Run as a script (tests/test_strategy.py): trains one tiny U-Net per strategy on two logical
CPU devices and prints each run's history as JSON. The devices must be set up before TensorFlow
starts, hence a fresh process."""

import json
import sys
from functools import partial

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from seglab.data.datasets.shapes import shapes  # noqa: E402
from seglab.losses import CrossEntropy  # noqa: E402
from seglab.losses.base import scale_for_replicas  # noqa: E402
from seglab.training.model import build_unet  # noqa: E402
from seglab.training.runtime import seed_everything  # noqa: E402
from seglab.training.trainer import Trainer  # noqa: E402


def history(strategy: str, num_val: int) -> dict:
    keras.backend.clear_session()
    data = shapes(image_size=32, num_train=64, num_val=num_val)
    trainer = Trainer(
        partial(keras.optimizers.Adam, 1e-2),
        epochs=3,
        batch_size=4,
        shuffle=False,
        strategy=strategy,
    )
    seed_everything(trainer.seed)
    with trainer.scope():
        model = build_unet(
            data.image_shape, data.num_classes, depth=2, base_filters=8, batch_norm=False
        )
    records = trainer.fit(model, CrossEntropy(data.ignore_index), data)
    with trainer.scope():
        scaled = float(scale_for_replicas(tf.constant(6.0)))
    return {
        "replicas": trainer.distribution.num_replicas_in_sync,
        "six_scaled": scaled,
        "train_loss": [r.train_loss for r in records],
        "val_loss": [r.val_loss for r in records],
        "iou": [r.scores.iou.tolist() for r in records],
        "confusion_total": [int(r.confusion.sum()) for r in records],
    }


if __name__ == "__main__":
    num_val = int(sys.argv[1])
    print(json.dumps({s: history(s, num_val) for s in ("default", "mirrored")}))
