"""data=oxford_pet against tfds.testing.mock_data: no network, trimaps with known counts."""

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import compose_train

from seglab.data.counting import class_counts
from seglab.data.datasets.oxford_pet import CLASS_NAMES, oxford_pet
from seglab.train import run

tfds = pytest.importorskip("tensorflow_datasets")

SIZE = 16
SPLITS = {"train": 3, "test": 2}


def trimap(i: int) -> np.ndarray:
    """Background (2) everywhere, a pet (1) square of side i + 4, a border (3) row under it."""
    mask = np.full((SIZE, SIZE, 1), 2, np.uint8)
    mask[: i + 4, : i + 4] = 1
    mask[i + 4, : i + 4] = 3
    return mask


def pet_examples(split_name: str, bad_value: int | None = None) -> tf.data.Dataset:
    masks = [trimap(i) for i in range(SPLITS[split_name])]
    if bad_value is not None:
        masks[-1][0, 0] = bad_value
    return tf.data.Dataset.from_tensor_slices(
        {
            "image": np.stack([np.repeat(m * 60, 3, axis=-1) for m in masks]),
            "segmentation_mask": np.stack(masks),
            "file_name": [f"{split_name}_{i}.jpg" for i in range(len(masks))],
            "label": np.zeros(len(masks), np.int64),
            "species": np.zeros(len(masks), np.int64),
            "head_bbox": np.zeros((len(masks), 4), np.float32),
        }
    )


def mocked(bad_value: int | None = None):
    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        return pet_examples("test" if "test" in str(split) else "train", bad_value)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_trimaps_are_remapped_to_background_pet_border_with_exact_counts(tmp_path):
    with mocked():
        data = oxford_pet(str(tmp_path), image_size=SIZE)
    assert data.class_names == CLASS_NAMES == ("background", "pet", "border")
    assert (data.num_train, data.num_val) == (3, 2)
    counts = class_counts(data.train, 3, data.ignore_index)
    pets = [(i + 4) ** 2 for i in range(3)]
    borders = [i + 4 for i in range(3)]
    assert counts.pixels.tolist() == [
        3 * SIZE * SIZE - sum(pets) - sum(borders),
        sum(pets),
        sum(borders),
    ]
    images, masks = zip(*data.train.as_numpy_iterator(), strict=True)
    assert images[0].shape == (SIZE, SIZE, 3) and masks[0].dtype == np.int32
    # the image was drawn from the raw trimap: pet (1) -> 60/255, background (2) -> 120/255
    np.testing.assert_allclose(images[0][0, 0, 0], 60 / 255, atol=1e-6)
    assert masks[0][0, 0] == 1 and masks[0][-1, -1] == 0


def test_masks_are_resized_with_nearest_neighbour():
    with mocked():
        data = oxford_pet(image_size=[32, 8])
    masks = np.stack([m for _, m in data.val.as_numpy_iterator()])
    assert masks.shape == (2, 32, 8) and set(np.unique(masks)) == {0, 1, 2}


@pytest.mark.parametrize("bad_value", [0, 4, 255])
def test_a_value_outside_the_trimap_is_named_with_its_file(bad_value):
    with mocked(bad_value):
        data = oxford_pet(image_size=SIZE)
    with pytest.raises(ValueError, match=r"sample 2: .*trimap values must be.*train_2.jpg"):
        class_counts(data.train, 3, 255)


def test_random_mock_data_with_mismatched_sizes_fails_naming_the_example():
    with tfds.testing.mock_data(num_examples=2):
        data = oxford_pet(image_size=SIZE)
    with pytest.raises(ValueError, match=r"trimap values|sizes differ"):
        class_counts(data.train, 3, 255)


def test_missing_dataset_names_the_data_dir_and_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=r"data.data_dir='.*' holds no prepared oxford_iiit_pet"):
        oxford_pet(str(tmp_path), download=False)


@pytest.mark.slow
def test_oxford_pet_trains_from_the_config(tmp_path):
    cfg = compose_train(
        "debug=smoke",
        "trainer.epochs=1",
        "data=oxford_pet",
        f"data.data_dir={tmp_path / 'tfds'}",
        f"data.image_size={SIZE}",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    with mocked():
        result = run(cfg)
    assert math.isfinite(result.val_loss)
