"""The hidden-failure verdict on epoch histories: who is named, and the edges of each threshold."""

import math

import numpy as np
import pytest

from seglab.core.verdicts import HiddenFailureRule, hidden_classes, loss_drop

NAN = math.nan
CAMVID = [
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign_symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
]
CAMVID_SUPPORT = [1] * 11
SHAPES = ["background", "disk", "square", "bar", "speck"]

# (val loss per epoch, final IoU per class, val pixels per class, rule, expected class indices)
CASES = {
    # Plain CE on CamVid, small U-Net, 12 epochs: five classes at 0 while the loss halves.
    "camvid_ce_small_unet_names_all_five": (
        [1.48, 1.21, 1.05, 0.93, 0.85, 0.80, 0.78, 0.76, 0.75, 0.74, 0.73, 0.73],
        [0.85, 0.62, 0.0, 0.86, 0.45, 0.61, 0.0, 0.0, 0.42, 0.0, 0.0],
        CAMVID_SUPPORT,
        HiddenFailureRule(),
        [2, 6, 7, 9, 10],
    ),
    # Plain CE, bigger U-Net: three classes at <= 0.001; pedestrian 0.150 and fence 0.528 learn.
    "camvid_ce_big_unet_names_three": (
        [0.91, 0.62, 0.50, 0.42, 0.349],
        [0.88, 0.70, 0.001, 0.90, 0.62, 0.68, 0.001, 0.528, 0.66, 0.150, 0.000],
        CAMVID_SUPPORT,
        HiddenFailureRule(),
        [2, 6, 10],
    ),
    "every_class_learns": (
        [1.2, 0.7, 0.5],
        [0.9, 0.8, 0.4, 0.7, 0.3],
        [9, 5, 3, 2, 1],
        HiddenFailureRule(),
        [],
    ),
    "one_epoch_has_no_trajectory": ([0.5], [0.9, 0.0], [9, 1], HiddenFailureRule(), []),
    "rising_loss_shows_the_trouble_itself": (
        [0.5, 0.55, 0.6],
        [0.9, 0.0],
        [9, 1],
        HiddenFailureRule(),
        [],
    ),
    "stalled_loss_below_the_drop_is_not_improved": (
        [1.0, 0.95, 0.91],  # fell by 9 %
        [0.9, 0.0],
        [9, 1],
        HiddenFailureRule(),
        [],
    ),
    "drop_exactly_at_the_threshold_counts": (
        [1.0, 0.75],
        [0.9, 0.0],
        [9, 1],
        HiddenFailureRule(min_loss_drop=0.25),
        [1],
    ),
    "iou_exactly_at_the_floor_is_not_failing": (
        [1.0, 0.5],
        [0.9, 0.25, 0.125],
        [9, 1, 1],
        HiddenFailureRule(iou_floor=0.25),
        [2],
    ),
    "class_without_val_pixels_is_never_named": (
        [1.0, 0.5],
        [0.9, NAN, 0.0],  # absent and never predicted: NaN; absent but predicted: 0
        [9, 0, 0],
        HiddenFailureRule(),
        [],
    ),
    "nan_final_loss_is_not_an_improvement": (
        [1.0, NAN],
        [0.9, 0.0],
        [9, 1],
        HiddenFailureRule(),
        [],
    ),
    "first_loss_zero_has_no_relative_drop": (
        [0.0, -0.1],
        [0.9, 0.0],
        [9, 1],
        HiddenFailureRule(),
        [],
    ),
    # bce_minus_dice is negative: the drop is relative to |first loss|.
    "negative_loss_that_falls_is_improved": (
        [-0.5, -1.2, -1.9],
        [0.99, 0.97, 0.95, 0.96, 0.05],
        [9, 5, 3, 2, 1],
        HiddenFailureRule(),
        [4],
    ),
    "every_failing_class_not_only_the_worst": (
        [0.8, 0.2],
        [0.95, 0.02, 0.09, 0.5, 0.0],
        [9, 5, 3, 2, 1],
        HiddenFailureRule(),
        [1, 2, 4],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hidden_classes(case):
    losses, iou, support, rule, expected = CASES[case]
    assert hidden_classes(losses, iou, support, rule) == expected


def test_camvid_like_failing_run_is_named_by_class():
    losses, iou, support, rule, _ = CASES["camvid_ce_small_unet_names_all_five"]
    names = [CAMVID[c] for c in hidden_classes(losses, iou, support, rule)]
    assert names == ["pole", "sign_symbol", "fence", "pedestrian", "bicyclist"]


@pytest.mark.parametrize(
    ("losses", "expected"),
    [([1.48, 0.73], 0.75 / 1.48), ([-0.5, -1.9], 2.8), ([0.5, 0.6], -0.2), ([0.5], NAN)],
)
def test_loss_drop_is_relative_to_the_first_epoch(losses, expected):
    assert loss_drop(losses) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iou_floor": 0.0}, r"iou_floor must be in \(0, 1\], got 0.0"),
        ({"iou_floor": 1.5}, r"iou_floor must be in \(0, 1\], got 1.5"),
        ({"min_loss_drop": -0.1}, r"min_loss_drop must be >= 0, got -0.1"),
    ],
)
def test_bad_thresholds_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HiddenFailureRule(**kwargs)


def test_the_loosest_thresholds_are_allowed():
    rule = HiddenFailureRule(iou_floor=1.0, min_loss_drop=0.0)
    # a stalled loss counts as "improved" at min_loss_drop=0; any IoU below 1 fails
    assert hidden_classes([0.5, 0.5], [1.0, 0.99, np.nan], [5, 5, 5], rule) == [1]


def test_the_loss_drop_runs_from_the_first_to_the_last_epoch():
    assert loss_drop([1.0, 0.2, 0.5]) == pytest.approx(0.5)  # not the best epoch's 0.8


@pytest.mark.parametrize("losses", [[NAN, 0.3], [1.0, NAN], [1.0, np.inf], [0.0, -1.0]])
def test_no_trajectory_no_verdict(losses):
    assert np.isnan(loss_drop(losses))
    assert hidden_classes(losses, [0.9, 0.0], [5, 5], HiddenFailureRule()) == []
