"""The failure gallery: which images it shows, and how it marks the missed pixels."""

import numpy as np
import pytest
from test_evaluation import label_reader

from seglab.figures.gallery import MISSED, Gallery
from seglab.training.prediction import LabelPredictor

SIZE = 8


def gallery_of(truths, predictions, count, pool=None):
    """A gallery of the first ``pool`` images, which make ``label_reader`` predict
    ``predictions`` (label / 10 in red)."""
    images = np.repeat((predictions / 10.0)[..., None], 3, axis=-1).astype(np.float32)
    return Gallery(images[:pool], truths[:pool], 3, count)


def reader():
    return LabelPredictor(label_reader(3))


def test_the_images_that_miss_the_class_most_come_first_and_absent_ones_never():
    truths = np.zeros((4, SIZE, SIZE), np.int32)
    predictions = np.zeros((4, SIZE, SIZE), np.int32)
    truths[0, :2] = 2  # 16 rare pixels, 8 found
    predictions[0, :1] = 2
    truths[1, :4] = 2  # 32 rare pixels, none found: missed most
    truths[3, :1] = 2  # 8 rare pixels, none found
    gallery = gallery_of(truths, predictions, count=2, pool=4)  # image 2 has no rare
    (picture,) = gallery.draw(reader(), [2]).values()
    scale = 96 // SIZE
    row = (SIZE * scale) + 2 * scale  # an image and the white line under it
    assert picture.shape == (2 * row - 2 * scale, (3 * SIZE + 4) * scale, 3)
    first, second = picture[: SIZE * scale], picture[row : row + SIZE * scale]
    magenta = (MISSED * 255).astype(np.uint8)
    prediction_column = slice((2 * SIZE + 4) * scale, None)
    assert (first[:, prediction_column] == magenta).all(axis=-1).sum() == 32 * scale**2  # image 1
    assert (second[:, prediction_column] == magenta).all(axis=-1).sum() == 8 * scale**2  # image 0


def test_no_gallery_when_off_or_when_no_image_has_the_class():
    truths = np.zeros((2, SIZE, SIZE), np.int32)
    assert gallery_of(truths, truths, count=0).draw(reader(), [2]) == {}
    assert gallery_of(truths, truths, count=2).draw(reader(), [2]) == {}
    with pytest.raises(ValueError, match=r"metrics.gallery must be >= 0"):
        gallery_of(truths, truths, count=-1)


def test_one_gallery_per_target_class_in_the_given_order_up_to_the_bound(monkeypatch):
    truths = np.zeros((3, SIZE, SIZE), np.int32)
    truths[0, :2], truths[1, :3] = 2, 1
    gallery = gallery_of(truths, np.zeros_like(truths), count=2, pool=3)
    assert list(gallery.draw(reader(), [2, 1, 0])) == [2, 1, 0]
    monkeypatch.setattr("seglab.figures.gallery.MAX_CLASSES", 2)
    assert list(gallery.draw(reader(), [1, 0, 2])) == [1, 0]
