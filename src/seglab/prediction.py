"""A model's per-pixel class labels, traced once for a whole run.

Calling a Keras model eagerly dispatches every layer's operations from Python (about 0.1 s per
call for the default U-Net on two CPU cores), and a ``tf.function`` built for one pass pays a
trace of the whole model (about 0.25 s) each time. A run predicts many times: the failure
gallery every epoch, then the per-image counts of the validation and test splits and the
overlays. :class:`LabelPredictor` traces the model once, for every batch size, and every one of
those calls reuses the trace; loading other weights into the model (the best checkpoint's)
needs no new trace, because the traced function reads the model's variables.

The model is called directly (not through ``model.predict``): a model built under a
``tf.distribute`` strategy then runs on one device, and no replica gets an empty batch.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class LabelPredictor:
    """``predictor(images)``: the argmax class of every pixel, ``int32 (N, H, W)``.

    Args:
        model: A segmentation model whose output's last axis holds one score per class.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        self._labels = tf.function(self._predict, input_signature=(spec,))

    def _predict(self, images: tf.Tensor) -> tf.Tensor:
        return tf.argmax(self.model(images, training=False), axis=-1, output_type=tf.int32)

    def __call__(self, images: tf.Tensor | np.ndarray) -> tf.Tensor:
        return self._labels(tf.convert_to_tensor(images, tf.float32))


def label_predictor(model: keras.Model | LabelPredictor) -> LabelPredictor:
    """``model`` itself if it is a :class:`LabelPredictor`, else one for it (for functions
    that take either: a run passes its one predictor, a notebook a model)."""
    return model if isinstance(model, LabelPredictor) else LabelPredictor(model)
