"""Batch normalization on TensorFlow's fused kernel: the layer seglab's U-Nets train with."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # is_op_determinism_enabled

# FusedBatchNormV3 refuses a smaller epsilon (cuDNN's limit); Keras' default is 1e-3.
FUSED_MIN_EPSILON = 1.001e-5
# The fused kernel is fast on whole vector blocks of channels only: measured on an AVX-512 CPU
# (one training step of the layer, 64x64 batches of 16), it ran 1.5-2.5x faster than Keras' ops
# in float32 at 8, 16, ..., 64 channels but 2-3.5x slower at 3, 5, 6, 7 and 10, and in bfloat16
# faster at 16, 32, ..., 256 but 2.5-5x slower at 8, 12, 24 and 40.
FUSED_CHANNEL_MULTIPLE = {"float32": 8, "bfloat16": 16, "float16": 16}


@keras.saving.register_keras_serializable(package="seglab")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by one ``FusedBatchNormV3`` op.

    Keras 3 normalizes with a dozen separate element-wise ops (the moments, then
    ``tf.nn.batch_normalization``) and, under a ``mixed_bfloat16`` policy, casts every
    activation to float32 and back around them; TensorFlow's fused kernel (oneDNN's on x86
    CPUs) reads the activation once in its own dtype and keeps the statistics in float32. On
    the CamVid experiment's U-Net that made seglab's trainer 1.14-1.15x faster in float32 and
    1.33-1.56x in bfloat16 (two runs of ``benchmarks/precision.py``, 2026-12-07); PyTorch's
    ``BatchNorm2d`` is fused too.

    The arithmetic is Keras' (Ioffe & Szegedy 2015):
    ``y = gamma * (x - mean) / sqrt(variance + epsilon) + beta`` with the batch's mean and
    biased variance when training, and
    ``moving = momentum * moving + (1 - momentum) * batch`` for both statistics (the fused
    kernel returns the unbiased variance, which is scaled back by ``(n - 1) / n``). The class
    name, variables and ``get_config`` are Keras' (weights files address layers by class
    name), so checkpoints of either layer load into the other. What the fused kernel cannot
    do — an axis other than the last of a 4-D input, a mask, batch renormalization,
    synchronized statistics, ``epsilon < 1.001e-5``, float64 — channel counts on which it is
    slower (not a multiple of 8 in float32, of 16 in bfloat16 and float16), and normalizing
    with the moving statistics under op determinism fall back to Keras' own computation.
    """

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        batch_statistics = bool(training and self.trainable)
        if not self._fused(inputs, mask, batch_statistics):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones([channels], "float32")
        offset = self.beta if self.center else tf.zeros([channels], "float32")
        if not batch_statistics:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=self.epsilon, is_training=False,
            )  # fmt: skip
            return outputs
        empty = tf.constant([], "float32")
        outputs, mean, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=empty, variance=empty,
            epsilon=self.epsilon, is_training=True,
        )  # fmt: skip
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
        variance = unbiased * (count - 1.0) / tf.maximum(count, 1.0)
        keep = self.momentum
        self.moving_mean.assign(self.moving_mean * keep + mean * (1.0 - keep))
        self.moving_variance.assign(self.moving_variance * keep + variance * (1.0 - keep))
        return outputs

    def _fused(self, inputs: Any, mask: Any, batch_statistics: bool) -> bool:
        """Whether the fused kernel computes what Keras' layer would, and faster (and, with op
        determinism on, deterministically: TensorFlow's GPU gradient of the kernel normalizing
        with the moving statistics has no deterministic version and raises)."""
        multiple = FUSED_CHANNEL_MULTIPLE.get(keras.backend.standardize_dtype(inputs.dtype))
        channels = inputs.shape[-1]
        return (
            keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.epsilon >= FUSED_MIN_EPSILON
            and multiple is not None
            and channels is not None
            and channels % multiple == 0
            and self.moving_mean.dtype == "float32"
            and (batch_statistics or not tf_config.is_op_determinism_enabled())
        )
