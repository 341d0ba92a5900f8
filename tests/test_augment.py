"""Augmentation moves image and mask together, on the training stream only."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from seglab.core.class_weights import Weighting
from seglab.data.augment import Augmenter, preview
from seglab.data.dataset import from_arrays
from seglab.data.datasets.shapes import shapes
from seglab.data.pipeline import batches
from seglab.losses import CrossEntropy, Dice
from seglab.training.trainer import Trainer

IGNORE = 255
C = 5


def label_encoded(count=6, size=32, seed=0):
    """Images whose pixel values encode their mask label: channel 0 = label / 8."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        for label in range(1, C):
            y, x = rng.integers(0, size - 8, 2)
            mask[y : y + rng.integers(3, 9), x : x + rng.integers(3, 9)] = label
    images = np.repeat((masks * 32)[..., None], 3, axis=-1).astype(np.uint8)
    return from_arrays((images, masks), (images, masks), [str(c) for c in range(C)], IGNORE)


def augmented(data, augmenter, seed=0, epochs=1):
    stream = augmenter.stream(data.train, seed)
    out = []
    for _ in range(epochs):
        images, masks = zip(*stream.as_numpy_iterator(), strict=True)
        out.append((np.stack(images), np.stack(masks)))
    return out


GEOMETRIC_ONLY = {"brightness": 0.0, "contrast": 0.0}


@pytest.mark.parametrize("strength", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_labelled_pixel_still_matches_its_image_pixel(strength, seed):
    data = label_encoded(seed=seed)
    augmenter = Augmenter(strength, interpolation="nearest", **GEOMETRIC_ONLY)
    ((images, masks),) = augmented(data, augmenter, seed)
    labelled = masks != IGNORE
    assert labelled.mean() > 0.3  # a real test: most pixels stay labelled
    decoded = np.rint(images[..., 0] * 255 / 32)
    np.testing.assert_array_equal(decoded[labelled], masks[labelled])
    assert not np.array_equal(masks, np.stack([m for _, m in data.train.as_numpy_iterator()]))


def test_bilinear_images_stay_aligned_with_nearest_masks():
    data = label_encoded(seed=3)
    ((images, masks),) = augmented(data, Augmenter(0.5, **GEOMETRIC_ONLY), seed=3)
    labelled = masks != IGNORE
    decoded = np.rint(images[..., 0] * 255 / 32)
    assert (decoded[labelled] == masks[labelled]).mean() > 0.9  # all but blended edges


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_labels_after_augmentation_are_valid_labels_or_ignore(strength):
    data = shapes(image_size=32, num_train=8, num_val=2)
    ((_, masks),) = augmented(data, Augmenter(strength), seed=2)
    assert set(np.unique(masks)) <= set(range(C)) | {IGNORE}
    assert IGNORE in masks  # rotations and shifts pull in pixels from outside


def test_strength_zero_is_the_identity():
    data = shapes(image_size=32, num_train=4, num_val=2)
    augmenter = Augmenter(0.0)
    assert augmenter.is_identity and augmenter.stream(data.train, 0) is data.train
    for image, mask in data.train.take(2):
        moved_image, moved_mask = augmenter(image, mask, tf.constant([1, 2]))
        np.testing.assert_array_equal(moved_image.numpy(), image.numpy())
        np.testing.assert_array_equal(moved_mask.numpy(), mask.numpy())


def test_photometric_changes_touch_the_image_only():
    data = label_encoded()
    only_colour = Augmenter(1.0, rotation=0, zoom=0, translation=0, flip=0)
    ((images, masks),) = augmented(data, only_colour)
    originals = [(i, m) for i, m in data.train.as_numpy_iterator()]
    np.testing.assert_array_equal(masks, np.stack([m for _, m in originals]))
    assert not np.allclose(images, np.stack([i for i, _ in originals]))
    assert images.min() >= 0 and images.max() <= 1


def test_every_epoch_draws_anew_and_the_same_seed_repeats_the_sequence():
    data = shapes(image_size=32, num_train=6, num_val=2)
    first, second = augmented(data, Augmenter(0.5), seed=7, epochs=2)
    assert not np.array_equal(first[1], second[1])
    again_first, again_second = augmented(data, Augmenter(0.5), seed=7, epochs=2)
    np.testing.assert_array_equal(first[0], again_first[0])
    np.testing.assert_array_equal(second[1], again_second[1])
    other = augmented(data, Augmenter(0.5), seed=8)[0]
    assert not np.array_equal(first[1], other[1])


def test_pixel_weights_are_built_from_the_augmented_mask():
    data = label_encoded()
    weights = np.array([0.5, 1, 2, 3, 4], np.float32)
    stream = batches(
        data.train,
        3,
        shuffle_seed=1,
        augment=Augmenter(1.0),
        class_weights=weights,
        num_classes=C,
    )
    for _, masks, pixel_weights in stream:
        masks = masks.numpy()
        expected = np.where(masks == IGNORE, 0, weights[np.minimum(masks, C - 1)])
        np.testing.assert_array_equal(pixel_weights.numpy(), expected)
        assert (masks == IGNORE).any()


def test_image_boost_is_decided_before_augmentation_and_survives_it():
    data = label_encoded(count=8)
    originals = [m for _, m in data.train.as_numpy_iterator()]
    contains = [bool((m == 4).any()) for m in originals]
    stream = batches(
        data.train,
        8,
        augment=Augmenter(1.0),
        image_boost=(4, 5.0),
        num_classes=C,
    )
    ((_, masks, weights),) = list(stream)
    for mask, weight, boosted in zip(masks.numpy(), weights.numpy(), contains, strict=True):
        labelled = mask != IGNORE
        np.testing.assert_array_equal(weight[labelled], 5.0 if boosted else 1.0)
        np.testing.assert_array_equal(weight[~labelled], 0.0)


def trainer():
    return Trainer(lambda: keras.optimizers.Adam(), batch_size=4)


def test_validation_batches_are_identical_with_and_without_augmentation_or_boost():
    data = shapes(image_size=32, num_train=8, num_val=6)
    loss = CrossEntropy(ignore_index=IGNORE)
    weights = np.linspace(1, 2, C).astype(np.float32)
    _, plain = trainer().streams(data, Weighting.for_loss(loss, weights))
    boosted = Weighting.for_loss(loss, weights, image_boost=(4, 10.0))
    train, val = trainer().streams(data, boosted, augment=Augmenter(1.0))
    for a, b in zip(plain, val, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    train_masks = np.concatenate([m.numpy() for _, m, _ in train])
    assert IGNORE in train_masks  # the training stream is augmented


def test_image_boost_needs_a_pixelwise_loss():
    with pytest.raises(ValueError, match="image_boost_class builds per-pixel weight maps"):
        Weighting.for_loss(Dice(), image_boost=(4, 2.0))


def test_preview_shows_the_original_then_one_draw_per_epoch():
    data = shapes(image_size=32, num_train=6, num_val=2)
    images, masks = preview(Augmenter(0.5), data.train, count=3, draws=2, seed=0)
    assert len(images) == 3 and all(len(row) == 3 for row in images + masks)
    originals = list(data.train.take(3).as_numpy_iterator())
    np.testing.assert_array_equal(images[0][0], originals[0][0])
    assert not np.array_equal(masks[0][1], masks[0][2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": 1.5}, r"augment.strength must be in \[0, 1\], got 1.5"),
        ({"strength": -0.1}, r"augment.strength must be in \[0, 1\]"),
        ({"rotation": -5}, r"augment.rotation must be >= 0"),
        ({"zoom": 1.0}, r"augment.zoom < 1"),
        ({"fill_mode": "mirror"}, r"augment.fill_mode='mirror' is not one of"),
        ({"interpolation": "cubic"}, r"augment.interpolation='cubic' is not one of"),
    ],
)
def test_bad_augment_options_are_rejected_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Augmenter(**kwargs)


def test_factors_scale_with_strength_and_can_be_overridden():
    half = Augmenter(0.5, rotation=10)
    assert half.factors["rotation"] == 10
    assert half.factors["zoom"] == pytest.approx(0.2)
    assert half.factors["flip"] == pytest.approx(0.25)


def test_image_boost_multiplies_the_class_weights_of_its_images():
    data = shapes(image_size=32, num_train=6, num_val=2)  # the speck is in some images only
    weights = np.array([0.5, 1, 2, 3, 4], np.float32)
    originals = [m for _, m in data.train.as_numpy_iterator()]
    stream = batches(data.train, 6, class_weights=weights, image_boost=(4, 5.0), num_classes=C)
    ((_, masks, pixel_weights),) = list(stream)
    for original, mask, weight in zip(originals, masks.numpy(), pixel_weights.numpy(), strict=True):
        factor = 5.0 if (original == 4).any() else 1.0
        expected = np.where(mask == IGNORE, 0, weights[np.minimum(mask, C - 1)] * factor)
        np.testing.assert_array_equal(weight, expected)
    assert any((m == 4).any() for m in originals) and not all((m == 4).any() for m in originals)


def test_per_batch_weights_reach_the_training_and_the_validation_stream():
    from seglab.core.class_weights import batch_inverse_frequency

    data = shapes(image_size=32, num_train=8, num_val=6)
    per_batch = Weighting.for_loss(CrossEntropy(ignore_index=IGNORE), per_batch=True)
    train, val = trainer().streams(data, per_batch)
    for stream in (train, val):
        for _, masks, weights in stream:
            masks = masks.numpy()
            expected = batch_inverse_frequency(masks, C, IGNORE)[np.minimum(masks, C - 1)]
            np.testing.assert_allclose(
                weights.numpy(), np.where(masks == IGNORE, 0, expected), rtol=1e-6
            )


def sampling_maps(augmenter, height, width, count=12, seed=0):
    """Where each output pixel of ``count`` augmented views was sampled from, as
    ``(rows, cols)``: ``-1`` outside the image. The input image holds each pixel's own
    ``(row + 1, column + 1) / 64``; with nearest interpolation and a constant zero fill the
    output holds its source pixel's, exactly. The mask holds ``row * width + column`` (mod 250),
    so it must carry the same map."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([rows + 1, cols + 1, np.zeros_like(rows)], -1).astype(np.float32) / 64
    mask = ((rows * width + cols) % 250).astype(np.int32)
    stream = tf.data.Dataset.from_tensors((image, mask)).repeat(count)
    views = list(augmenter.stream(stream, seed).as_numpy_iterator())
    maps = []
    for moved, moved_mask in views:
        src_rows, src_cols = (np.rint(moved[..., k] * 64).astype(int) - 1 for k in (0, 1))
        inside = src_rows >= 0
        np.testing.assert_array_equal(moved_mask[inside], mask[src_rows[inside], src_cols[inside]])
        assert (moved_mask[~inside] == IGNORE).all()
        maps.append((src_rows, src_cols))
    return rows, cols, maps


def geometric(**factors):
    only = {"rotation": 0, "zoom": 0, "translation": 0, "flip": 0, **factors}
    return Augmenter(**only, **GEOMETRIC_ONLY, fill_mode="constant", interpolation="nearest")


def test_a_flip_mirrors_the_columns():
    rows, cols, maps = sampling_maps(geometric(flip=1.0), height=8, width=12, count=3)
    for src_rows, src_cols in maps:
        np.testing.assert_array_equal(src_rows, rows)
        np.testing.assert_array_equal(src_cols, 11 - cols)


def test_a_translation_shifts_each_axis_by_up_to_its_fraction_of_that_side():
    rows, cols, maps = sampling_maps(geometric(translation=0.4), height=16, width=48)
    shifts = []
    for src_rows, src_cols in maps:
        inside = src_rows >= 0
        (dy,), (dx,) = np.unique((src_rows - rows)[inside]), np.unique((src_cols - cols)[inside])
        shifts.append((dy, dx))
    dy, dx = np.abs(np.array(shifts)).T
    assert dy.max() <= 0.4 * 16 + 0.5 and dx.max() <= 0.4 * 48 + 0.5
    assert dx.max() > 0.4 * 16 + 1  # the width's fraction, not the height's
    assert len(set(shifts)) == len(shifts)  # a new draw per view


def polar(rows, cols, centre):
    return np.hypot(rows - centre, cols - centre), np.arctan2(rows - centre, cols - centre)


def test_a_rotation_turns_about_the_centre_by_at_most_its_angle():
    rows, cols, maps = sampling_maps(geometric(rotation=30), height=33, width=33)
    radius, angle = polar(rows, cols, 16)
    turns = []
    for src_rows, src_cols in maps:
        far = (src_rows >= 0) & (radius > 12)  # rounding moves the angle by < 3.4 degrees
        src_radius, src_angle = polar(src_rows[far], src_cols[far], 16)
        assert np.abs(src_radius - radius[far]).max() <= 1.0  # nearest pixel: within sqrt(2)/2
        turn = np.degrees(np.angle(np.exp(1j * (src_angle - angle[far]))))
        assert np.ptp(turn) < 7 and np.abs(turn).max() < 30 + 3.5  # one turn for the image
        turns.append(np.median(turn))
    assert min(turns) < -10 and max(turns) > 10  # both directions drawn


def test_a_zoom_scales_about_the_centre_both_ways():
    rows, cols, maps = sampling_maps(geometric(zoom=0.4), height=33, width=33)
    radius, _ = polar(rows, cols, 16)
    scales = []
    for src_rows, src_cols in maps:
        far = (src_rows >= 0) & (radius > 8)
        src_radius, _ = polar(src_rows[far], src_cols[far], 16)
        scales.append(np.median(src_radius / radius[far]))  # 1 / zoom
    assert 1 / 1.4 - 0.03 < min(scales) < 0.95 and 1.05 < max(scales) < 1 / 0.6 + 0.03


def test_contrast_scales_each_channel_about_its_own_mean_as_tf_image_does():
    rng = np.random.default_rng(0)
    image = (rng.uniform(0.4, 0.6, (8, 8, 3)) * [0.6, 1.0, 1.3]).astype(np.float32)  # never clipped
    stream = tf.data.Dataset.from_tensors((image, np.zeros((8, 8), np.int32))).repeat(4)
    augmenter = Augmenter(contrast=0.3)
    for moved, _ in augmenter.stream(stream, 0).as_numpy_iterator():
        factor = (moved - moved.mean((0, 1))).std() / (image - image.mean((0, 1))).std()
        assert 0.7 <= factor <= 1.3 and abs(factor - 1) > 1e-3
        expected = tf.image.adjust_contrast(image, factor).numpy()
        np.testing.assert_allclose(moved, expected, atol=1e-5)
