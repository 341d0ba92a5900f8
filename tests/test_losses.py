"""Every loss against an independent NumPy formula, Keras built-ins, edge cases and properties."""

from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf

from seglab.core.scores import scores_from_confusion
from seglab.losses import (
    BatchCountWeightedCE,
    BCEMinusDice,
    CEDice,
    CrossEntropy,
    Dice,
    FocalLoss,
    FocalTversky,
    GeneralizedDice,
    Lovasz,
    Tversky,
    build_loss,
)

C = 4
IGNORE = 255
EPS = 1e-7


# ---------------------------------------------------------------- NumPy references (the papers)
def np_inputs(labels, probs, ignore=None):
    valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    one_hot = np.eye(probs.shape[-1])[np.where(valid, labels, 0)] * valid[..., None]
    return one_hot, valid.astype(float), probs.astype(np.float64)


def np_pixel_mean(per_pixel, valid, weights=None):
    w = valid if weights is None else valid * weights
    return (per_pixel * w).sum() / valid.sum()


def np_ce(labels, probs, weights=None, ignore=None):
    g, v, p = np_inputs(labels, probs, ignore)
    p = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return np_pixel_mean(-(g * np.log(p)).sum(-1), v, weights)


def np_focal(labels, probs, gamma=2.0, alpha=0.25, ignore=None):
    g, v, p = np_inputs(labels, probs, ignore)
    p = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return np_pixel_mean((g * alpha * (1 - p) ** gamma * -np.log(p)).sum(-1), v)


def class_mean(losses, weights=None, include_background=True):
    w = np.ones(len(losses)) if weights is None else np.asarray(weights, float).copy()
    if not include_background:
        w[0] = 0
    return (w * losses).sum() / w.sum()


def np_dice(
    labels, probs, smooth=1e-5, squared=False, weights=None, include_background=True, ignore=None
):
    g, v, p = np_inputs(labels, probs, ignore)
    p = p * v[..., None]
    axes = (0, 1, 2)
    dice = (2 * (g * p).sum(axes) + smooth) / (
        (p ** (2 if squared else 1)).sum(axes) + g.sum(axes) + smooth
    )
    return class_mean(1 - dice, weights, include_background)


def np_generalized_dice(labels, probs, smooth=1e-5, ignore=None, include_background=True):
    """Sudre et al.'s formula over the classes that take part, absent classes handled as
    MONAI's GeneralizedDiceLoss(batch=True) does (the largest finite weight, else 0)."""
    g, v, p = np_inputs(labels, probs, ignore)
    p = p * v[..., None]
    if not include_background:
        g, p = g[..., 1:], p[..., 1:]
    volume = g.sum((0, 1, 2))
    with np.errstate(divide="ignore"):
        w = 1.0 / volume**2
    finite = np.isfinite(w)
    w[~finite] = w[finite].max() if finite.any() else 0.0
    intersection, union = (g * p).sum((0, 1, 2)), (g + p).sum((0, 1, 2))
    return 1 - (2 * (w * intersection).sum() + smooth) / ((w * union).sum() + smooth)


def np_tversky(labels, probs, alpha=0.3, beta=0.7, smooth=1e-5, gamma=1.0, ignore=None):
    g, v, p = np_inputs(labels, probs, ignore)
    p = p * v[..., None]
    axes = (0, 1, 2)
    tp, fp, fn = (g * p).sum(axes), (p * (1 - g)).sum(axes), ((1 - p) * g).sum(axes)
    ti = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return np.mean(np.maximum(1 - ti, 1e-7 if gamma != 1.0 else 0) ** gamma)


def np_lovasz_grad(gt_sorted):
    """Transcribed from bermanmaxim/LovaszSoftmax (lovasz_losses.py)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def np_lovasz(labels, probs, ignore=None):
    """lovasz_softmax_flat, classes='present': ignored pixels dropped, as the reference does."""
    keep = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    lab, p = labels[keep], probs[keep].astype(np.float64)
    losses = []
    for c in range(p.shape[-1]):
        fg = (lab == c).astype(float)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - p[:, c])
        order = np.argsort(-errors, kind="stable")
        losses.append(errors[order] @ np_lovasz_grad(fg[order]))
    return float(np.mean(losses)) if losses else 0.0


def np_bce_minus_dice(labels, probs, smooth=1.0, weights=None, ignore=None):
    g, v, p = np_inputs(labels, probs, ignore)
    pc = np.clip(p, EPS, 1 - EPS)
    bce = -(g * np.log(pc) + (1 - g) * np.log(1 - pc)).mean(-1)
    pm = p * v[..., None]
    dice = (2 * (g * pm).sum() + smooth) / (g.sum() + pm.sum() + smooth)
    return np_pixel_mean(bce - 1 - dice, v, weights)


def np_batch_count_weighted_ce(labels, probs, weight_by="truth", ignore=None):
    """The one-class-everywhere question's loss as written: w_c = B / (count_c + eps) from the
    batch, probabilities renormalised and clipped, weights by truth or by prediction."""
    g, v, p = np_inputs(labels, probs, ignore)
    w = labels.shape[0] / (g.sum(axis=(0, 1, 2)) + EPS)
    pc = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    ce = -(g * np.log(pc)).sum(-1)
    pixel_weights = (g * w).sum(-1) if weight_by == "truth" else (pc * w).sum(-1)
    return np_pixel_mean(ce * pixel_weights, v)


# ------------------------------------------------------------------------------ the table
LOSSES = {
    "ce": (CrossEntropy, np_ce),
    "focal": (FocalLoss, np_focal),
    "focal_gamma0": (partial(FocalLoss, gamma=0.0, alpha=1.0), np_ce),  # property: = CE
    "dice": (Dice, np_dice),
    "dice_squared_no_bg": (
        partial(Dice, squared=True, include_background=False),
        partial(np_dice, squared=True, include_background=False),
    ),
    "generalized_dice": (GeneralizedDice, np_generalized_dice),
    "generalized_dice_no_bg": (
        partial(GeneralizedDice, include_background=False),
        partial(np_generalized_dice, include_background=False),
    ),
    "tversky": (Tversky, np_tversky),
    "tversky_half_is_dice": (partial(Tversky, alpha=0.5, beta=0.5), np_dice),  # property
    "focal_tversky": (FocalTversky, partial(np_tversky, gamma=0.75)),
    "lovasz": (Lovasz, np_lovasz),
    "ce_dice": (
        partial(CEDice, dice_weight=0.5),
        lambda y, p, ignore=None: np_ce(y, p, ignore=ignore) + 0.5 * np_dice(y, p, ignore=ignore),
    ),
    "bce_minus_dice": (BCEMinusDice, np_bce_minus_dice),
    "batch_count_weighted_ce": (BatchCountWeightedCE, np_batch_count_weighted_ce),
    "batch_count_weighted_ce_by_prediction": (
        partial(BatchCountWeightedCE, weight_by="prediction"),
        partial(np_batch_count_weighted_ce, weight_by="prediction"),
    ),
}
NAMES = sorted(LOSSES)


def random_case(seed: int, shape=(2, 6, 7), absent: int | None = 3):
    """Random softmax probabilities and labels with a rare class 2 and an absent class."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*shape, C)) * 2
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    choices = [c for c in range(C) if c != absent]
    share = np.array([0.7, 0.25, 0.05, 0.0])[choices]
    labels = rng.choice(choices, size=shape, p=share / share.sum())
    return labels, probs


def make(name, **kwargs):
    return LOSSES[name][0](**kwargs)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_equals_its_numpy_formula(name, seed):
    labels, probs = random_case(seed)
    assert float(make(name)(labels, probs)) == pytest.approx(
        LOSSES[name][1](labels, probs), rel=1e-5, abs=1e-6
    )


BF16_RELATIVE = 1e-2  # bfloat16 keeps 8 significant bits: each probability within 0.4 %


@pytest.mark.parametrize("name", NAMES)
def test_a_bfloat16_prediction_is_scored_in_float32_and_within_one_percent(name):
    """What a model trained under ``trainer.precision=bfloat16`` hands a loss: the loss equals
    its formula on the bfloat16 values (it computes in float32) and the float32 value within
    :data:`BF16_RELATIVE`."""
    labels, probs = random_case(0)
    low = tf.cast(probs, tf.bfloat16)
    value = make(name)(labels, low)
    assert value.dtype == "float32"
    rounded = tf.cast(low, tf.float32).numpy()
    formula = LOSSES[name][1]
    assert float(value) == pytest.approx(formula(labels, rounded), rel=1e-5, abs=1e-6)
    assert float(value) == pytest.approx(formula(labels, probs), rel=BF16_RELATIVE, abs=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_ignored_pixels_count_nowhere(name):
    labels, probs = random_case(2)
    labels[:, :2] = IGNORE
    assert float(make(name, ignore_index=IGNORE)(labels, probs)) == pytest.approx(
        LOSSES[name][1](labels, probs, ignore=IGNORE), rel=1e-5, abs=1e-6
    )


@pytest.mark.parametrize("name", NAMES)
def test_per_class_terms_sum_to_the_loss(name):
    labels, probs = random_case(3)
    weights = np.random.default_rng(3).uniform(0.5, 2, labels.shape).astype(np.float32)
    loss = make(name)
    terms = np.asarray(loss.per_class(labels, probs, weights))
    assert terms.shape == (C,)
    assert terms.sum() == pytest.approx(float(loss(labels, probs, weights)), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "case", ["random", "perfect", "all_wrong", "absent_class", "all_ignored", "single_class"]
)
def test_gradients_are_finite(name, case):
    labels, probs = random_case(4)
    if case == "perfect":
        probs = np.eye(C, dtype=np.float32)[labels]
    elif case == "all_wrong":
        probs = np.eye(C, dtype=np.float32)[(labels + 1) % C]
    elif case == "all_ignored":
        labels = np.full(labels.shape, IGNORE)
    elif case == "single_class":
        labels = np.zeros(labels.shape, int)
    variable = tf.Variable(probs)
    with tf.GradientTape() as tape:
        value = make(name, ignore_index=IGNORE)(labels, variable)
    gradient = tape.gradient(value, variable)
    assert np.isfinite(float(value))
    assert gradient is not None and np.isfinite(gradient.numpy()).all()


REGION = ["dice", "generalized_dice", "tversky", "focal_tversky", "lovasz"]


@pytest.mark.parametrize("name", REGION)
def test_region_loss_is_zero_for_a_perfect_and_one_for_an_all_wrong_prediction(name):
    labels, _ = random_case(5, absent=None)
    perfect = np.eye(C, dtype=np.float32)[labels]
    wrong = np.eye(C, dtype=np.float32)[(labels + 1) % C]
    assert float(make(name)(labels, perfect)) == pytest.approx(0.0, abs=1e-5)
    assert float(make(name)(labels, wrong)) == pytest.approx(1.0, abs=1e-5)  # focal: 1^gamma


def test_pixel_losses_are_near_zero_for_a_perfect_prediction():
    labels, _ = random_case(5)
    perfect = np.eye(C, dtype=np.float32)[labels]
    assert float(CrossEntropy()(labels, perfect)) == pytest.approx(0.0, abs=1e-6)
    assert float(FocalLoss()(labels, perfect)) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ Keras built-ins as oracles
def test_cross_entropy_equals_keras_with_and_without_pixel_sample_weight():
    labels, probs = random_case(6)
    weights = np.random.default_rng(6).uniform(0, 3, labels.shape).astype(np.float32)
    oracle = keras.losses.SparseCategoricalCrossentropy()
    assert float(CrossEntropy()(labels, probs)) == pytest.approx(
        float(oracle(labels, probs)), rel=1e-5
    )
    assert float(CrossEntropy()(labels, probs, weights)) == pytest.approx(
        float(oracle(labels, probs, sample_weight=weights)), rel=1e-5
    )


def test_focal_equals_keras_categorical_focal_crossentropy():
    labels, probs = random_case(7)
    one_hot = np.eye(C, dtype=np.float32)[labels]
    oracle = keras.losses.CategoricalFocalCrossentropy(alpha=0.4, gamma=1.5)
    assert float(FocalLoss(gamma=1.5, alpha=0.4)(labels, probs)) == pytest.approx(
        float(oracle(one_hot, probs)), rel=1e-5
    )


def test_dice_equals_keras_dice_reduced_per_class():
    labels, probs = random_case(8, absent=None)
    one_hot = np.eye(C, dtype=np.float32)[labels]
    oracle = keras.losses.Dice(axis=(0, 1, 2))
    assert float(Dice(smooth=0.0)(labels, probs)) == pytest.approx(
        float(oracle(one_hot, probs)), rel=1e-5
    )


def keras_alpha_weights_false_positives() -> bool:
    """Whether the installed Keras' Tversky has alpha on false positives, as the paper does.

    Keras 3.15 and earlier name ``sum((1 - p) g)`` "fp", so their alpha weights false negatives;
    keras-team/keras PR #23333 (merged 2026-07-27) swaps them back. Told by behaviour: a
    prediction of class 1 where the truth is 0 is false positives only.
    """
    truth = np.array([[0.0, 0.0, 1.0, 1.0]])
    over = np.array([[1.0, 1.0, 1.0, 1.0]])  # TP 2, FP 2, FN 0
    alpha_only = float(keras.losses.Tversky(alpha=1.0, beta=0.0)(truth, over))
    return alpha_only == pytest.approx(0.5)  # 1 - 2 / (2 + 1 * 2); swapped: 1 - 2 / 2 = 0


def test_keras_tversky_convention_is_detected_for_the_installed_version():
    from packaging.version import Version

    if Version(keras.__version__) < Version("3.16"):
        assert not keras_alpha_weights_false_positives()  # measured with 3.15.1: swapped


def test_tversky_equals_keras_tversky_in_either_keras_convention():
    """seglab follows the paper (alpha on false positives) whatever Keras does."""
    labels, probs = random_case(9, absent=None)
    one_hot = np.eye(C, dtype=np.float32)[labels]
    ours = float(Tversky(alpha=0.3, beta=0.7, smooth=0.0)(labels, probs))
    as_paper = keras.losses.Tversky(alpha=0.3, beta=0.7, axis=(0, 1, 2))(one_hot, probs)
    swapped = keras.losses.Tversky(alpha=0.7, beta=0.3, axis=(0, 1, 2))(one_hot, probs)
    expected, other = (
        (as_paper, swapped) if keras_alpha_weights_false_positives() else (swapped, as_paper)
    )
    assert ours == pytest.approx(float(expected), rel=1e-5)
    assert ours != pytest.approx(float(other), rel=1e-3)


def test_tversky_alpha_penalises_false_positives():
    labels = np.zeros((1, 4, 4), int)
    labels[0, 0, :2] = 1  # two pixels of class 1
    over = np.eye(2, dtype=np.float32)[np.ones_like(labels)]  # predicts 1 everywhere: FP only
    assert float(Tversky(alpha=0.9, beta=0.1)(labels, over)) > float(
        Tversky(alpha=0.1, beta=0.9)(labels, over)
    )


def test_keras_pooled_dice_hides_a_missed_class_that_per_class_dice_shows():
    """One pixel of class 2, missed entirely: pooled Dice barely moves, the mean per class does."""
    labels = np.zeros((1, 64, 64), int)
    labels[0, :32] = 1
    labels[0, 40, 40] = 2
    pred_labels = labels.copy()
    pred_labels[0, 40, 40] = 0
    probs = np.eye(3, dtype=np.float32)[pred_labels]
    pooled = float(keras.losses.Dice()(np.eye(3, dtype=np.float32)[labels], probs))
    per_class = float(Dice()(labels, probs))
    assert pooled == pytest.approx(1 / 4096, rel=0.05)  # ~0.0002: looks perfect
    assert per_class == pytest.approx(1 / 3, rel=1e-3)  # one of three classes fails


# ------------------------------------------------------------------------- MONAI as an oracle
# Inputs written out, expected values printed by MONAI 1.6.1 (DiceLoss, GeneralizedDiceLoss,
# TverskyLoss with to_onehot_y=True, batch=True, smooth_nr=smooth_dr=1e-5; reduction="none" for
# the per-class values) in float64. Per-class values are each class's own loss, i.e. seglab's
# per-class term times the number of classes that take part.
MONAI_INPUTS = {
    "absent_class": (  # 3 classes, class 2 absent from the truth
        [[[0, 1, 1, 1]]],
        [[[[0.6, 0.2, 0.2], [0.1, 0.6, 0.3], [0.1, 0.6, 0.3], [0.1, 0.6, 0.3]]]],
    ),
    "background_only": (
        [[[0, 0, 0, 0]]],
        [[[[0.6, 0.2, 0.2], [0.1, 0.6, 0.3], [0.7, 0.2, 0.1], [0.5, 0.25, 0.25]]]],
    ),
    "two_images": (
        [[[0, 0, 1], [2, 1, 1]], [[0, 2, 2], [0, 0, 1]]],
        [
            [
                [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2]],
                [[0.3, 0.3, 0.4], [0.1, 0.8, 0.1], [0.4, 0.4, 0.2]],
            ],
            [
                [[0.9, 0.05, 0.05], [0.2, 0.2, 0.6], [0.6, 0.1, 0.3]],
                [[0.8, 0.1, 0.1], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6]],
            ],
        ],
    ),
}
# (case, loss, include_background, MONAI's loss, MONAI's per-class losses or None)
MONAI_CASES = [
    ("absent_class", "generalized_dice", True, 0.5499984528150319, None),
    ("absent_class", "generalized_dice", False, 0.40983001890140547, None),
    ("background_only", "generalized_dice", True, 0.5249895002099958, None),
    ("background_only", "generalized_dice", False, 0.0, None),
    ("two_images", "generalized_dice", True, 0.48470168440333117, None),
    ("two_images", "generalized_dice", False, 0.5258240838779242, None),
    (
        "absent_class",
        "dice",
        True,
        0.5494698209194285,
        [0.3684191135836127, 0.27999944000112, 0.9999909091735529],
    ),
    ("absent_class", "dice", False, 0.6399951745873365, [0.27999944000112, 0.9999909091735529]),
    ("background_only", "dice", False, 0.999990117748262, [0.9999920000639995, 0.9999882354325244]),
    (
        "two_images",
        "dice",
        True,
        0.4671836076107841,
        [0.3663362709541872, 0.4649675605508783, 0.570246991327287],
    ),
    ("two_images", "dice", False, 0.5176072759390826, [0.4649675605508783, 0.570246991327287]),
    (
        "absent_class",
        "tversky",
        True,
        None,
        [0.381439366604468, 0.3333320987700047, 0.9999696978879428],
    ),
    (
        "background_only",
        "tversky",
        True,
        None,
        [0.43620048605197026, 0.9999733340444255, 0.9999607858515352],
    ),
    (
        "two_images",
        "tversky",
        True,
        None,
        [0.36381637412251644, 0.46902536276773, 0.5688206672614684],
    ),
    ("two_images", "tversky", False, None, [0.46902536276773, 0.5688206672614684]),
]
MONAI_LOSSES = {"dice": Dice, "generalized_dice": GeneralizedDice, "tversky": Tversky}


@pytest.mark.parametrize(
    ("case", "name", "include_background", "expected", "per_class"),
    MONAI_CASES,
    ids=[f"{c}-{n}-{'bg' if b else 'no_bg'}" for c, n, b, _, _ in MONAI_CASES],
)
def test_region_losses_equal_monai(case, name, include_background, expected, per_class):
    labels, probs = (np.array(x) for x in MONAI_INPUTS[case])
    loss = MONAI_LOSSES[name](include_background=include_background)
    probs = probs.astype(np.float32)
    if expected is not None:
        assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    if per_class is not None:
        terms = np.asarray(loss.per_class(labels, probs))
        taking_part = terms[0 if include_background else 1 :] * len(per_class)
        np.testing.assert_allclose(taking_part, per_class, rtol=1e-5)
        if not include_background:
            assert terms[0] == 0.0


def test_generalized_dice_without_background_takes_the_largest_weight_of_the_others():
    labels, probs = (np.array(x) for x in MONAI_INPUTS["absent_class"])
    with_bg = float(GeneralizedDice()(labels, probs.astype(np.float32)))
    without = float(GeneralizedDice(include_background=False)(labels, probs.astype(np.float32)))
    # Only class 1 is present among classes 1-2: absent class 2 gets class 1's weight 1/9.
    g = np.eye(3)[labels][..., 1:]
    p = probs[..., 1:]
    w = np.array([1 / 9, 1 / 9])
    expected = 1 - (2 * (w * (g * p).sum((0, 1, 2))).sum() + 1e-5) / (
        (w * (g + p).sum((0, 1, 2))).sum() + 1e-5
    )
    assert without == pytest.approx(expected, rel=1e-6) and without != pytest.approx(with_bg)


# --------------------------------------------------------------------------------- properties
def test_lovasz_on_hard_predictions_is_one_minus_iou():
    labels, probs = random_case(10)
    hard = probs.argmax(-1)
    cm = np.zeros((C, C), int)
    np.add.at(cm, (labels.ravel(), hard.ravel()), 1)
    iou = scores_from_confusion(cm).iou
    present = np.bincount(labels.ravel(), minlength=C) > 0
    expected = np.mean(1 - iou[present])
    assert float(Lovasz()(labels, np.eye(C, dtype=np.float32)[hard])) == pytest.approx(expected)


@pytest.mark.parametrize(
    "name", ["dice", "generalized_dice", "tversky", "focal_tversky", "lovasz", "ce_dice"]
)
@pytest.mark.parametrize("value", [1e-3, 1.0, 3.0, 1e3])
@pytest.mark.parametrize("case", ["random", "single_class"])
def test_uniform_class_weights_equal_no_weights(name, value, case):
    labels, probs = random_case(11)
    if case == "single_class":  # where an unscaled smoothing term showed most
        labels = np.zeros_like(labels)
    weighted = make(name, class_weights=[value] * C)
    assert float(weighted(labels, probs)) == pytest.approx(
        float(make(name)(labels, probs)), rel=1e-6
    )
    np.testing.assert_allclose(
        weighted.per_class(labels, probs), make(name).per_class(labels, probs), rtol=1e-5
    )


@pytest.mark.parametrize("name", ["ce", "focal", "ce_dice", "bce_minus_dice"])
def test_uniform_pixel_weights_equal_no_weights(name):
    labels, probs = random_case(12)
    ones = np.ones(labels.shape, np.float32)
    assert float(make(name)(labels, probs, ones)) == pytest.approx(
        float(make(name)(labels, probs)), rel=1e-6
    )


def test_class_weights_move_the_region_mean_towards_the_weighted_class():
    labels, probs = random_case(13)
    weights = [1.0, 1.0, 10.0, 1.0]
    losses = 1 - np.array([1 - np_dice(labels, probs, weights=np.eye(C)[c]) for c in range(C)])
    assert float(Dice(class_weights=weights)(labels, probs)) == pytest.approx(
        (np.array(weights) * losses).sum() / sum(weights), rel=1e-5
    )


def test_class_weights_of_the_wrong_length_are_rejected_by_name():
    labels, probs = random_case(14)
    with pytest.raises(ValueError, match="Dice has 3 class_weights but the model predicts 4"):
        Dice(class_weights=[1, 2, 3])(labels, probs)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    loss = make(name, ignore_index=IGNORE)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()
    labels, probs = random_case(15)
    assert float(clone(labels, probs)) == pytest.approx(float(loss(labels, probs)))


@pytest.mark.parametrize(
    ("factory", "gets_weights"),
    [
        (CrossEntropy, False),
        (FocalLoss, False),
        (Dice, True),
        (Lovasz, True),
        (CEDice, True),
        (partial(Tversky, alpha=0.5), True),
        (BCEMinusDice, False),
    ],
)
def test_build_loss_routes_class_weights_only_to_losses_that_take_them(factory, gets_weights):
    loss = build_loss(factory, np.array([1.0, 2.0, 3.0, 4.0]), IGNORE)
    assert loss.ignore_index == IGNORE
    weights = (
        loss.dice.class_weights
        if isinstance(loss, CEDice)
        else getattr(loss, "class_weights", None)
    )
    assert (weights == [1.0, 2.0, 3.0, 4.0]) is gets_weights
    assert loss.pixel_weighted is not (gets_weights and not isinstance(loss, CEDice))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (partial(FocalLoss, gamma=-1), "loss.gamma must be >= 0"),
        (partial(FocalLoss, alpha=-1), "loss.alpha must be > 0, got -1"),
        (partial(FocalLoss, alpha=0), "loss.alpha must be > 0, got 0"),
        (partial(Tversky, alpha=-0.1), "loss.alpha and loss.beta must be >= 0"),
        (partial(FocalTversky, gamma=0), "loss.gamma must be > 0"),
        (
            partial(BatchCountWeightedCE, weight_by="label"),
            r"loss.weight_by must be one of \['truth', 'prediction'\], got 'label'",
        ),
        (partial(BatchCountWeightedCE, epsilon=0.0), "loss.epsilon must be > 0, got 0.0"),
    ],
)
def test_bad_loss_options_are_rejected_by_name(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("name", NAMES)
def test_a_reduction_other_than_the_default_is_refused_not_ignored(name):
    with pytest.raises(ValueError, match=r"reduction='none' is not supported"):
        make(name, reduction="none")
    assert make(name, reduction="sum_over_batch_size").reduction == "sum_over_batch_size"


# ----------------------------------------------------------------------- wiring and defaults
@pytest.mark.parametrize("name", NAMES)
def test_labels_with_a_trailing_channel_equal_plain_labels(name):
    labels, probs = random_case(16)
    assert float(make(name)(labels[..., None], probs)) == pytest.approx(
        float(make(name)(labels, probs)), rel=1e-6
    )


def test_cross_entropy_renormalises_probabilities_that_do_not_sum_to_one():
    # As keras.losses.CategoricalCrossentropy does (its sparse twin does not renormalise).
    labels, probs = random_case(17)
    scaled = probs * np.random.default_rng(17).uniform(0.2, 3.0, size=(*labels.shape, 1))
    scaled = scaled.astype(np.float32)
    expected = float(keras.losses.CategoricalCrossentropy()(np.eye(C)[labels], scaled))
    assert float(CrossEntropy()(labels, scaled)) == pytest.approx(expected, rel=1e-5)
    assert float(CrossEntropy()(labels, scaled)) == pytest.approx(np_ce(labels, scaled), rel=1e-5)


def test_keyword_arguments_reach_keras_loss():
    assert CrossEntropy(dtype="float64").dtype == "float64"


def test_region_losses_include_the_background_by_default():
    assert Dice().include_background and GeneralizedDice().include_background
    labels, probs = random_case(18)
    assert float(Dice()(labels, probs)) == pytest.approx(np_dice(labels, probs), rel=1e-5)


@pytest.mark.parametrize("name", ["dice", "tversky", "focal_tversky"])
def test_excluding_the_background_equals_a_zero_background_weight(name):
    labels, probs = random_case(19)
    weights = [2.0, 1.0, 5.0, 0.5]
    excluded = make(name, class_weights=weights, include_background=False)
    zeroed = make(name, class_weights=[0.0, *weights[1:]])
    assert float(excluded(labels, probs)) == pytest.approx(float(zeroed(labels, probs)), rel=1e-6)


def np_weighted_generalized_dice(labels, probs, class_weights, include_background=True):
    """Sudre's weights w_c = 1/V_c^2 times the class weights scaled to mean 1 over the classes
    that take part (the documented meaning of GeneralizedDice's class_weights)."""
    g, _, p = np_inputs(labels, probs)
    relative = np.asarray(class_weights, float)
    if not include_background:
        g, p, relative = g[..., 1:], p[..., 1:], relative[1:]
    relative = relative / relative.mean()
    volume = g.sum((0, 1, 2))
    with np.errstate(divide="ignore"):
        w = 1.0 / volume**2
    w[~np.isfinite(w)] = w[np.isfinite(w)].max()
    w = w * relative
    intersection, union = (g * p).sum((0, 1, 2)), (g + p).sum((0, 1, 2))
    return 1 - (2 * (w * intersection).sum() + 1e-5) / ((w * union).sum() + 1e-5)


@pytest.mark.parametrize("include_background", [True, False])
def test_generalized_dice_class_weights_multiply_the_volume_weights(include_background):
    labels, probs = random_case(20)
    weights = [1.0, 4.0, 0.5, 2.0]
    loss = GeneralizedDice(class_weights=weights, include_background=include_background)
    expected = np_weighted_generalized_dice(labels, probs, weights, include_background)
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    unweighted = float(GeneralizedDice(include_background=include_background)(labels, probs))
    assert expected != pytest.approx(unweighted, rel=1e-3)


def test_focal_tversky_takes_class_weights():
    labels, probs = random_case(21)
    weights = [1.0, 1.0, 10.0, 1.0]
    weighted = float(FocalTversky(class_weights=weights)(labels, probs))
    g, _, p = np_inputs(labels, probs)
    tp, fp, fn = (g * p).sum((0, 1, 2)), (p * (1 - g)).sum((0, 1, 2)), ((1 - p) * g).sum((0, 1, 2))
    terms = (1 - (tp + 1e-5) / (tp + 0.3 * fp + 0.7 * fn + 1e-5)) ** 0.75
    assert weighted == pytest.approx((np.array(weights) * terms).sum() / sum(weights), rel=1e-5)
    assert weighted != pytest.approx(np_tversky(labels, probs, gamma=0.75), rel=1e-3)


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 1.0), (1.0, 0.0)])
def test_tversky_accepts_a_zero_alpha_or_beta(alpha, beta):
    labels, probs = random_case(22)
    loss = Tversky(alpha=alpha, beta=beta)
    expected = np_tversky(labels, probs, alpha=alpha, beta=beta)
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)


def test_ce_dice_weighs_dice_one_by_default():
    labels, probs = random_case(23)
    expected = np_ce(labels, probs) + np_dice(labels, probs)
    assert float(CEDice()(labels, probs)) == pytest.approx(expected, rel=1e-5)


def test_bce_minus_dice_with_a_pixel_weight_map():
    labels, probs = random_case(24)
    weights = np.random.default_rng(24).uniform(0.1, 5.0, size=labels.shape).astype(np.float32)
    expected = np_bce_minus_dice(labels, probs, weights=weights)
    assert float(BCEMinusDice()(labels, probs, weights)) == pytest.approx(expected, rel=1e-5)


def test_lovasz_with_a_class_on_a_single_pixel():
    labels, probs = random_case(25, absent=None)
    labels[labels == 2] = 0
    labels[0, 0, 0] = 2  # class 2 now covers exactly one pixel
    assert float(Lovasz()(labels, probs)) == pytest.approx(np_lovasz(labels, probs), rel=1e-5)


# ------------------------------------------------------------------ the functional core alone
# One image of 4 pixels, 2 classes: truth [0, 0, 1, 1], p(class 1) = [0.2, 0.4, 0.7, 0.1].
# Class 0: TP = 0.8 + 0.6 = 1.4, FP = 0.3 + 0.9 = 1.2, FN = 0.2 + 0.4 = 0.6.
# Class 1: TP = 0.7 + 0.1 = 0.8, FP = 0.2 + 0.4 = 0.6, FN = 0.3 + 0.9 = 1.2.
P1 = np.array([0.2, 0.4, 0.7, 0.1])
CORE_PROBS = np.stack([1 - P1, P1], -1).reshape(1, 1, 4, 2).astype(np.float32)
CORE_ONE_HOT = np.eye(2, dtype=np.float32)[[0, 0, 1, 1]].reshape(1, 1, 4, 2)
CORE_CASES = [
    (
        "overlaps",
        lambda f: np.stack(f.overlaps(CORE_ONE_HOT, CORE_PROBS)),
        [[1.4, 0.8], [1.2, 0.6], [0.6, 1.2]],
    ),
    # 1 - 2 TP / (2 TP + FP + FN)
    (
        "soft_dice",
        lambda f: f.soft_dice(CORE_ONE_HOT, CORE_PROBS, 0.0),
        [1 - 2.8 / 4.6, 1 - 1.6 / 3.4],
    ),
    # TP / (TP + 0.3 FP + 0.7 FN)
    (
        "tversky_index",
        lambda f: f.tversky_index(CORE_ONE_HOT, CORE_PROBS, 0.3, 0.7, 0.0),
        [1.4 / (1.4 + 0.36 + 0.42), 0.8 / (0.8 + 0.18 + 0.84)],
    ),
    ("focal_tversky", lambda f: f.focal_tversky(np.array([0.75, 1.0]), 0.5), [0.5, 1e-7**0.5]),
    # B / (count + eps): one image, two pixels of each class; then class 1 absent
    ("batch_count_weights", lambda f: f.batch_count_weights(CORE_ONE_HOT), [0.5, 0.5]),
    (
        "batch_count_weights_absent_class",
        lambda f: f.batch_count_weights(CORE_ONE_HOT * np.float32([1, 0])),
        [1 / (2 + 1e-7), 1e7],
    ),
    # -log p_t, p_t = 0.8 and 0.7
    (
        "cross_entropy",
        lambda f: f.cross_entropy(np.array([0.8, 0.7])),
        [-np.log(0.8), -np.log(0.7)],
    ),
    # -0.25 (1 - p)^2 log p
    (
        "focal",
        lambda f: f.focal(np.array([0.8, 0.5]), 2.0, 0.25),
        [-0.25 * 0.04 * np.log(0.8), -0.25 * 0.25 * np.log(0.5)],
    ),
    # sorted truth [1, 1, 0]: Jaccard losses 1 - 1/2, 1 - 0/2, 1 - 0/3 -> steps 0.5, 0.5, 0
    (
        "lovasz_grad",
        lambda f: f.lovasz_grad(np.array([[1.0], [1.0], [0.0]])),
        [[0.5], [0.5], [0.0]],
    ),
]


@pytest.mark.parametrize(("name", "call", "expected"), CORE_CASES, ids=[c[0] for c in CORE_CASES])
def test_functional_core_equals_hand_computed_values(name, call, expected):
    from seglab.losses import functional

    np.testing.assert_allclose(np.asarray(call(functional)), expected, rtol=1e-5, atol=1e-7)


# ------------------------------------------- the one-class-everywhere question's loss, by hand
# One 2x2 image, 3 classes, labels [[0, 1], [1, 1]]: class 2 is absent from the batch, so
# w = [1 / (1 + eps), 1 / (3 + eps), 1 / eps] = [1, 1/3, 1e7].
BATCH_LABELS = np.array([[[0, 1], [1, 1]]])
BATCH_PROBS = np.array(
    [[[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]], [[0.2, 0.5, 0.3], [0.1, 0.8, 0.1]]]], np.float32
)
BATCH_CASES = [
    # mean of w[y] (-log p_y): (-log .7 + (-log .6 - log .5 - log .8) / 3) / 4
    ("truth", 0.2080951, [0.0891687, 0.1189264, 0.0]),
    # pixel weights sum_c w_c p_c are about 1e7 x p(class 2): 1e6, 1e6, 3e6, 1e6
    ("prediction", 792521.6, [89168.8, 703352.8, 0.0]),
]


@pytest.mark.parametrize(("weight_by", "expected", "per_class"), BATCH_CASES)
def test_batch_count_weighted_ce_equals_hand_computed_values(weight_by, expected, per_class):
    loss = BatchCountWeightedCE(weight_by=weight_by)
    assert loss.name == "batch_count_weighted_ce"  # the name error messages and configs use
    assert float(loss(BATCH_LABELS, BATCH_PROBS)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(loss.per_class(BATCH_LABELS, BATCH_PROBS), per_class, rtol=1e-6)


def test_batch_count_weighted_ce_by_truth_equals_keras_ce_with_the_batch_weight_map():
    labels, probs = random_case(17)
    counts = np.bincount(labels.ravel(), minlength=C)
    weight_map = (labels.shape[0] / (counts + EPS))[labels].astype(np.float32)
    oracle = keras.losses.CategoricalCrossentropy()
    assert float(BatchCountWeightedCE()(labels, probs)) == pytest.approx(
        float(oracle(np.eye(C)[labels], probs, sample_weight=weight_map)), rel=1e-5
    )


def test_batch_count_weights_on_a_balanced_batch_scale_plain_ce():
    labels = np.array([[[0, 1], [2, 3]], [[3, 2], [1, 0]]])  # every class twice in a batch of 2
    _, probs = random_case(18, shape=(2, 2, 2))
    assert float(BatchCountWeightedCE()(labels, probs)) == pytest.approx(
        float(CrossEntropy()(labels, probs)), rel=1e-5
    )


def test_an_absent_class_weighs_nothing_by_truth_and_everything_by_prediction():
    labels, probs = random_case(19)  # class 3 absent: weight 2 / 1e-7
    by_truth = BatchCountWeightedCE()
    by_prediction = BatchCountWeightedCE(weight_by="prediction")
    # Swap, in every pixel, the absent class's probability with a wrong present class's: the
    # probability of the true class, hence the loss by truth, does not move.
    other = (labels + 1) % 3
    swapped = probs.copy()
    absent_p = probs[..., 3].copy()
    swapped[..., 3] = np.take_along_axis(probs, other[..., None], -1)[..., 0]
    np.put_along_axis(swapped, other[..., None], absent_p[..., None], -1)
    assert float(by_truth(labels, swapped)) == pytest.approx(float(by_truth(labels, probs)))
    # By prediction the loss is about (B / eps) mean(p_absent * CE): the absent class rules it.
    ce = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
    for p in (probs, swapped):
        dominant = (labels.shape[0] / EPS * p[..., 3] * ce).mean()
        assert float(by_prediction(labels, p)) == pytest.approx(dominant, rel=1e-4)


@pytest.mark.parametrize("weight_by", ["truth", "prediction"])
def test_batch_count_weighted_ce_renormalises_clips_and_takes_its_epsilon(weight_by):
    labels, probs = random_case(20)  # class 3 absent from the batch
    unnormalised = probs * np.random.default_rng(20).uniform(0.5, 2.0, (*labels.shape, 1))
    # Probabilities are renormalised over the classes before anything else.
    loss = BatchCountWeightedCE(weight_by=weight_by)
    assert float(loss(labels, unnormalised.astype(np.float32))) == pytest.approx(
        np_batch_count_weighted_ce(labels, probs, weight_by), rel=1e-5
    )
    # A perfect prediction is clipped to 1 - eps, and eps also sets the absent class's weight.
    eps = 1e-3
    perfect = np.eye(C, dtype=np.float32)[labels]
    counts = np.bincount(labels.ravel(), minlength=C)
    weights = labels.shape[0] / (counts + eps)
    clipped = np.clip(perfect, eps, 1 - eps)
    pixel_weights = weights[labels] if weight_by == "truth" else (clipped * weights).sum(-1)
    expected = (pixel_weights * -np.log(1 - eps)).mean()
    got = float(BatchCountWeightedCE(weight_by=weight_by, epsilon=eps)(labels, perfect))
    assert got == pytest.approx(expected, rel=1e-4)


def test_batch_count_weighted_ce_multiplies_a_given_sample_weight_map():
    labels, probs = random_case(21)
    sample = np.random.default_rng(21).uniform(0.5, 3.0, labels.shape).astype(np.float32)
    counts = np.bincount(labels.ravel(), minlength=C)
    weights = (labels.shape[0] / (counts + EPS))[labels]
    ce = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
    assert float(BatchCountWeightedCE()(labels, probs, sample)) == pytest.approx(
        (weights * sample * ce).mean(), rel=1e-5
    )


@pytest.mark.parametrize(
    ("loss", "name"),
    [
        (CrossEntropy, "cross_entropy"),
        (FocalLoss, "focal"),
        (BatchCountWeightedCE, "batch_count_weighted_ce"),
        (Dice, "dice"),
        (GeneralizedDice, "generalized_dice"),
        (Tversky, "tversky"),
        (FocalTversky, "focal_tversky"),
        (Lovasz, "lovasz"),
        (CEDice, "ce_dice"),
        (BCEMinusDice, "bce_minus_dice"),
    ],
)
def test_each_loss_has_its_name_and_takes_another(loss, name):
    # The name is what errors and Keras' logs call the loss.
    assert loss().name == name
    assert loss(name="mine").name == "mine"
    assert loss(name="mine").get_config()["name"] == "mine"


def test_ce_dice_passes_squared_on_to_its_dice():
    labels, probs = random_case(5)
    for squared in (False, True):
        expected = float(CrossEntropy()(labels, probs)) + float(
            Dice(squared=squared)(labels, probs)
        )
        assert float(CEDice(squared=squared)(labels, probs)) == pytest.approx(expected, rel=1e-6)
    assert float(Dice(squared=True)(labels, probs)) != pytest.approx(
        float(Dice()(labels, probs)), rel=1e-3
    )  # the two differ on this case, so the check above can fail
