"""Where and how a run computes: seeds, numeric precision and the ``tf.distribute`` strategy."""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism: no API

from seglab.core.checks import check_choice


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and TensorFlow; ``deterministic`` also makes TF ops deterministic.

    With both, the same seed on the same machine and TensorFlow build gives the same per-class
    IoU history. Without op determinism, parallel reductions may differ in the last bits.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # the jobs of a multirun share this process: one job's setting must not leak on
        tf_config.disable_op_determinism()


def set_precision(mixed: bool) -> None:
    """``mixed_float16`` (GPU speed-up) or ``float32`` for the models built after this call.

    Set on every run, so one mixed-precision job of a multirun does not leak into the next.
    Under ``mixed_float16`` Keras wraps the optimizer in a ``LossScaleOptimizer`` at compile;
    the U-Net's output activation and seglab's losses compute in float32.
    """
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


STRATEGIES = ("default", "mirrored")
MULTI_WORKER_ERROR = (
    "trainer.strategy='multi_worker' is not available: Keras 3's model.fit fails under "
    "tf.distribute.MultiWorkerMirroredStrategy ('Attempt to convert a value (PerReplica...)', "
    "keras-team/keras#20585, tensorflow/tensorflow#72388; reproduced here with two workers, "
    "see tests/test_strategy.py). Use trainer.strategy=mirrored for several devices of one "
    "host, and a Hydra launcher (hydra/launcher=slurm) to spread a sweep's jobs over hosts."
)


def check_strategy(name: str) -> None:
    """Raises naming ``trainer.strategy`` unless ``name`` is one of :data:`STRATEGIES`."""
    if name == "multi_worker":
        raise ValueError(MULTI_WORKER_ERROR)
    check_choice("trainer.strategy", name, STRATEGIES)


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (one of :data:`STRATEGIES`).

    ``mirrored`` replicates the model on every GPU, or on every logical CPU device when there is
    no GPU (how the tests run it on CPU).
    """
    check_strategy(name)
    if name == "default":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])
