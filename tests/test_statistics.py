"""Intervals over seeds and the paired bootstrap over images, against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from seglab.core.per_image import PerImageCounts
from seglab.core.scores import iou as iou_from_sums
from seglab.core.statistics import (
    Interval,
    paired_bootstrap,
    paired_difference,
    seed_summary,
    t_interval,
)

NAN = math.nan
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")
# Student-t 0.975 quantiles from a printed table: df 1, 2, 4.
T1, T2, T4 = 12.7062, 4.3027, 2.7764

# (values, n, mean, sd, half-width of the 95 % interval)
INTERVAL_CASES = {
    "three_seeds": ([1.0, 2.0, 3.0], 3, 2.0, 1.0, T2 / math.sqrt(3)),
    "two_seeds": ([0.2, 0.4], 2, 0.3, math.sqrt(0.02), T1 * math.sqrt(0.02) / math.sqrt(2)),
    "five_seeds": (
        [0.1, 0.2, 0.3, 0.4, 0.5],
        5,
        0.3,
        math.sqrt(0.025),
        T4 * math.sqrt(0.025) / math.sqrt(5),
    ),
    "identical_seeds": ([0.5, 0.5, 0.5], 3, 0.5, 0.0, 0.0),
    "one_seed_has_no_interval": ([0.7], 1, 0.7, NAN, NAN),
    "nan_values_are_dropped": ([0.2, NAN, 0.4], 2, 0.3, math.sqrt(0.02), T1 * 0.1),
    "no_values": ([], 0, NAN, NAN, NAN),
}


@pytest.mark.parametrize("case", sorted(INTERVAL_CASES))
def test_t_interval(case):
    values, n, mean, sd, half = INTERVAL_CASES[case]
    got = t_interval(values)
    assert got.n == n
    assert got.mean == pytest.approx(mean, nan_ok=True)
    assert got.sd == pytest.approx(sd, nan_ok=True)
    assert got.half_width == pytest.approx(half, rel=1e-4, nan_ok=True)
    if not math.isnan(half):
        assert (got.low + got.high) / 2 == pytest.approx(mean)


@pytest.mark.parametrize("value", [0.95, 0.1, 0.7, 1 / 3])
def test_seeds_that_agree_have_no_spread_even_when_binary_floats_round(value):
    # numpy's two-pass std gives 1.4e-16 for three 0.95s, which a report prints as "± 3.3e-16"
    got = t_interval([value] * 3)
    assert (got.mean, got.sd, got.low, got.high) == (value, 0.0, value, value)
    assert got.format() == f"{value:.3f} ± 0.000"


def test_welch_difference_of_agreeing_seeds_is_a_point():
    got = paired_difference(pd.Series([0.95] * 3), pd.Series([0.1] * 2, index=[7, 8]))
    assert (got.low, got.high) == (got.mean, got.mean) == (pytest.approx(-0.85),) * 2


def test_paired_difference_pairs_by_seed():
    a = pd.Series({0: 0.10, 1: 0.20, 2: 0.30})
    b = pd.Series({2: 0.50, 0: 0.30, 1: 0.35})  # order does not matter, seeds do
    got = paired_difference(a, b)  # differences 0.2, 0.15, 0.2
    assert got.mean == pytest.approx(0.55 / 3)
    assert got.half_width == pytest.approx(T2 * 0.0288675 / math.sqrt(3), rel=1e-4)
    assert got.excludes_zero()


def test_unpaired_difference_uses_welch():
    a = pd.Series({0: 1.0, 1: 2.0, 2: 3.0})
    b = pd.Series({5: 2.0, 6: 4.0, 7: 6.0})
    got = paired_difference(a, b)
    from scipy import stats

    # Welch by hand: se^2 = 1/3 + 4/3, df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    se = math.sqrt(5 / 3)
    assert got.mean == pytest.approx(2.0)
    assert got.half_width == pytest.approx(stats.t.ppf(0.975, 50 / 17) * se, rel=1e-9)
    assert not got.excludes_zero()


# a, b (Series: index = seed), then the expected Interval of b - a: n, mean, sd, low, high.
# Welch ends from scipy.stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95).
DIFFERENCE_CASES = {
    "two_paired_seeds": (
        {0: 0.1, 1: 0.2},
        {1: 0.5, 0: 0.3},
        (2, 0.25, math.sqrt(0.005), 0.25 - T1 * 0.05, 0.25 + T1 * 0.05),
    ),
    "welch_three_against_two": (
        {0: 0.1, 1: 0.3},
        {5: 0.4, 6: 0.6, 7: 0.65},
        (2, 0.55 - 0.2, NAN, -0.15833425995609313, 0.858334259956093),
    ),
    "welch_two_against_three": (
        {0: 0.1, 1: 0.3, 2: 0.2},
        {5: 0.4, 6: 0.6},
        (2, 0.3, NAN, -0.29769974482583705, 0.8976997448258369),
    ),
    "shared_seeds_but_one_extra_is_unpaired": (
        {0: 0.1, 1: 0.3},
        {0: 0.4, 1: 0.6, 2: 0.65},
        (2, 0.55 - 0.2, NAN, -0.15833425995609313, 0.858334259956093),
    ),
    "one_value_against_two": ({0: 0.1}, {0: 0.3, 1: 0.4}, (1, 0.25, NAN, NAN, NAN)),
    "two_values_against_one": ({0: 0.1, 1: 0.2}, {3: 0.4}, (1, 0.25, NAN, NAN, NAN)),
    "no_spread_on_either_side": (
        {0: 0.2, 1: 0.2},
        {4: 0.5, 5: 0.5, 6: 0.5},
        (2, 0.3, 0.0, 0.3, 0.3),
    ),
    "nans_are_dropped_before_pairing": (
        {0: 0.1, 1: 0.2, 2: NAN},
        {0: 0.3, 1: 0.5},
        (2, 0.25, math.sqrt(0.005), 0.25 - T1 * 0.05, 0.25 + T1 * 0.05),
    ),
}


@pytest.mark.parametrize("case", sorted(DIFFERENCE_CASES))
def test_paired_difference(case):
    a, b, expected = DIFFERENCE_CASES[case]
    got = paired_difference(pd.Series(a), pd.Series(b))
    assert isinstance(got.n, int) and isinstance(got.sd, float)
    assert (got.n, got.mean, got.sd, got.low, got.high) == pytest.approx(
        expected, rel=1e-4, nan_ok=True
    )


def test_one_seed_gives_no_interval_and_never_excludes_zero():
    got = paired_difference(pd.Series({0: 0.0}), pd.Series({0: 0.5}))
    assert got.mean == 0.5 and math.isnan(got.low) and not got.excludes_zero()


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (Interval(3, 0.5123, 0.1, 0.48, 0.5446), "0.512 ± 0.032"),
        (Interval(1, 0.5, NAN, NAN, NAN), "0.500"),
        # a tiny loss is shown, not rounded to zero; an exact zero stays 0.000
        (Interval(2, 3.2e-5, 1e-6, 2.2e-5, 4.2e-5), "3.2e-05 ± 1e-05"),
        (Interval(2, 0.0, 0.0, 0.0, 0.0), "0.000 ± 0.000"),
        (Interval(1, -4e-5, NAN, NAN, NAN), "-4e-05"),
    ],
)
def test_interval_format(interval, text):
    assert interval.format() == text


def test_seed_summary_groups_by_configuration():
    runs = pd.DataFrame(
        {
            "configuration": ["ce", "ce", "ce", "dice"],
            "min_iou": [0.0, 0.1, 0.2, 0.5],
            "miou": [0.7, 0.8, 0.9, 0.95],
        }
    )
    table = seed_summary(runs, ["min_iou", "miou"]).set_index(["configuration", "metric"])
    assert table.loc[("ce", "min_iou"), "n"] == 3
    assert table.loc[("ce", "min_iou"), "mean"] == pytest.approx(0.1)
    assert table.loc[("ce", "miou"), "ci_high"] == pytest.approx(
        0.8 + T2 * 0.1 / math.sqrt(3), rel=1e-4
    )
    assert table.loc[("dice", "miou"), "n"] == 1 and math.isnan(
        table.loc[("dice", "miou"), "ci_low"]
    )


# ------------------------------------------------------------------ paired bootstrap over images
def counts(tp, fp, fn, names=None):
    tp, fp, fn = (np.asarray(x, dtype=np.int64) for x in (tp, fp, fn))
    names = names or tuple(f"img{i}" for i in range(len(tp)))
    return PerImageCounts(tuple(names), tp, fp, fn)


def test_bootstrap_with_a_constant_difference_has_a_point_interval():
    images = 40
    ones = np.ones((images, 1), int)
    found = counts(
        np.hstack([ones * 90, ones * 10]), 0 * np.hstack([ones, ones]), 0 * np.hstack([ones, ones])
    )
    missed = counts(
        np.hstack([ones * 90, ones * 0]),
        np.hstack([ones * 10, ones * 0]),
        np.hstack([ones * 0, ones * 10]),
    )
    table = paired_bootstrap(found, missed, ["bg", "rare"], resamples=200).set_index("class")
    assert table.loc["rare", ["iou_a", "iou_b", "difference", "ci_low", "ci_high"]].tolist() == [
        1.0,
        0.0,
        -1.0,
        -1.0,
        -1.0,
    ]
    assert table.loc["bg", "difference"] == pytest.approx(90 / 100 - 1.0)
    assert table.loc["rare", "images"] == images


def test_bootstrap_recovers_a_known_difference_and_excludes_zero():
    rng = np.random.default_rng(0)
    images, pixels = 60, 20
    tp_a = rng.binomial(pixels, 0.8, images)
    tp_b = rng.binomial(pixels, 0.5, images)
    a = counts(tp_a[:, None], np.zeros((images, 1)), (pixels - tp_a)[:, None])
    b = counts(tp_b[:, None], np.zeros((images, 1)), (pixels - tp_b)[:, None])
    row = paired_bootstrap(a, b, ["c"]).iloc[0]
    assert row.difference == pytest.approx(tp_b.sum() / 1200 - tp_a.sum() / 1200)
    assert row.ci_low <= -0.3 <= row.ci_high  # the true difference 0.5 - 0.8
    assert row.ci_high < 0


def test_bootstrap_of_two_draws_of_one_model_covers_zero():
    rng = np.random.default_rng(1)
    images, pixels = 60, 20
    draws = [rng.binomial(pixels, 0.6, images) for _ in range(2)]
    a, b = (counts(tp[:, None], np.zeros((images, 1)), (pixels - tp)[:, None]) for tp in draws)
    row = paired_bootstrap(a, b, ["c"]).iloc[0]
    assert row.ci_low < 0 < row.ci_high


def test_bootstrap_pairs_images_by_name_not_position():
    a = counts([[1], [0]], [[0], [0]], [[0], [1]], names=["x", "y"])
    b = counts([[0], [1]], [[0], [0]], [[1], [0]], names=["y", "x"])  # the same results
    row = paired_bootstrap(a, b, ["c"], resamples=100).iloc[0]
    assert (row.difference, row.ci_low, row.ci_high) == (0.0, 0.0, 0.0)


def test_bootstrap_refuses_runs_scored_on_different_images():
    a = counts([[1]], [[0]], [[0]], names=["x"])
    b = counts([[1]], [[0]], [[0]], names=["z"])
    with pytest.raises(ValueError, match="scored on different images"):
        paired_bootstrap(a, b, ["c"])


@pytest.mark.parametrize(
    ("low", "high", "excludes"),
    [(0.1, 0.3, True), (-0.3, -0.1, True), (0.0, 1.0, False), (-1.0, 0.0, False)],
)
def test_an_interval_touching_zero_does_not_exclude_it(low, high, excludes):
    assert Interval(3, (low + high) / 2, 0.1, low, high).excludes_zero() is excludes


def test_seed_summary_keeps_the_configurations_order_and_every_column():
    runs = pd.DataFrame({"configuration": ["z", "a", "z", "a"], "miou": [0.7, 0.5, 0.9, 0.5]})
    table = seed_summary(runs, ["miou"])
    assert list(table.columns) == [
        "configuration",
        "metric",
        "n",
        "mean",
        "sd",
        "ci_low",
        "ci_high",
    ]
    assert list(table.configuration) == ["z", "a"]  # as the runs come, not sorted
    z = table.iloc[0]
    half = T1 * math.sqrt(0.02) / math.sqrt(2)  # sd of 0.7 and 0.9 is sqrt(0.02)
    assert (z.n, z["mean"], z.sd) == (2, pytest.approx(0.8), pytest.approx(math.sqrt(0.02)))
    assert (z.ci_low, z.ci_high) == pytest.approx((0.8 - half, 0.8 + half), rel=1e-4)
    assert seed_summary(runs.iloc[:0], ["miou"]).columns.tolist() == table.columns.tolist()


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "expected"),
    [
        (1, 0, 0, 1.0),  # a class on one pixel, found
        (0, 1, 0, 0.0),  # predicted on one pixel, absent
        (0, 0, 1, 0.0),  # on one pixel, missed
        (3, 1, 2, 0.5),
        (0, 0, 0, NAN),  # neither true nor predicted: undefined
    ],
)
def test_iou_from_sums_on_a_table(tp, fp, fn, expected):
    (iou,) = iou_from_sums(np.array([tp]), np.array([fp]), np.array([fn]))
    np.testing.assert_equal(iou, expected)


def test_paired_bootstrap_defaults_to_2000_resamples_seeded_0():
    rng = np.random.default_rng(3)
    a, b = (
        PerImageCounts(tuple("abcdefgh"), *(rng.integers(0, 9, (8, 2)) for _ in range(3)))
        for _ in range(2)
    )
    default = paired_bootstrap(a, b, ["x", "y"])
    pd.testing.assert_frame_equal(default, paired_bootstrap(a, b, ["x", "y"], 2000, 0))
    other = paired_bootstrap(a, b, ["x", "y"], 2001, 0)
    assert not other[["ci_low", "ci_high"]].equals(default[["ci_low", "ci_high"]])
