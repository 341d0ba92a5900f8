"""Each scheme against hand-computed values on a small count table, plus its options."""

import numpy as np
import pytest

from seglab.core.class_weights import (
    ClassCounts,
    Weighting,
    WeightScheme,
    batch_inverse_frequency,
    effective_number,
    enet,
    inverse_frequency,
    inverse_sqrt,
    median_frequency,
)

# An absent class divides by 0: each scheme must do it on purpose, not with a numpy warning.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

NAMES = ["bg", "thing", "rare"]
# 5 images x 20 pixels: bg 60 px in all 5 images, thing 30 px in 3, rare 10 px in 1.
COUNTS = ClassCounts(
    pixels=np.array([60, 30, 10]),
    images=np.array([5, 3, 1]),
    image_pixels=np.array([100, 60, 20]),
    num_images=5,
)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        (inverse_frequency, [100 / 180, 100 / 90, 100 / 30]),  # N / (C n_c)
        (inverse_sqrt, [0.6**-0.5, 0.3**-0.5, 0.1**-0.5]),  # 1 / sqrt(p_c)
        # f = 60/100, 30/60, 10/20 = 0.6, 0.5, 0.5; median 0.5
        (median_frequency, [0.5 / 0.6, 1.0, 1.0]),
        (enet, [2.072856, 3.601894, 8.823891]),  # 1 / ln(1.02 + p_c)
        (lambda c: effective_number(c, beta=0.9), [0.100180, 0.104427, 0.153534]),
    ],
    ids=["inverse_frequency", "inverse_sqrt", "median_frequency", "enet", "effective_number"],
)
def test_scheme_equals_hand_computed_values(scheme, expected):
    np.testing.assert_allclose(scheme(COUNTS), expected, rtol=1e-5)


def test_inverse_frequency_is_already_pixel_normalised():
    weights = inverse_frequency(COUNTS)
    assert np.sum(COUNTS.pixel_share * weights) == pytest.approx(1.0)


def test_effective_number_spans_uniform_to_inverse_frequency():
    assert np.ptp(effective_number(COUNTS, beta=0.0)) == 0
    near_one = effective_number(COUNTS, beta=1 - 1e-9)
    np.testing.assert_allclose(near_one / near_one[0], [1, 2, 6], rtol=1e-4)


@pytest.mark.parametrize(
    ("normalize", "check"),
    [
        ("mean", lambda w: np.mean(w)),
        ("pixel", lambda w: np.sum(COUNTS.pixel_share * w)),
    ],
)
def test_normalisation_makes_the_chosen_mean_one(normalize, check):
    weights = WeightScheme("median_frequency", normalize=normalize)(COUNTS, NAMES)
    assert check(weights) == pytest.approx(1.0)
    ratio = median_frequency(COUNTS)
    np.testing.assert_allclose(weights / weights[2], ratio / ratio[2])


def test_no_normalisation_keeps_the_paper_values():
    np.testing.assert_allclose(
        WeightScheme("median_frequency", normalize="none")(COUNTS, NAMES), [5 / 6, 1, 1]
    )


@pytest.mark.parametrize(
    ("power", "expected"),
    [
        (1.0, [100 / 180, 100 / 90, 100 / 30]),  # the scheme's own weights
        (0.5, [(100 / 180) ** 0.5, (100 / 90) ** 0.5, (100 / 30) ** 0.5]),  # = 0.745, 1.054, 1.826
        (2.0, [(100 / 180) ** 2, (100 / 90) ** 2, (100 / 30) ** 2]),
        (0.0, [1.0, 1.0, 1.0]),  # no weighting
    ],
)
def test_power_raises_the_weights_before_normalisation(power, expected):
    weights = WeightScheme("inverse_frequency", normalize="none", power=power)(COUNTS, NAMES)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)


def test_power_zero_weights_like_no_scheme_after_pixel_normalisation():
    for scheme in ("median_frequency", "enet", "inverse_sqrt"):
        weights = WeightScheme(scheme, power=0.0)(COUNTS, NAMES)
        np.testing.assert_allclose(weights, [1.0, 1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize("power", [-0.5, "half", True, float("nan")])
def test_power_must_be_a_number_at_least_zero(power):
    with pytest.raises(ValueError, match=r"class_weights.power must be a number >= 0, got"):
        WeightScheme("median_frequency", power=power)


def test_clip_max_bounds_the_weights_after_normalisation():
    weights = WeightScheme("inverse_frequency", normalize="none", clip_max=2.0)(COUNTS, NAMES)
    np.testing.assert_allclose(weights, [100 / 180, 100 / 90, 2.0])


def test_none_and_per_batch_give_no_dataset_weights():
    assert WeightScheme("none")(COUNTS, NAMES) is None
    per_batch = WeightScheme("per_batch")
    assert per_batch(COUNTS, NAMES) is None and per_batch.per_batch


@pytest.mark.parametrize(
    "scheme", ["inverse_frequency", "median_frequency", "enet", "effective_number", "inverse_sqrt"]
)
def test_uniform_counts_give_uniform_weights(scheme):
    uniform = ClassCounts(np.array([10, 10, 10]), np.array([2, 2, 2]), np.array([30, 30, 30]), 3)
    np.testing.assert_allclose(WeightScheme(scheme)(uniform, NAMES), 1.0)


def test_manual_weights_by_list_and_by_name():
    by_list = WeightScheme("manual", normalize="none", weights=[1, 1, 1000])(COUNTS, NAMES)
    by_name = WeightScheme("manual", normalize="none", weights={"rare": 1000})(COUNTS, NAMES)
    np.testing.assert_array_equal(by_list, [1, 1, 1000])
    np.testing.assert_array_equal(by_name, [1, 1, 1000])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "manual", "weights": [1, 2]}, r"has 2 values but there are 3 classes"),
        ({"scheme": "manual", "weights": {"rair": 2}}, r"names unknown classes \['rair'\]"),
        ({"scheme": "manual", "weights": [1, -1, 1]}, r"must be finite, >= 0 and not all 0"),
        (
            {"scheme": "manual", "weights": [1, float("nan"), 1]},
            r"must be finite, >= 0 and not all 0",
        ),
        ({"scheme": "manual", "weights": [0, 0, 0]}, r"manual: weights must be .* not all 0"),
        ({"scheme": "manual"}, r"needs class_weights.weights"),
        ({"scheme": "balanced"}, r"class_weights.scheme='balanced' is not one of \['none'"),
        ({"scheme": "enet", "normalize": "sum"}, r"normalize='sum' is not one of"),
        ({"scheme": "enet", "k": 1.0}, r"class_weights.k must be > 1"),
        ({"scheme": "effective_number", "beta": 1.0}, r"class_weights.beta must be in \[0, 1\)"),
        ({"scheme": "enet", "clip_max": 0}, r"clip_max must be > 0"),
    ],
)
def test_bad_options_are_rejected_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightScheme(**kwargs)(COUNTS, NAMES)


def test_a_class_absent_from_training_gets_the_largest_finite_weight_with_a_warning():
    counts = ClassCounts(np.array([90, 10, 0]), np.array([5, 1, 0]), np.array([100, 20, 0]), 5)
    with pytest.warns(UserWarning, match=r"\['rare'\] never occur in the training set"):
        weights = WeightScheme("inverse_frequency", normalize="none")(counts, NAMES)
    np.testing.assert_allclose(weights, [100 / 270, 100 / 30, 100 / 30])


def test_per_batch_weights_differ_from_dataset_weights_on_a_skewed_batch():
    """The pitfall: a batch with 2 rare pixels gives the rare class a huge weight."""
    masks = np.zeros((2, 10, 10), int)
    masks[0, 0, :2] = 2
    masks[1, :5] = 1
    masks[1, 9, 9] = 255
    batch = batch_inverse_frequency(masks, 3, 255)
    # 199 labelled pixels: bg 147, thing 50, rare 2
    np.testing.assert_allclose(batch, [199 / (3 * 147), 199 / (3 * 50), 199 / (3 * 2)])
    dataset = inverse_frequency(COUNTS)
    assert batch[2] / batch[0] > 10 * dataset[2] / dataset[0]
    absent = batch_inverse_frequency(np.zeros((1, 4, 4), int), 3, 255)
    np.testing.assert_array_equal(absent, [1 / 3, 0, 0])


def test_image_boost_resolves_its_class_by_name():
    assert WeightScheme(image_boost_class="rare", image_boost=5).boost(NAMES) == (2, 5.0)
    assert WeightScheme().boost(NAMES) is None
    with pytest.raises(ValueError, match=r"image_boost_class='rair' is not a class"):
        WeightScheme(image_boost_class="rair").boost(NAMES)
    with pytest.raises(ValueError, match=r"class_weights.image_boost must be > 0"):
        WeightScheme(image_boost=0)


# 4 classes, class 3 absent: f = 0.6, 0.5, 0.25 over the present classes, median 0.5.
WITH_ABSENT = ClassCounts(
    pixels=np.array([60, 30, 10, 0]),
    images=np.array([5, 3, 2, 0]),
    image_pixels=np.array([100, 60, 40, 0]),
    num_images=5,
)


def test_median_frequency_takes_the_median_over_present_classes_only():
    weights = median_frequency(WITH_ABSENT)
    np.testing.assert_allclose(weights[:3], [0.5 / 0.6, 1.0, 2.0])
    assert np.isnan(weights[3])  # no frequency: the scheme fills it, see below


@pytest.mark.filterwarnings("ignore:classes \\['d'\\] never occur")
def test_an_absent_class_gets_the_largest_finite_weight_but_manual_weights_stay():
    names = ["a", "b", "c", "d"]
    filled = WeightScheme("median_frequency", normalize="none")(WITH_ABSENT, names)
    np.testing.assert_allclose(filled, [0.5 / 0.6, 1.0, 2.0, 2.0])
    by_hand = WeightScheme("manual", normalize="none", weights=[1, 2, 3, 7])(WITH_ABSENT, names)
    np.testing.assert_array_equal(by_hand, [1, 2, 3, 7])  # given by hand: used as given


def test_when_no_class_has_a_finite_weight_every_class_gets_one():
    empty = ClassCounts(np.zeros(2, int), np.zeros(2, int), np.zeros(2, int), 3)
    with pytest.warns(UserWarning, match="never occur"):
        weights = WeightScheme("inverse_frequency", normalize="none")(empty, ["a", "b"])
    np.testing.assert_array_equal(weights, [1.0, 1.0])


def test_enet_default_constant_is_paszkes():
    expected = 1 / np.log(1.02 + COUNTS.pixel_share)
    np.testing.assert_allclose(
        WeightScheme("enet", normalize="none")(COUNTS, NAMES), expected, rtol=1e-12
    )


@pytest.mark.parametrize("bad", [["a", 1, 2], [True, 1, 2], [None, 1, 2]])
def test_manual_weights_must_be_numbers(bad):
    with pytest.raises(ValueError, match=r"class_weights.weights must be numbers"):
        WeightScheme("manual", weights=bad)(COUNTS, NAMES)


def test_normalize_names_its_option():
    from seglab.core.class_weights import normalize

    with pytest.raises(ValueError, match=r"class_weights.normalize='sum' is not one of"):
        normalize(np.ones(3), "sum", COUNTS.pixel_share)


# A class on exactly one pixel: thresholds written ``> 0`` must not become ``> 1``.
ONE_PIXEL = ClassCounts(
    pixels=np.array([59, 1, 40]),
    images=np.array([3, 1, 2]),
    image_pixels=np.array([60, 20, 40]),
    num_images=3,
)


def test_median_frequency_counts_a_class_on_one_pixel_as_present():
    # f = 59/60, 1/20, 40/40; median over all three (the one-pixel class is present): 59/60
    np.testing.assert_allclose(
        median_frequency(ONE_PIXEL), [1.0, (59 / 60) / (1 / 20), 59 / 60], rtol=1e-12
    )


def test_effective_number_defaults_to_cuis_beta():
    expected = (1 - 0.9999) / (1 - 0.9999 ** COUNTS.pixels.astype(float))
    np.testing.assert_allclose(effective_number(COUNTS), expected, rtol=1e-12)
    np.testing.assert_allclose(
        WeightScheme("effective_number", normalize="none")(COUNTS, NAMES), expected
    )


def test_batch_weights_of_a_class_on_one_pixel():
    masks = np.array([[[0, 0, 0, 1], [0, 0, 255, 0]]])  # 7 labelled pixels, class 2 absent
    np.testing.assert_allclose(
        batch_inverse_frequency(masks, 3, 255), [7 / (3 * 6), 7 / 3, 0.0], rtol=1e-12
    )


def test_image_boost_is_off_by_default_and_clip_max_below_one_is_allowed():
    scheme = WeightScheme("inverse_frequency", normalize="none", clip_max=0.5)
    assert scheme.image_boost == 1.0 and scheme.boost(NAMES) is None
    np.testing.assert_allclose(scheme(COUNTS, NAMES), [0.5, 0.5, 0.5])


def test_a_zero_manual_weight_is_allowed():
    weights = WeightScheme("manual", normalize="none", weights=[0.0, 1.0, 2.0])(COUNTS, NAMES)
    np.testing.assert_array_equal(weights, [0.0, 1.0, 2.0])


class FakeLoss:
    """What :class:`Weighting` reads from a seglab loss: its name and whether it takes pixel
    weights."""

    def __init__(self, name: str, pixel_weighted: bool) -> None:
        self.name, self.pixel_weighted = name, pixel_weighted


WEIGHTS = np.array([0.5, 1.0, 3.0])


@pytest.mark.parametrize(
    ("options", "loss", "expected"),
    [
        # (per_batch, image_boost, pixel_maps) of the run's weighting
        ({}, FakeLoss("ce", True), (False, None, WEIGHTS)),
        ({}, FakeLoss("dice", False), (False, None, None)),  # the loss holds the weights
        ({"scheme": "per_batch"}, FakeLoss("ce", True), (True, None, WEIGHTS)),
        ({"image_boost_class": "rare", "image_boost": 4}, FakeLoss("ce", True),
         (False, (2, 4.0), WEIGHTS)),
    ],
)  # fmt: skip
def test_the_runs_weighting_carries_the_schemes_modes_for_its_loss(options, loss, expected):
    weighting = WeightScheme(**options).weighting(WEIGHTS, NAMES, loss)
    per_batch, image_boost, pixel_maps = expected
    assert weighting.per_batch is per_batch
    assert weighting.image_boost == image_boost
    assert weighting.loss_name == loss.name and weighting.pixel_weighted is loss.pixel_weighted
    np.testing.assert_array_equal(weighting.class_weights, WEIGHTS)
    if pixel_maps is None:
        assert weighting.pixel_maps is None
    else:
        np.testing.assert_array_equal(weighting.pixel_maps, pixel_maps)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"scheme": "per_batch"}, "per_batch"),
        ({"image_boost_class": "rare"}, "image_boost_class"),
        ({"scheme": "per_batch", "image_boost_class": "rare"}, "per_batch"),
    ],
)
def test_per_pixel_modes_with_a_region_loss_are_refused_naming_option_and_loss(options, option):
    with pytest.raises(ValueError) as error:
        WeightScheme(**options).weighting(None, NAMES, FakeLoss("lovasz", False))
    assert str(error.value) == (
        f"class_weights {option} builds per-pixel weight maps, but loss 'lovasz' takes no pixel "
        "weights; use it with a pixelwise loss (ce, focal, ce_dice)"
    )


def test_the_default_weighting_is_plain_pixel_weighting_with_nothing_to_weigh():
    default = Weighting()
    assert (default.pixel_weighted, default.loss_name, default.per_batch) == (True, "loss", False)
    assert default.class_weights is None and default.image_boost is None
    assert default.pixel_maps is None


def test_an_absent_class_under_enet_gets_the_largest_weight_of_the_present_classes():
    # ENet gives a class of share 0 the finite weight 1 / ln(1.02) = 50.5; the fill takes the
    # largest weight of the classes that occur instead (rare: share 10 / 100).
    with pytest.warns(UserWarning, match=r"classes \['d'\] never occur"):
        filled = WeightScheme("enet", normalize="none")(WITH_ABSENT, ["a", "b", "c", "d"])
    np.testing.assert_allclose(filled[3], 1 / np.log(1.02 + 0.1), rtol=1e-12)


def test_weights_all_zero_are_refused_showing_each_class_weight():
    with pytest.raises(ValueError) as error:
        WeightScheme("manual", weights=[0, 0, 0])(COUNTS, NAMES)
    assert str(error.value) == (
        "class_weights=manual: weights must be finite, >= 0 and not all 0, got "
        "{'bg': 0.0, 'thing': 0.0, 'rare': 0.0}"
    )


def test_manual_without_weights_says_what_it_needs():
    with pytest.raises(ValueError) as error:
        WeightScheme("manual")
    assert str(error.value) == "class_weights=manual needs class_weights.weights (list or mapping)"
