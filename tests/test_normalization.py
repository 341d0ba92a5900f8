"""seglab's fused batch normalization against Keras' own layer (the reference) and the formula."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import skip_where_capped_below

from seglab.training.model import build_unet
from seglab.training.normalization import BatchNormalization

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(2.0, 3.0, (2, 5, 6, 16)).astype("float32")


def pair(**kwargs):
    """Keras' layer and seglab's, built alike with the same random weights and statistics."""
    reference, fused = keras.layers.BatchNormalization(**kwargs), BatchNormalization(**kwargs)
    for layer in (reference, fused):
        layer.build(IMAGES.shape)
    for ours, theirs in zip(fused.weights, reference.weights, strict=True):
        value = RNG.uniform(0.5, 1.5, theirs.shape).astype("float32")
        theirs.assign(value)
        ours.assign(value)
    return reference, fused


def run(layer, images, training):
    """The output, the moving statistics after the call and the gradients of a weighted sum."""
    x = tf.constant(images)
    weights = tf.constant(np.linspace(-1.0, 1.0, images.size).reshape(images.shape), "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = tf.cast(layer(x, training=training), "float32")
        total = tf.reduce_sum(outputs * weights)
    gradients = tape.gradient(total, [x, *layer.trainable_weights])
    moving = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    return outputs.numpy(), moving, [g.numpy() for g in gradients]


# (layer arguments, images, training, tolerance): float32 within rounding; bfloat16 and float16
# within their 8- and 11-bit mantissas (Keras normalizes in float32 and rounds once at the end,
# the fused kernel reads the rounded activation and rounds its output).
TEST_CASES = [
    ({}, IMAGES, True, 1e-5),
    ({}, IMAGES, False, 1e-5),
    ({"momentum": 0.5, "epsilon": 0.1}, IMAGES, True, 1e-5),
    ({"center": False, "scale": False}, IMAGES, True, 1e-5),
    ({"center": False}, IMAGES, False, 1e-5),
    ({}, IMAGES[:1, :1, :1], True, 1e-5),  # one value per channel: variance 0
    ({"dtype": "mixed_bfloat16"}, IMAGES, True, 4e-2),
    ({"dtype": "mixed_bfloat16"}, IMAGES, False, 4e-2),
    ({"dtype": "mixed_float16"}, IMAGES, True, 5e-3),
]


@pytest.mark.parametrize(("kwargs", "images", "training", "tolerance"), TEST_CASES)
def test_fused_batch_norm_computes_what_keras_batch_norm_computes(
    kwargs, images, training, tolerance
):
    if kwargs.get("dtype") == "mixed_bfloat16":
        skip_where_capped_below("bfloat16")
    reference, fused = pair(**kwargs)
    expected, ours = run(reference, images, training), run(fused, images, training)
    assert ours[0].dtype == expected[0].dtype
    np.testing.assert_allclose(ours[0], expected[0], rtol=tolerance, atol=tolerance)
    for theirs, mine in zip(expected[1] + expected[2], ours[1] + ours[2], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=tolerance, atol=tolerance * 10)


def test_fused_batch_norm_follows_the_formula_with_the_biased_variance():
    # 8 channels each holding 1 and 3: mean 2, biased variance 1 (the unbiased one would be 2)
    layer = BatchNormalization(momentum=0.9, epsilon=1e-3)
    images = np.repeat(np.array([1.0, 3.0], "float32").reshape(1, 1, 2, 1), 8, axis=-1)
    assert fused_ops(layer, images) == ["FusedBatchNormV3"]
    outputs = layer(images, training=True).numpy()
    np.testing.assert_allclose(outputs[0, 0, :, 0], [-0.9995003747, 0.9995003747], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [0.2] * 8, rtol=1e-6)  # 0.9*0 + 0.1*2
    np.testing.assert_allclose(layer.moving_variance.numpy(), [1.0] * 8, rtol=1e-6)  # 0.9 + 0.1


def test_a_frozen_fused_batch_norm_normalizes_with_its_moving_statistics():
    reference, fused = pair()
    reference.trainable = fused.trainable = False
    expected, ours = run(reference, IMAGES, True), run(fused, IMAGES, True)
    np.testing.assert_allclose(ours[0], expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ours[1], expected[1])  # not updated


def test_under_op_determinism_the_moving_statistics_normalize_with_keras_ops(monkeypatch):
    from tensorflow.python.framework import config as tf_config

    monkeypatch.setattr(tf_config, "is_op_determinism_enabled", lambda: True)
    layer = BatchNormalization()
    assert fused_ops(layer, IMAGES, training=False) == []
    assert fused_ops(layer, IMAGES, training=True) == ["FusedBatchNormV3"]


def fused_ops(layer, images, training=True, **call):
    """Names of the fused kernels in the graph of one call of ``layer``."""
    graph = tf.function(lambda x: layer(x, training=training, **call))
    ops = graph.get_concrete_function(tf.constant(images)).graph.get_operations()
    return [op.type for op in ops if op.type.startswith("FusedBatchNorm")]


@pytest.mark.parametrize(
    ("kwargs", "images", "call"),
    [
        ({"axis": 1}, IMAGES, {}),
        ({"renorm": True}, IMAGES, {}),
        ({"epsilon": 1e-6}, IMAGES, {}),  # below the fused kernel's 1.001e-5
        ({}, IMAGES[0], {}),  # 3-D
        ({}, IMAGES, {"mask": np.ones(IMAGES.shape[:-1], bool)}),
        ({}, IMAGES[..., :12], {}),  # float32: channels not a multiple of 8
        ({"dtype": "mixed_bfloat16"}, IMAGES[..., :8], {}),  # bfloat16: not of 16
        ({"dtype": "float64"}, IMAGES.astype("float64"), {}),
    ],
)
def test_what_the_fused_kernel_cannot_do_falls_back_to_keras(kwargs, images, call):
    reference, fused = keras.layers.BatchNormalization(**kwargs), BatchNormalization(**kwargs)
    assert fused_ops(fused, images, **call) == []
    np.testing.assert_array_equal(
        fused(images, training=True, **call), reference(images, training=True, **call)
    )


def test_the_unet_trains_and_predicts_through_the_fused_kernel():
    model = build_unet((16, 16, 3), 3, depth=2, base_filters=8)
    norms = [layer for layer in model.layers if isinstance(layer, BatchNormalization)]
    assert len(norms) == 10  # two per block: two levels down, the bottleneck, two up
    activations = RNG.random((2, 16, 16, 8), "float32")
    for training in (True, False):
        assert fused_ops(norms[0], activations, training) == ["FusedBatchNormV3"]
    bfloat16 = BatchNormalization(dtype="mixed_bfloat16")
    assert fused_ops(bfloat16, RNG.random((2, 16, 16, 32), "float32")) == ["FusedBatchNormV3"]


def test_weights_of_keras_batch_norm_and_the_fused_one_load_into_each_other(tmp_path):
    def build(norm):
        inputs = keras.Input((8, 8, 3))
        x = norm()(keras.layers.Conv2D(4, 3)(inputs))
        return keras.Model(inputs, norm()(x))

    images = RNG.random((2, 8, 8, 3), "float32")
    both = (keras.layers.BatchNormalization, BatchNormalization)
    for source, target in (both, both[::-1]):
        saved = build(source)
        for weight in saved.weights:
            weight.assign(RNG.uniform(0.5, 1.5, weight.shape))
        saved.save_weights(tmp_path / "model.weights.h5")
        loaded = build(target)
        loaded.load_weights(tmp_path / "model.weights.h5")
        np.testing.assert_allclose(loaded(images), saved(images), rtol=1e-5, atol=1e-6)
