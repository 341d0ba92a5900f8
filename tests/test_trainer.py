import keras
import numpy as np
import pytest

from seglab.data import batches, shapes
from seglab.losses import CrossEntropy
from seglab.metrics import scores_from_confusion
from seglab.model import build_unet
from seglab.trainer import Trainer, predict_samples


@pytest.fixture(scope="module")
def fitted():
    keras.utils.set_random_seed(0)
    data = shapes(image_size=32, num_train=12, num_val=10)
    model = build_unet(data.image_shape, data.num_classes, depth=2, base_filters=4)
    trainer = Trainer(lambda: keras.optimizers.Adam(3e-3), epochs=2, batch_size=4)
    seen = []
    records = trainer.fit(model, CrossEntropy(ignore_index=255), data, on_epoch=seen.append)
    return data, model, records, seen


def test_one_record_per_epoch_is_passed_to_on_epoch(fitted):
    _, _, records, seen = fitted
    assert [r.epoch for r in records] == [1, 2]
    assert seen == records


def test_epoch_end_confusion_matrix_is_exactly_the_validation_set(fitted):
    """Guards the Keras ordering the recorder relies on: validation runs (metrics reset)
    right before on_epoch_end, so the matrix holds every val pixel and nothing else."""
    data, model, records, _ = fitted
    images, masks = (np.stack(x) for x in zip(*data.val.as_numpy_iterator(), strict=True))
    predicted = model.predict(images, verbose=0).argmax(-1)
    expected = np.zeros((5, 5), np.int64)
    np.add.at(expected, (masks.ravel(), predicted.ravel()), 1)
    np.testing.assert_array_equal(records[-1].confusion, expected)
    assert records[-1].confusion.sum() == data.num_val * 32 * 32
    np.testing.assert_array_equal(records[-1].scores.iou, scores_from_confusion(expected).iou)


def test_recorded_val_loss_equals_evaluate(fitted):
    data, model, records, _ = fitted
    assert records[-1].val_loss == pytest.approx(
        model.evaluate(batches(data.val, 4), verbose=0, return_dict=True)["loss"], rel=1e-5
    )


def test_predict_samples_puts_images_with_the_preferred_class_first(fitted):
    data, model, _, _ = fitted
    images, truths, predictions = predict_samples(model, data, count=3, prefer_class=4)
    assert images.shape == (3, 32, 32, 3) and predictions.shape == truths.shape == (3, 32, 32)
    has_rare = [(t == 4).any() for t in truths]
    assert has_rare == sorted(has_rare, reverse=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"epochs": 0}, "trainer.epochs must be >= 1"), ({"batch_size": 0}, "trainer.batch_size")],
)
def test_trainer_rejects_bad_settings_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(lambda: keras.optimizers.Adam(), **kwargs)
