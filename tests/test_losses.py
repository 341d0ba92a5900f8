import keras
import numpy as np
import pytest

from seglab.losses import CrossEntropy, pixel_cross_entropy

IGNORE = 255


def random_case(seed: int, classes: int = 4, shape=(2, 5, 6)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*shape, classes))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, classes, size=shape)
    return labels, probs


def numpy_ce(labels, probs, weights=None):
    """-log p[y] per pixel, mean over all pixels (Keras' sum_over_batch_size)."""
    p = np.clip(np.take_along_axis(probs, labels[..., None], -1)[..., 0], 1e-7, 1 - 1e-7)
    w = np.ones(labels.shape) if weights is None else weights
    return float((-np.log(p) * w).sum() / labels.size)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_equals_numpy_formula_and_keras(seed):
    labels, probs = random_case(seed)
    ours = float(CrossEntropy()(labels, probs))
    assert ours == pytest.approx(numpy_ce(labels, probs), rel=1e-5)
    keras_ce = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
    assert ours == pytest.approx(keras_ce, rel=1e-5)


def test_cross_entropy_with_pixel_sample_weight_equals_keras():
    labels, probs = random_case(3)
    weights = np.random.default_rng(3).uniform(0, 3, size=labels.shape).astype(np.float32)
    ours = float(CrossEntropy()(labels, probs, sample_weight=weights))
    keras_ce = float(
        keras.losses.SparseCategoricalCrossentropy()(labels, probs, sample_weight=weights)
    )
    assert ours == pytest.approx(keras_ce, rel=1e-5)
    assert ours == pytest.approx(numpy_ce(labels, probs, weights), rel=1e-5)


def test_ignored_pixels_contribute_nothing():
    labels, probs = random_case(4)
    ignored = labels.copy()
    ignored[:, :2] = IGNORE
    weights = (ignored != IGNORE).astype(np.float32)
    ours = float(CrossEntropy(ignore_index=IGNORE)(ignored, probs))
    assert ours == pytest.approx(numpy_ce(labels, probs, weights), rel=1e-5)
    per_pixel = np.asarray(pixel_cross_entropy(ignored, probs, IGNORE))
    assert (per_pixel[:, :2] == 0).all() and (per_pixel[:, 2:] > 0).all()


def test_all_ignored_batch_gives_zero_loss_and_zero_gradient():
    import tensorflow as tf

    labels = np.full((1, 3, 3), IGNORE)
    probs = tf.Variable(np.full((1, 3, 3, 2), 0.5, np.float32))
    with tf.GradientTape() as tape:
        loss = CrossEntropy(ignore_index=IGNORE)(labels, probs)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(tape.gradient(loss, probs).numpy(), 0.0)


def test_perfect_prediction_is_near_zero_and_mask_with_channel_axis_is_accepted():
    labels = np.array([[[0, 1], [1, 0]]])
    probs = np.eye(2, dtype=np.float32)[labels]
    assert float(CrossEntropy()(labels, probs)) == pytest.approx(-np.log(1 - 1e-7), abs=1e-6)
    assert float(CrossEntropy()(labels[..., None], probs)) == pytest.approx(
        float(CrossEntropy()(labels, probs))
    )


def test_cross_entropy_config_round_trip():
    loss = CrossEntropy(ignore_index=IGNORE, name="ce")
    clone = CrossEntropy.from_config(loss.get_config())
    assert clone.ignore_index == IGNORE and clone.name == "ce"
    assert keras.losses.deserialize(keras.losses.serialize(loss)).ignore_index == IGNORE
