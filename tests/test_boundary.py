"""Boundary IoU, HD95, normalized surface Dice and calibration per class, against the references:
literal values printed by the authors' ``boundary-iou-api`` (``mask_to_boundary``, with OpenCV)
and by MONAI 1.6.1 (``compute_hausdorff_distance(percentile=95)``, ``compute_surface_dice`` with
tolerance 1, ``CalibrationErrorMetric(num_bins=15, calibration_reduction="expected")``, float32
on PyTorch 2.13) on the same masks, plus seglab's conventions where the references say nothing
(or NaN by accident)."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from seglab.core.boundary import (
    SurfaceScores,
    boundary_width,
    edges,
    hd95,
    inner_boundary,
    rings,
    surface_dice,
)
from seglab.core.calibration import Calibration

H, W = 12, 14
INF, NAN = math.inf, math.nan


def rect(top, left, h, w, shape=(H, W)):
    mask = np.zeros(shape, dtype=np.int64)
    mask[top : top + h, left : left + w] = 1
    return mask


def line(column):
    mask = np.zeros((H, W), dtype=np.int64)
    mask[2:10, column] = 1
    return mask


def random_maps():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (H, W))
    return truth, np.where(rng.random((H, W)) < 0.7, truth, rng.integers(0, 3, (H, W)))


# name: (truth, prediction, classes, boundary IoU, HD95, NSD at 1 px), per class
TEST_CASES = {
    "one_pixel_shift": (
        rect(3, 3, 5, 6), rect(3, 4, 5, 6), 2, [0.72093, 0.384615], [1.0, 1.0], [1.0, 1.0]
    ),
    # MONAI says NaN for class 1's HD95 (torch.quantile over infinite distances); a class
    # missed entirely is the worst case: infinite
    "empty_prediction": (
        rect(3, 3, 5, 6), np.zeros((H, W), np.int64), 2,
        [0.648649, 0.0], [3.549995, INF], [0.813559, 0.0],
    ),
    "thin_line_two_off": (line(5), line(7), 2, [0.707317, 0.0], [2.0, 2.0], [0.878788, 0.0]),
    "touching_the_border": (
        rect(0, 0, 4, 5), rect(0, 0, 5, 6), 2,
        [0.655172, 0.333333], [1.0, 1.062132], [0.978723, 0.96875],
    ),
    "random_three_classes": (
        *random_maps(), 3,
        [0.533333, 0.618421, 0.635135], [2.0, 1.414214, 1.414214], [0.880435, 0.958678, 0.95],
    ),
    "larger_image_width_2": (
        rect(2, 2, 40, 50, (64, 80)), rect(4, 1, 40, 52, (64, 80)), 2,
        [0.568548, 0.12987], [2.0, 2.0], [0.830718, 0.44382],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", TEST_CASES)
def test_each_score_equals_its_reference(name):
    truth, prediction, classes, biou, distance, nsd = TEST_CASES[name]
    scores = SurfaceScores(classes, tolerance=1.0)
    scores.add(truth[None], prediction[None])
    np.testing.assert_allclose(scores.boundary_iou(), biou, rtol=0, atol=5e-7)
    np.testing.assert_allclose(scores.hd95(), distance, rtol=2e-6)  # MONAI is float32
    np.testing.assert_allclose(scores.nsd(), nsd, rtol=2e-6)


def test_a_perfect_prediction_scores_one_and_zero_distance():
    truth, _ = random_maps()
    scores = SurfaceScores(3)
    scores.add(truth[None], truth[None])
    assert scores.boundary_iou().tolist() == [1.0] * 3
    assert scores.hd95().tolist() == [0.0] * 3 and scores.nsd().tolist() == [1.0] * 3


def test_a_class_in_neither_is_nan_and_in_one_only_the_worst_value():
    truth = rect(3, 3, 5, 6)  # classes 0 and 1; class 2 nowhere
    scores = SurfaceScores(3)
    scores.add(truth[None], np.zeros_like(truth)[None])
    biou, distance, nsd = scores.boundary_iou(), scores.hd95(), scores.nsd()
    assert math.isnan(biou[2]) and math.isnan(distance[2]) and math.isnan(nsd[2])
    assert (biou[1], distance[1], nsd[1]) == (0.0, INF, 0.0)
    empty, square = np.zeros((4, 4), bool), rect(0, 0, 2, 2, (4, 4)) > 0
    assert math.isnan(hd95(empty, empty)) and math.isnan(surface_dice(empty, empty, 1.0))
    assert hd95(square, square) == 0.0 and hd95(empty, square) == INF


def test_ignored_pixels_are_neither_truth_nor_prediction():
    truth, prediction = rect(3, 3, 5, 6), rect(3, 4, 5, 6)
    ignored = truth.copy()
    ignored[:, 10:] = 255  # a band the model predicts as class 1: it must not count
    wider = prediction.copy()
    wider[:, 10:] = 1
    plain, masked = SurfaceScores(2), SurfaceScores(2)
    plain.add(
        np.where(ignored == 255, 255, truth)[None], np.where(ignored == 255, 0, prediction)[None]
    )
    masked.add(ignored[None], wider[None])
    for a, b in ((plain.boundary_iou(), masked.boundary_iou()), (plain.hd95(), masked.hd95())):
        np.testing.assert_array_equal(a, b)


def test_the_split_sums_boundary_pixels_and_averages_distances_over_images():
    first, second = TEST_CASES["one_pixel_shift"], TEST_CASES["thin_line_two_off"]
    scores = SurfaceScores(2)
    scores.add(np.stack([first[0], second[0]]), np.stack([first[1], second[1]]))
    alone = [SurfaceScores(2) for _ in range(2)]
    for s, case in zip(alone, (first, second), strict=True):
        s.add(case[0][None], case[1][None])
    inter = sum(s.intersection for s in alone)
    np.testing.assert_allclose(scores.boundary_iou(), inter / sum(s.union for s in alone))
    np.testing.assert_allclose(scores.hd95(), [1.5, 1.5])  # (1 + 2) / 2 for both classes
    np.testing.assert_allclose(scores.nsd(), (np.array(first[5]) + second[5]) / 2)


def brute_force(truth, prediction, classes, tolerance):
    """Per image and class ``(HD95, NSD)`` from every pair of edge pixels (``cdist``) and
    ``np.percentile``: the formula, with none of the lookups or trees."""
    scores = []
    for t, p in zip(truth, prediction, strict=True):
        for c in range(classes):
            a, b = np.argwhere(edges(p == c)), np.argwhere(edges(t == c))
            if not len(a) or not len(b):
                scores.append((NAN, NAN) if not len(a) and not len(b) else (INF, 0.0))
                continue
            pairs = cdist(a, b)
            to_true, to_pred = pairs.min(1), pairs.min(0)
            distance = max(np.percentile(to_true, 95), np.percentile(to_pred, 95))
            near = (to_true <= tolerance).sum() + (to_pred <= tolerance).sum()
            scores.append((distance, near / (len(a) + len(b))))
    return np.array(scores).reshape(len(truth), classes, 2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shift", [(0, 1), (3, 4), (9, -7)])
def test_distances_near_and_far_equal_every_pair_of_edge_pixels(shift, threads):
    """Edges within 3 px are looked up, farther ones come from a k-d tree, over several images
    and classes at once (one class missing from some predictions): both equal brute force."""
    rng = np.random.default_rng(sum(shift) + 10)
    smooth = ndimage.gaussian_filter(rng.normal(size=(3, 30, 36, 4)), (0, 4, 4, 0))
    truth = smooth.argmax(-1)
    prediction = np.roll(truth, shift, axis=(1, 2))
    prediction[1][prediction[1] == 3] = 0
    scores = SurfaceScores(4, tolerance=2.0, threads=threads)  # 2: the halves of the batch
    scores.add(truth, prediction)
    expected = brute_force(truth, prediction, 4, 2.0)
    np.testing.assert_allclose(np.array(scores.distances).T, expected[..., 0], rtol=1e-12)
    np.testing.assert_allclose(np.array(scores.surface).T, expected[..., 1], rtol=1e-12)
    if shift == (9, -7):
        assert np.nanmax(expected[..., 0][np.isfinite(expected[..., 0])]) > 3  # the tree's part


def eroded_boundary_iou(truth, prediction, classes, width):
    """Boundary IoU from the paper's definition, class by class: a mask minus its erosion by
    ``width`` 3x3 squares, outside the image counting as background (``border_value=0``, as
    OpenCV's ``erode`` over the zero-padded mask in ``boundary-iou-api``)."""
    square = np.ones((3, 3), bool)
    inter, union = np.zeros(classes), np.zeros(classes)
    for t, p in zip(truth, prediction, strict=True):
        for c in range(classes):
            bands = []
            for mask in (t == c, p == c):
                eroded = ndimage.binary_erosion(mask, square, iterations=width, border_value=0)
                bands.append(mask & ~eroded)
            inter[c] += (bands[0] & bands[1]).sum()
            union[c] += (bands[0] | bands[1]).sum()
    return inter / union


@pytest.mark.parametrize(("ratio", "width"), [(0.02, 3), (0.04, 6), (0.1, 15)])
def test_wide_boundary_bands_equal_the_erosion_of_each_class(ratio, width):
    """Every class's band at once (the 8-neighbour band grown by ``width - 1`` squares) equals
    eroding each class's mask ``width`` times, on several images of a smooth random map."""
    rng = np.random.default_rng(width)
    smooth = ndimage.gaussian_filter(rng.normal(size=(3, 96, 120, 5)), (0, 6, 6, 0))
    truth = smooth.argmax(-1)
    prediction = np.roll(truth, (2, -3), axis=(1, 2))
    assert boundary_width(96, 120, ratio) == width
    scores = SurfaceScores(5, ratio=ratio)
    scores.add(truth, prediction)
    expected = eroded_boundary_iou(truth, prediction, 5, width)
    np.testing.assert_allclose(scores.boundary_iou(), expected, rtol=1e-12)


def test_the_near_lookup_visits_offsets_ring_by_ring_nearest_first():
    near = rings(3)
    assert [length for length, _ in near] == sorted(
        {math.hypot(y, x) for y in range(4) for x in range(4) if math.hypot(y, x) <= 3}
    )
    assert near[0] == (0.0, [(0, 0)]) and sum(len(o) for _, o in near) == 29


@pytest.mark.parametrize(
    ("size", "ratio", "width"), [((12, 14), 0.02, 1), ((64, 80), 0.02, 2), ((360, 480), 0.02, 12)]
)
def test_the_boundary_width_is_two_percent_of_the_diagonal_and_at_least_one(size, ratio, width):
    assert boundary_width(*size, ratio) == width


def test_the_boundary_is_the_border_band_and_edges_the_outline():
    square = rect(0, 0, 5, 5, (7, 7)) > 0
    assert inner_boundary(square, 1).sum() == 25 - 9  # the image border is background: 3x3 left
    assert edges(square).sum() == 16
    assert not inner_boundary(np.zeros((3, 3), bool), 1).any()
    assert surface_dice(square, square, 0.0) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be >= 1, got 0"),
        ({"num_classes": 2, "ratio": 0}, "the boundary width ratio must be > 0, got 0"),
        ({"num_classes": 2, "tolerance": -1}, "the surface Dice tolerance must be >= 0, got -1"),
        ({"num_classes": 2, "threads": 0}, "threads must be >= 1, got 0"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SurfaceScores(**kwargs)


def softmax_maps():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 7, 3)) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    truth = rng.integers(0, 3, (2, 6, 7))
    truth[0, :2, :3] = 255
    return probabilities, truth


def test_the_calibration_error_equals_monais_on_the_valid_pixels():
    calibration = Calibration(3)
    calibration.add(*softmax_maps())
    np.testing.assert_allclose(calibration.ece(), [0.340725, 0.254258, 0.388857], atol=5e-7)


def test_calibration_is_perfect_for_certain_right_answers_and_worst_for_certain_wrong_ones():
    truth = np.array([[[0, 1], [1, 255]]])
    right = np.eye(2)[np.where(truth == 255, 0, truth)]
    perfect, worst = Calibration(2), Calibration(2)
    perfect.add(right, truth)
    worst.add(1 - right, truth)
    assert perfect.ece().tolist() == [0.0, 0.0] and worst.ece().tolist() == [1.0, 1.0]
    assert np.isnan(Calibration(2).ece()).all()  # no pixel yet


def test_the_reliability_data_holds_every_bin_of_every_class():
    calibration = Calibration(3)
    probabilities, truth = softmax_maps()
    calibration.add(probabilities, truth)
    table = calibration.reliability(["a", "b", "c"])
    assert len(table) == 45 and table.pixels.sum() == 3 * (84 - 6)
    rows = table[table.pixels > 0]
    gap = (rows.pixels * (rows.mean_probability - rows.truly_class).abs()).groupby(rows["class"])
    np.testing.assert_allclose(gap.sum() / (84 - 6), calibration.ece())
