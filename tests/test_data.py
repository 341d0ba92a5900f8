import numpy as np
import pytest
import tensorflow as tf

from seglab.core.class_weights import batch_inverse_frequency
from seglab.data.counting import cached_class_counts, class_counts
from seglab.data.dataset import from_arrays
from seglab.data.datasets.shapes import shapes
from seglab.data.pipeline import batches


def arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, masks = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.stack(images), np.stack(masks)


def test_shapes_is_deterministic_for_a_seed():
    first, second = shapes(num_train=12, num_val=4, seed=3), shapes(num_train=12, num_val=4, seed=3)
    for a, b in zip(
        arrays(first.train) + arrays(first.val),
        arrays(second.train) + arrays(second.val),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    other = shapes(num_train=12, num_val=4, seed=4)
    assert not np.array_equal(arrays(first.train)[1], arrays(other.train)[1])


def test_leaving_an_object_kind_out_keeps_the_others_and_renumbers_the_speck():
    names = ["background", "disk", "bar", "speck"]
    full = shapes(num_train=20, num_val=2, seed=1)
    four = shapes(names, objects=["disk", "bar"], num_train=20, num_val=2, seed=1)
    (_, all_masks), (_, masks) = arrays(full.train), arrays(four.train)
    assert four.class_names == tuple(names) and set(np.unique(masks)) == {0, 1, 2, 3}
    # The same draws: bars and specks (drawn after the square) are unchanged; disks only gain
    # the pixels the square used to cover.
    np.testing.assert_array_equal(masks == 2, all_masks == 3)
    np.testing.assert_array_equal(masks == 3, all_masks == 4)
    assert np.all(masks[all_masks == 1] == 1) and np.all(all_masks[masks == 1] != 3)


def test_validation_split_does_not_depend_on_num_train():
    small, large = shapes(num_train=4, num_val=6), shapes(num_train=20, num_val=6)
    np.testing.assert_array_equal(arrays(small.val)[1], arrays(large.val)[1])


def test_default_shapes_have_a_rare_class_under_half_a_percent_absent_from_most_images():
    data = shapes()
    counts = class_counts(data.train, data.num_classes, data.ignore_index)
    share = counts.pixel_share
    assert data.class_names == ("background", "disk", "square", "bar", "speck")
    assert 0 < share[4] <= 0.005
    assert counts.images[4] < 0.5 * counts.num_images
    assert share[0] > 0.85
    assert all(share[c] > 5 * share[4] for c in (1, 2, 3))
    images, _ = arrays(data.train.take(2))
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_class_counts_equal_numpy_counts_and_skip_ignore():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, size=(7, 5, 6)).astype(np.uint8)
    masks[0] = 0  # image without class 1 or 2
    masks[1, :2] = 255  # ignored pixels
    images = np.zeros((7, 5, 6, 3), np.uint8)
    data = from_arrays((images, masks), (images[:1], masks[:1]), ["a", "b", "c"], 255)
    counts = class_counts(data.train, 3, 255, batch_size=3)
    valid = masks != 255
    np.testing.assert_array_equal(counts.pixels, [(masks == c).sum() for c in range(3)])
    np.testing.assert_array_equal(
        counts.images, [sum((m == c).any() for m in masks) for c in range(3)]
    )
    np.testing.assert_array_equal(
        counts.image_pixels,
        [
            sum(v.sum() for m, v in zip(masks, valid, strict=True) if (m == c).any())
            for c in range(3)
        ],
    )
    assert counts.num_images == 7
    assert counts.pixel_share.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("label", [7, 2, -1])
def test_class_counts_name_the_sample_and_the_bad_label(label):
    masks = np.zeros((3, 4, 4), np.int32)
    masks[2, 1, 1] = label
    images = np.zeros((3, 4, 4, 3), np.uint8)
    data = from_arrays((images, masks), (images, masks), ["a", "b"], 255)
    with pytest.raises(
        ValueError, match=rf"sample 2 has label {label}, but valid labels are 0\.\.1"
    ):
        class_counts(data.train, 2, 255)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_names": ["a", "b"]}, r"data.class_names must name 5 classes"),
        (
            {"objects": ["disk", "bar"]},
            r"must name 4 classes \(background, disk, bar, speck\) for data=shapes with "
            r"data.objects=\['disk', 'bar'\], got 5",
        ),
        ({"objects": ["disk", "cone"]}, r"data.objects must list distinct kinds among"),
        ({"objects": ["disk", "disk"]}, r"data.objects must list distinct kinds among"),
        ({"rare_contrast": 1.5}, r"data.rare_contrast must be in \[0, 1\], got 1.5"),
        ({"image_size": 8}, r"data.image_size must be at least 16"),
        ({"image_size": [8, 8]}, r"data.image_size must be at least 16 for data=shapes, got 8"),
        ({"image_size": [32, 48]}, r"draws square images: data.image_size=\[32, 48\]"),
        ({"image_size": [32]}, r"data.image_size must be a positive side or \[height, width\]"),
        ({"num_train": 0}, r"the train split is empty"),
    ],
)
def test_shapes_rejects_bad_options_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shapes(**{"num_train": 2, "num_val": 2, **kwargs})


def test_from_arrays_rejects_image_mask_size_mismatch():
    images, masks = np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 6), np.uint8)
    with pytest.raises(ValueError, match=r"train images \(2, 8, 8, 3\) and masks \(2, 8, 6\)"):
        from_arrays((images, masks), (images, masks), ["a", "b"], 255)


def test_pixel_weights_are_the_class_weight_of_each_pixel_and_zero_on_ignore():
    masks = np.array([[[0, 1], [2, 255]]], np.uint8)
    images = np.zeros((1, 2, 2, 3), np.uint8)
    data = from_arrays((images, masks), (images, masks), ["a", "b", "c"], 255)
    ((_, mask, weights),) = batches(data.train, 1, class_weights=np.array([0.5, 2, 7])).take(1)
    np.testing.assert_array_equal(weights.numpy(), [[[0.5, 2], [7, 0]]])
    np.testing.assert_array_equal(mask.numpy(), masks)


def test_batch_weights_equal_the_numpy_per_batch_reference():
    rng = np.random.default_rng(1)
    masks = rng.choice([0, 1, 2, 255], size=(6, 5, 5), p=[0.8, 0.15, 0.02, 0.03]).astype(np.uint8)
    images = np.zeros((6, 5, 5, 3), np.uint8)
    data = from_arrays((images, masks), (images, masks), ["a", "b", "c"], 255)
    for _, mask, weights in batches(data.train, 3, batch_weights=True, num_classes=3):
        mask = mask.numpy()
        expected = batch_inverse_frequency(mask, 3, 255)
        np.testing.assert_allclose(
            weights.numpy(), np.where(mask == 255, 0, expected[np.minimum(mask, 2)]), rtol=1e-6
        )


def test_class_counts_are_cached_per_key(tmp_path, monkeypatch):
    data = shapes(num_train=6, num_val=2, image_size=16)
    first = cached_class_counts(data.train, 5, 255, {"seed": 0}, tmp_path)
    assert len(list(tmp_path.glob("class_counts-*.json"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("recounted although cached")

    monkeypatch.setattr("seglab.data.counting.class_counts", fail)
    again = cached_class_counts(data.train, 5, 255, {"seed": 0}, tmp_path)
    np.testing.assert_array_equal(first.pixels, again.pixels)
    assert first.num_images == again.num_images == 6
    with pytest.raises(AssertionError, match="recounted"):
        cached_class_counts(data.train, 5, 255, {"seed": 1}, tmp_path)


def test_split_counts_recount_for_any_change_of_the_data_config_and_per_split(
    tmp_path, monkeypatch
):
    from seglab.data.counting import split_counts

    data = shapes(num_train=6, num_val=2, image_size=16)
    config = {"_target_": "seglab.datasets.shapes.shapes", "seed": 0, "image_size": 16}
    for split in ("train", "val"):
        split_counts(data, split, config, tmp_path)
    assert len(list(tmp_path.glob("class_counts-*.json"))) == 2  # one per split

    def fail(*args, **kwargs):
        raise AssertionError("recounted although cached")

    monkeypatch.setattr("seglab.data.counting.class_counts", fail)
    assert split_counts(data, "val", config, tmp_path).num_images == 2  # cached per split
    for changed in ({"seed": 1}, {"image_size": 32}):
        with pytest.raises(AssertionError, match="recounted"):  # same _target_, new key
            split_counts(data, "train", {**config, **changed}, tmp_path)


TF_MESSAGES = [
    # (TensorFlow's message, what seglab shows)
    (
        "{{function_node __wrapped__DecodeImage_device_/job:localhost/replica:0/task:0/device:"
        "CPU:0}} Invalid PNG. Failed to initialize decoder. [Op:DecodeImage] name: ",
        "Invalid PNG. Failed to initialize decoder.",
    ),
    (
        "{{function_node __inference_Dataset_map_1}} Error in user-defined function passed to "
        "MapDataset:0 transformation with iterator: Iterator::Root::Map: Invalid PNG data, "
        "size 40\n\t [[{{node DecodePng}}]]",
        "Invalid PNG data, size 40",
    ),
    (
        "assertion failed: [mask has a colour that is not in data.colors:] [m0.png]\n\t [[x]]",
        "[mask has a colour that is not in data.colors:] [m0.png]",
    ),
]


@pytest.mark.parametrize(("message", "shown"), TF_MESSAGES)
def test_tensorflow_errors_are_cut_to_their_readable_part(message, shown):
    from seglab.data.counting import tf_reason

    assert tf_reason(message) == shown


def test_shapes_take_their_side_as_a_number_or_a_square_pair():
    from seglab.data.datasets.shapes import shapes

    one, pair = (shapes(image_size=size, num_train=2, num_val=1) for size in (24, [24, 24]))
    assert one.image_shape == pair.image_shape == (24, 24, 3)
    for split in ("train", "val"):
        for (a, b), (c, d) in zip(one.stream(split), pair.stream(split), strict=True):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


@pytest.mark.parametrize(("ignore_index", "name"), [(0, "a"), (2, "c")])
def test_an_ignore_index_that_is_a_class_label_is_refused(ignore_index, name):
    arrays = (np.zeros((2, 16, 16, 3), np.float32), np.zeros((2, 16, 16), np.int32))
    with pytest.raises(
        ValueError, match=rf"data.ignore_index={ignore_index} is the label of class '{name}'"
    ):
        from_arrays(arrays, arrays, ["a", "b", "c"], ignore_index)


def test_the_batches_keep_tf_datas_autotuner_off_so_no_epoch_waits_for_it():
    """With the autotuner on, Keras' fit sat idle 4-5 s before the first batch of about a third
    of its epochs; the batches every pass iterates turn it off (and still batch as asked)."""
    data = shapes(image_size=32, num_train=10, num_val=4)
    streams = {(4, 4, 2): batches(data.train, 4, shuffle_seed=0), (4,): batches(data.val, 4)}
    for sizes, stream in streams.items():
        assert stream.options().autotune.enabled is False
        assert tuple(len(x) for x, _ in stream) == sizes
