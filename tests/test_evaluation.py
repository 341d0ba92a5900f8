"""Per-image evidence: counts per image and class, what they sum to, and what derives from them."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from seglab.core.per_image import PerImageCounts, count_batch, split_metrics
from seglab.core.scores import scores_from_confusion
from seglab.training.keras_metrics import ConfusionMatrix
from seglab.training.prediction import per_image_counts

C = 3
IGNORE = 255
# 0/0 is handled on purpose (NaN for an undefined score): never through a numpy warning.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def label_reader(num_classes: int = C) -> keras.Model:
    """A model that predicts the label written into the image's red channel (label / 10)."""
    inputs = keras.Input((None, None, 3))
    labels = keras.ops.cast(keras.ops.round(inputs[..., 0] * 10), "int32")
    outputs = keras.ops.one_hot(labels, num_classes)
    return keras.Model(inputs, outputs)


def stream(truths: np.ndarray, predictions: np.ndarray) -> tf.data.Dataset:
    images = np.repeat((predictions / 10.0)[..., None], 3, axis=-1).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((images, truths.astype(np.int32)))


# Three 2x3 images. Image 0: class 2 present and found; image 1: class 2 present, missed
# entirely; image 2: no class 2, one pixel ignored.
TRUTHS = np.array(
    [
        [[0, 0, 1], [2, 2, 1]],
        [[0, 1, 1], [2, 0, 0]],
        [[0, 0, 0], [1, 1, IGNORE]],
    ]
)
PREDICTIONS = np.array(
    [
        [[0, 1, 1], [2, 0, 1]],
        [[0, 1, 0], [0, 0, 2]],
        [[0, 0, 0], [1, 2, 2]],
    ]
)
EXPECTED = {  # per image, per class (0, 1, 2), counted by hand
    "tp": [[1, 2, 1], [2, 1, 0], [3, 1, 0]],
    "fp": [[1, 1, 0], [2, 0, 1], [0, 0, 1]],
    "fn": [[1, 0, 1], [1, 1, 1], [0, 1, 0]],
}


@pytest.fixture(scope="module")
def counts() -> PerImageCounts:
    return per_image_counts(
        label_reader(), stream(TRUTHS, PREDICTIONS), C, IGNORE, batch_size=2, split="val"
    )


def test_counts_per_image_and_class_equal_a_hand_count(counts):
    for key, expected in EXPECTED.items():
        np.testing.assert_array_equal(getattr(counts, key), expected, err_msg=key)
    assert counts.names == ("val[0]", "val[1]", "val[2]")


def test_counts_summed_over_images_equal_the_streamed_confusion_matrix(counts):
    metric = ConfusionMatrix(C, IGNORE)
    for images, masks in stream(TRUTHS, PREDICTIONS).batch(2):
        metric.update_state(masks, label_reader()(images))
    cm = metric.matrix()
    np.testing.assert_array_equal(counts.tp.sum(0), np.diag(cm))
    np.testing.assert_array_equal(counts.fp.sum(0), cm.sum(0) - np.diag(cm))
    np.testing.assert_array_equal(counts.fn.sum(0), cm.sum(1) - np.diag(cm))
    expected = scores_from_confusion(cm)
    got = counts.scores()
    for field in ("iou", "dice", "recall", "support"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    assert (got.miou, got.pixel_acc, got.class_acc) == (
        expected.miou,
        expected.pixel_acc,
        expected.class_acc,
    )


def test_missed_is_the_share_of_images_with_the_class_and_no_true_positive(counts):
    # class 0: in 3 images, found in all; 1: in 3, found in all; 2: in images 0 and 1, missed in 1
    np.testing.assert_array_equal(counts.missed(), [0.0, 0.0, 0.5])


def test_missed_is_nan_for_a_class_no_image_contains():
    counts = PerImageCounts(
        ("a", "b"), *(np.array([[3, 0], [1, 0]]),) * 1, *(np.zeros((2, 2), int),) * 2
    )
    assert counts.missed()[0] == 0.0 and np.isnan(counts.missed()[1])


def test_per_image_iou_is_nan_where_the_class_is_neither_true_nor_predicted(counts):
    iou = counts.iou()
    assert iou[0, 2] == pytest.approx(1 / 2)  # tp 1, fn 1
    assert iou[1, 2] == 0.0  # true and predicted, never together
    assert iou[2, 2] == 0.0  # predicted only
    clean = PerImageCounts(("x",), np.array([[2, 0]]), np.array([[0, 0]]), np.array([[0, 0]]))
    assert np.isnan(clean.iou()[0, 1])


def test_tidy_frame_round_trips(counts):
    frame = counts.frame(["bg", "a", "b"], "val")
    assert list(frame.columns) == ["split", "image", "class", "tp", "fp", "fn", "present"]
    assert len(frame) == 3 * C
    row = frame[(frame.image == "val[1]") & (frame["class"] == "b")].iloc[0]
    assert (row.tp, row.fp, row.fn, row.present) == (0, 1, 1, True)
    back = PerImageCounts.from_frame(frame.sample(frac=1, random_state=0), ["bg", "a", "b"])
    assert sorted(back.names) == sorted(counts.names)
    order = [back.names.index(n) for n in counts.names]
    for key in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(back, key)[order], getattr(counts, key))


def test_split_metrics_are_keyed_by_prefix_and_class(counts):
    metrics = split_metrics(counts, ["bg", "a", "b"], "test")
    assert metrics["test/missed/b"] == 0.5
    assert metrics["test/iou/a"] == pytest.approx(4 / 7)  # tp 4, fp 1, fn 2 over the images
    assert metrics["test/recall/a"] == pytest.approx(4 / 6)
    assert metrics["test/pixel_acc"] == pytest.approx(11 / 17)  # 17 labelled pixels
    assert set(metrics) == {
        "test/miou",
        "test/min_iou",
        "test/pixel_acc",
        "test/class_acc",
        *(f"test/{k}/{n}" for k in ("iou", "recall", "missed") for n in ("bg", "a", "b")),
    }


def test_a_label_beyond_the_classes_is_named_by_its_image():
    truths = TRUTHS.copy()
    truths[2, 0, 0] = 7
    with pytest.raises(ValueError, match=r"mask b.png has labels outside 0..2"):
        per_image_counts(
            label_reader(),
            stream(truths, PREDICTIONS),
            C,
            IGNORE,
            2,
            files=[("a.jpg", "a"), ("c.jpg", "c"), ("b.jpg", "b.png")],
        )


def test_an_empty_split_is_refused_by_name():
    empty = stream(TRUTHS, PREDICTIONS).take(0)
    with pytest.raises(ValueError, match="the test split is empty"):
        per_image_counts(label_reader(), empty, C, IGNORE, split="test")


def test_memory_holds_counts_not_predictions(counts):
    assert all(isinstance(getattr(counts, k), np.ndarray) for k in ("tp", "fp", "fn"))
    assert counts.tp.shape == (3, C)
    assert isinstance(counts.frame(["bg", "a", "b"], "val"), pd.DataFrame)


def test_missed_and_iou_on_more_images_than_classes():
    # 4 images x 2 classes (not square, so an axis mix-up shows): class 1 is in images 0-2,
    # found in image 0 only; class 0 is in every image and always found.
    counts = PerImageCounts(
        ("a", "b", "c", "d"),
        np.array([[5, 3], [6, 0], [7, 0], [8, 0]]),
        np.array([[0, 0], [0, 1], [2, 0], [0, 0]]),
        np.array([[1, 1], [2, 4], [0, 2], [0, 0]]),
    )
    np.testing.assert_allclose(counts.missed(), [0.0, 2 / 3])
    iou = counts.iou()
    assert iou.shape == (4, 2)
    np.testing.assert_allclose(iou[:, 0], [5 / 6, 6 / 8, 7 / 9, 1.0])
    np.testing.assert_allclose(iou[:3, 1], [3 / 4, 0.0, 0.0])
    assert np.isnan(iou[3, 1])  # neither true nor predicted in image d


def test_a_bad_label_past_the_first_batch_is_named_by_its_own_index():
    truths = np.concatenate([TRUTHS, TRUTHS])
    truths[3, 0, 0] = 9  # the second image of the second batch of 2
    predictions = np.concatenate([PREDICTIONS, PREDICTIONS])
    with pytest.raises(ValueError, match=r"mask test\[3\] has labels outside 0..2"):
        per_image_counts(label_reader(), stream(truths, predictions), C, IGNORE, 2, split="test")
    counts = per_image_counts(
        label_reader(), stream(TRUTHS, PREDICTIONS), C, IGNORE, 2, split="val"
    )
    assert counts.names == ("val[0]", "val[1]", "val[2]")
    assert counts.tp.shape == (3, C)
    unnamed = per_image_counts(label_reader(), stream(TRUTHS, PREDICTIONS).take(1), C, IGNORE)
    assert unnamed.names == ("split[0]",)


def test_count_batch_counts_each_image_apart_and_flags_labels_outside_the_classes():
    masks = np.array([[[0, C, 1]], [[1, 1, IGNORE]], [[2, 0, -1]]])
    predictions = np.array([[[0, 1, 0]], [[1, 0, 2]], [[2, 2, 2]]])
    tp, fp, fn, bad = count_batch(masks, predictions, C, IGNORE)
    # Labels C (one past the last class) and -1 count nowhere, not even in the next image's
    # bins, and flag their images.
    np.testing.assert_array_equal(bad, [True, False, True])
    np.testing.assert_array_equal(tp, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(fp, [[1, 0, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(fn, [[0, 1, 0], [0, 1, 0], [1, 0, 0]])


def test_images_are_named_by_their_files_when_the_data_knows_them():
    # data=folder and data=camvid pass each sample's image and mask: the per-image artifact
    # names an image by its mask file, as it always has (runs compare image by image).
    names = ["0001TP_006690.png", "0001TP_006720.png", "Seq05VD_f00000.png"]
    files = [(f"test/{n}", f"testannot/{n}") for n in names]
    counts = per_image_counts(
        label_reader(), stream(TRUTHS, PREDICTIONS), C, IGNORE, batch_size=2, files=files
    )
    names = [mask for _, mask in files]
    assert counts.names == tuple(names)
    np.testing.assert_array_equal(counts.tp, EXPECTED["tp"])
    frame = counts.frame(["a", "b", "c"], "test")
    assert list(frame.image.unique()) == names
