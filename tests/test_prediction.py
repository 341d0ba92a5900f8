"""The run's label predictor: the model's argmax, one trace for every batch size and weights."""

import numpy as np

from seglab.training.model import build_unet
from seglab.training.prediction import LabelPredictor, label_predictor


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 16, 16, 3)).astype(np.float32)


def test_labels_are_the_argmax_of_the_model_output_for_any_batch_size_with_one_trace():
    model = build_unet((16, 16, 3), 4, depth=1, base_filters=4)
    predict = LabelPredictor(model)
    for count in (3, 1, 5):
        x = images(count, seed=count)
        labels = predict(x).numpy()
        assert labels.shape == (count, 16, 16) and labels.dtype == np.int32
        np.testing.assert_array_equal(labels, np.asarray(model(x, training=False)).argmax(-1))
    assert predict._both.experimental_get_tracing_count() == 1


def test_other_weights_loaded_into_the_model_are_used_without_a_new_trace():
    model = build_unet((16, 16, 3), 4, depth=1, base_filters=4)
    predict = LabelPredictor(model)
    x = images(2)
    before = predict(x).numpy()
    # The last layer's bias alone decides: class 2 everywhere.
    *rest, kernel, _ = model.get_weights()
    model.set_weights([*rest, kernel * 0, np.array([0, 0, 1, 0], np.float32)])
    after = predict(x).numpy()
    assert (after == 2).all() and not (before == 2).all()
    assert predict._both.experimental_get_tracing_count() == 1


def test_a_predictor_is_passed_through_and_a_model_is_wrapped():
    model = build_unet((16, 16, 3), 2, depth=1, base_filters=2)
    predict = LabelPredictor(model)
    assert label_predictor(predict) is predict
    wrapped = label_predictor(model)
    assert isinstance(wrapped, LabelPredictor) and wrapped.model is model


def test_the_pass_shows_each_batch_of_truths_and_labels_to_an_observer_in_order():
    """What ``seglab evaluate`` gives the boundary scores: every image's truth beside its
    predicted labels, once, in file order (a predictor that returns class 2 everywhere)."""
    import tensorflow as tf

    from seglab.core.boundary import SurfaceScores
    from seglab.training.prediction import per_image_counts

    masks = np.zeros((5, 16, 16), np.int32)
    masks[:, 4:8, 4:8] = 2
    masks[4, 0, 0] = 255  # ignored
    stream = tf.data.Dataset.from_tensor_slices((images(5), masks))
    seen = []
    surface = SurfaceScores(3)

    def observe(truths, labels):
        seen.append((truths.copy(), labels.copy()))
        surface.add(truths, labels)

    def everywhere_two(batch):
        return tf.fill(tf.shape(batch)[:3], 2)

    per_image_counts(everywhere_two, stream, 3, 255, batch_size=2, observe=observe)
    assert [len(t) for t, _ in seen] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([t for t, _ in seen]), masks)
    assert all((labels == 2).all() for _, labels in seen)
    assert np.isnan(surface.boundary_iou()[1])  # class 1: in no truth and no prediction
    assert surface.boundary_iou()[0] == 0.0 and surface.hd95()[0] == float("inf")


def test_one_pass_gives_the_labels_and_the_calibration_of_a_separate_model_pass():
    """A run's end and ``seglab evaluate`` predict a split once: the predictor's labels are the
    argmax of the model's own output, and the calibration its kept probabilities feed equals
    one computed from that output, batch by batch, with each image predicted once."""
    import tensorflow as tf

    from seglab.core.calibration import Calibration
    from seglab.training.prediction import per_image_counts

    model = build_unet((16, 16, 3), 3, depth=1, base_filters=4)
    x = images(5, seed=3)
    masks = np.random.default_rng(4).integers(0, 3, (5, 16, 16)).astype(np.int32)
    masks[0, :2] = 255  # ignored pixels are in neither
    stream = tf.data.Dataset.from_tensor_slices((x, masks))
    predictor = LabelPredictor(model)
    one_pass = Calibration(3, 255)
    batches = []

    def observe(truths, labels):
        batches.append(len(truths))
        one_pass.add(predictor.probabilities, truths)

    counts = per_image_counts(predictor, stream, 3, 255, batch_size=2, observe=observe)
    output = np.asarray(model(x, training=False))
    expected = per_image_counts(lambda _: output.argmax(axis=-1), stream, 3, 255, batch_size=5)
    for part in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(counts, part), getattr(expected, part))
    assert batches == [2, 2, 1] and predictor._both.experimental_get_tracing_count() == 1
    separate = Calibration(3, 255)
    separate.add(output.astype(np.float64), masks)
    np.testing.assert_allclose(one_pass.ece(), separate.ece(), atol=1e-6)
    np.testing.assert_array_equal(one_pass.counts, separate.counts)
