import keras
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, jaccard_score, recall_score

from seglab.core.scores import class_histograms, scores_from_confusion
from seglab.training.keras_metrics import ConfusionMatrix

C = 5
IGNORE = 255
# 0/0 is handled on purpose (NaN for an undefined score): never through a numpy warning.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def probabilities_for(labels: np.ndarray, num_classes: int = C) -> np.ndarray:
    """Softmax-like probabilities whose argmax is ``labels``."""
    probs = np.full((*labels.shape, num_classes), 0.1 / num_classes, np.float32)
    np.put_along_axis(probs, labels[..., None], 0.9, axis=-1)
    return probs


def random_batches(seed: int):
    """Batches of different sizes; class 3 never appears in truth, class 4 never at all."""
    rng = np.random.default_rng(seed)
    batches = []
    for size in (3, 1, 4):
        truth = rng.choice([0, 1, 2], size=(size, 6, 7), p=[0.7, 0.2, 0.1])
        pred = rng.choice([0, 1, 2, 3], size=(size, 6, 7), p=[0.6, 0.2, 0.1, 0.1])
        truth[rng.random(truth.shape) < 0.05] = IGNORE
        batches.append((truth, pred))
    return batches


def numpy_confusion(batches) -> np.ndarray:
    cm = np.zeros((C, C), np.int64)
    for truth, pred in batches:
        keep = truth != IGNORE
        np.add.at(cm, (truth[keep], pred[keep]), 1)
    return cm


def streamed(batches) -> ConfusionMatrix:
    metric = ConfusionMatrix(C, ignore_index=IGNORE)
    for truth, pred in batches:
        metric.update_state(truth, probabilities_for(pred))
    return metric


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_confusion_matrix_equals_numpy_over_batches_of_different_sizes(seed):
    batches = random_batches(seed)
    np.testing.assert_array_equal(streamed(batches).matrix(), numpy_confusion(batches))


def test_confusion_matrix_compiled_with_xla_equals_numpy():
    import tensorflow as tf

    batches = random_batches(0)
    metric = ConfusionMatrix(C, ignore_index=IGNORE)
    update = tf.function(metric.update_state, jit_compile=True)  # as under trainer.jit_compile
    for truth, pred in batches:
        update(truth, probabilities_for(pred))
    np.testing.assert_array_equal(metric.matrix(), numpy_confusion(batches))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_iou_equals_sklearn_and_keras_iou(seed):
    batches = random_batches(seed)
    scores = scores_from_confusion(streamed(batches).matrix())
    truth = np.concatenate([t.ravel() for t, _ in batches])
    pred = np.concatenate([p.ravel() for _, p in batches])
    keep = truth != IGNORE
    # Classes 0-3 are defined; class 4 (never true, never predicted) is NaN, tested below.
    expected = jaccard_score(truth[keep], pred[keep], labels=list(range(C - 1)), average=None)
    np.testing.assert_allclose(scores.iou[: C - 1], expected, rtol=1e-12)
    for c in range(C - 1):  # keras.metrics.IoU scores an undefined class 0, so skip class 4
        oracle = keras.metrics.IoU(C, target_class_ids=[c], ignore_class=IGNORE)
        for t, p in batches:
            oracle.update_state(t, p)
        assert scores.iou[c] == pytest.approx(float(oracle.result()), abs=1e-6)
    mean_oracle = keras.metrics.IoU(C, target_class_ids=list(range(C)), ignore_class=IGNORE)
    for t, p in batches:
        mean_oracle.update_state(t, p)
    assert scores.miou == pytest.approx(float(mean_oracle.result()), abs=1e-6)


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out_of_means():
    scores = scores_from_confusion(numpy_confusion(random_batches(0)))
    assert np.isnan(scores.iou[4]) and np.isnan(scores.dice[4]) and np.isnan(scores.recall[4])
    assert scores.iou[3] == 0.0  # predicted but never true: a real failure, not NaN
    assert scores.miou == pytest.approx(np.mean(scores.iou[:4]))
    assert scores.min_iou == 0.0 and scores.worst_class == 3


def test_dice_and_pixel_accuracy_equal_their_formulas():
    cm = numpy_confusion(random_batches(1))
    scores = scores_from_confusion(cm)
    tp, fp, fn = np.diag(cm), cm.sum(0) - np.diag(cm), cm.sum(1) - np.diag(cm)
    for c in range(4):
        assert scores.dice[c] == pytest.approx(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]))
        # Dice and IoU are tied: D = 2J / (1 + J)
        assert scores.dice[c] == pytest.approx(2 * scores.iou[c] / (1 + scores.iou[c]))
    assert scores.pixel_acc == pytest.approx(tp.sum() / cm.sum())


def test_perfect_prediction_scores_one_and_all_wrong_scores_zero():
    truth = np.array([[[0, 1], [2, 2]]])
    perfect = scores_from_confusion(streamed([(truth, truth)]).matrix())
    np.testing.assert_array_equal(perfect.iou[:3], 1.0)
    assert perfect.miou == 1.0 and perfect.pixel_acc == 1.0
    wrong = scores_from_confusion(streamed([(truth, (truth + 1) % 3)]).matrix())
    np.testing.assert_array_equal(wrong.iou[:3], 0.0)
    assert wrong.pixel_acc == 0.0 and wrong.miou == 0.0


def test_confusion_matrix_counts_pixels_not_sample_weights():
    truth = np.array([[[0, 1], [1, 1]]])
    weighted = ConfusionMatrix(2)
    weighted.update_state(
        truth, probabilities_for(truth, 2), sample_weight=np.full(truth.shape, 7.0)
    )
    np.testing.assert_array_equal(weighted.matrix(), [[1, 0], [0, 3]])


def test_metric_result_is_the_nan_aware_miou_and_reset_clears_it():
    batches = random_batches(2)
    metric = streamed(batches)
    assert float(metric.result()) == pytest.approx(scores_from_confusion(metric.matrix()).miou)
    metric.reset_state()
    assert metric.matrix().sum() == 0


def test_all_ignored_input_is_undefined_not_zero():
    scores = scores_from_confusion(
        streamed([(np.full((1, 2, 2), IGNORE), np.zeros((1, 2, 2), int))]).matrix()
    )
    assert np.isnan(scores.miou) and np.isnan(scores.pixel_acc) and scores.worst_class == -1


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_and_class_accuracy_equal_sklearn(seed):
    batches = random_batches(seed)
    scores = scores_from_confusion(streamed(batches).matrix())
    truth = np.concatenate([t.ravel() for t, _ in batches])
    pred = np.concatenate([p.ravel() for _, p in batches])
    keep = truth != IGNORE
    # Classes 0-2 occur in the truth; 3 (predicted only) and 4 (never) have no recall.
    expected = recall_score(truth[keep], pred[keep], labels=[0, 1, 2], average=None)
    np.testing.assert_allclose(scores.recall[:3], expected, rtol=1e-12)
    assert np.isnan(scores.recall[3]) and np.isnan(scores.recall[4])
    # balanced accuracy = mean recall over the classes in the truth: SegNet's "C"
    assert scores.class_acc == pytest.approx(balanced_accuracy_score(truth[keep], pred[keep]))
    # the share of the counted pixels predicted as each class, straight from the predictions
    predicted = np.bincount(pred[keep], minlength=5) / keep.sum()
    np.testing.assert_allclose(scores.predicted_share, predicted, rtol=1e-12)


def test_a_model_that_predicts_one_class_everywhere_has_a_predicted_share_of_one():
    cm = np.array([[0, 0, 90], [0, 0, 6], [0, 0, 4]])  # every pixel predicted as class 2
    scores = scores_from_confusion(cm)
    np.testing.assert_array_equal(scores.predicted_share, [0.0, 0.0, 1.0])
    assert scores.pixel_acc == pytest.approx(0.04)
    empty = scores_from_confusion(np.zeros((2, 2)))
    assert np.isnan(empty.predicted_share).all()


def test_class_accuracy_weighs_a_rare_class_like_a_common_one():
    # 98 background pixels all right, 2 rare pixels all missed: G = 0.98, C = 0.5.
    cm = np.array([[98, 0], [2, 0]])
    scores = scores_from_confusion(cm)
    assert (scores.pixel_acc, scores.class_acc) == (0.98, 0.5)
    np.testing.assert_array_equal(scores.recall, [1.0, 0.0])
    np.testing.assert_array_equal(scores.support, [98, 2])


def test_support_counts_the_true_pixels_of_each_class():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    support = scores_from_confusion(cm).support
    np.testing.assert_array_equal(support, [6, 5, 0])
    assert support.dtype == np.int64  # pixel counts, printed and saved as integers


@pytest.mark.parametrize("jit", [False, True])
def test_labels_beyond_the_classes_are_counted_and_refused_not_dropped(jit):
    import tensorflow as tf

    metric = ConfusionMatrix(3, ignore_index=IGNORE)
    truth = np.array([[[0, 1, 1, 7]]])  # 7 is neither a class (0..2) nor the ignore index
    update = tf.function(metric.update_state, jit_compile=True) if jit else metric.update_state
    update(truth, probabilities_for(np.array([[[0, 1, 1, 1]]]), 3))
    update(np.array([[[IGNORE, 2]]]), probabilities_for(np.array([[[0, 2]]]), 3))
    assert metric.out_of_range == 1  # the ignored pixel is not counted as out of range
    reason = r"1 pixels have a true label outside 0..2 .*=255; .* Check num_classes and ignore"
    with pytest.raises(ValueError, match=reason):
        metric.matrix()
    metric.reset_state()
    assert metric.out_of_range == 0 and metric.matrix().sum() == 0


def test_updates_outside_validation_are_skipped_so_training_steps_carry_no_metric_work():
    metric = ConfusionMatrix(2)
    metric.validating = False
    truth = np.array([[[0, 1]]])
    metric.update_state(truth, probabilities_for(truth, 2))
    assert metric.matrix().sum() == 0
    metric.validating = True
    metric.update_state(truth, probabilities_for(truth, 2))
    np.testing.assert_array_equal(metric.matrix(), [[1, 0], [0, 1]])


def test_per_class_loss_round_trips_through_its_config():
    from seglab.losses import Dice
    from seglab.training.keras_metrics import PerClassLoss

    loss = Dice(class_weights=[1.0, 2.0, 3.0], ignore_index=255)
    metric = PerClassLoss(loss, 3, use_sample_weight=False, name="dice_terms", dtype="float64")
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert (copy.name, copy.num_classes, copy.use_sample_weight) == ("dice_terms", 3, False)
    assert copy.dtype == "float64"  # Keras' own arguments pass through
    assert copy.loss.get_config() == loss.get_config()
    y_true = np.random.default_rng(0).integers(0, 3, (2, 4, 4))
    y_pred = keras.ops.softmax(np.random.default_rng(1).normal(size=(2, 4, 4, 3)))
    for m in (metric, copy):
        m.update_state(y_true, y_pred)
    np.testing.assert_allclose(copy.terms(), metric.terms(), rtol=1e-6)


def test_per_class_loss_accumulates_in_float64_past_float32s_exact_integers():
    from seglab.losses import CrossEntropy
    from seglab.training.keras_metrics import PerClassLoss

    metric = PerClassLoss(CrossEntropy(), 2)
    # As after a stream of 2^24 single-image batches whose class-0 terms sum to 2^24: one more
    # image must still count (float32 cannot hold 2^24 + 1).
    metric.count.assign(2.0**24)
    metric.totals.assign([2.0**24, 0.0])
    y_true = np.zeros((1, 1, 2), int)
    y_pred = np.array([[[[np.exp(-1.0), 1 - np.exp(-1.0)]] * 2]])  # CE of each pixel: 1
    metric.update_state(y_true, y_pred)
    assert float(metric.count.numpy()) == 2.0**24 + 1
    # float32 would round 2^24 + 1 to 2^24 or 2^24 + 2: off by 1, not by the log's last bits.
    np.testing.assert_allclose(metric.totals.numpy(), [2.0**24 + 1, 0.0], rtol=0, atol=1e-3)


def test_worst_class_skips_an_undefined_class_even_when_it_comes_first():
    # class 0 defined (IoU 0.5), class 1 neither true nor predicted (NaN), class 2 IoU 0.25
    cm = np.array([[2, 0, 2], [0, 0, 0], [0, 0, 1]])
    scores = scores_from_confusion(cm)
    assert np.isnan(scores.iou[1])
    assert (scores.worst_class, scores.min_iou) == (2, pytest.approx(1 / 3))
    assert scores.miou == pytest.approx((0.5 + 1 / 3) / 2)


def test_per_class_table_holds_each_column_in_class_order():
    from seglab.core.scores import per_class_table

    cm = np.array([[8, 1, 1], [2, 2, 0], [0, 0, 0]])
    scores = scores_from_confusion(cm)
    table = per_class_table(
        scores,
        ["bg", "a", "b"],
        np.array([0.7, 0.2, 0.1]),
        np.array([0.5, 0.3, 0.2]),
        np.array([1.0, 2.0, 3.0]),
        hidden=[1],
        missed=np.array([0.0, 0.5, np.nan]),
    )
    assert list(table.columns) == [
        "class",
        "train_pixel_share",
        "class_weight",
        "val_iou",
        "val_dice",
        "val_recall",
        "val_predicted_share",
        "val_loss_share",
        "val_pixels",
        "hidden_failure",
        "hidden_how",
        "val_missed",
    ]
    assert list(table["class"]) == ["bg", "a", "b"]
    np.testing.assert_allclose(table.val_iou, [8 / 12, 2 / 5, 0.0])
    np.testing.assert_allclose(table.val_recall, [0.8, 0.5, np.nan])
    np.testing.assert_allclose(table.val_predicted_share, scores.predicted_share)
    np.testing.assert_array_equal(table.val_pixels, [10, 4, 0])
    np.testing.assert_array_equal(table.class_weight, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(table.train_pixel_share, [0.7, 0.2, 0.1])
    np.testing.assert_array_equal(table.val_loss_share, [0.5, 0.3, 0.2])
    assert list(table.hidden_failure) == [False, True, False]
    assert list(table.hidden_how) == ["", "partly found", ""]  # class a: recall 0.5
    np.testing.assert_array_equal(table.val_missed, [0.0, 0.5, np.nan])
    plain = per_class_table(scores, ["bg", "a", "b"], np.zeros(3), np.zeros(3))
    np.testing.assert_array_equal(plain.class_weight, [1.0, 1.0, 1.0])
    assert "val_missed" not in plain and not plain.hidden_failure.any()
    # Whole-number inputs (lists of ints) still give float columns: per_class.csv is typed.
    ints = per_class_table(scores, ["bg", "a", "b"], [1, 0, 0], [0, 1, 0], [1, 2, 3], [], [0, 1, 0])
    floats = ["train_pixel_share", "class_weight", "val_loss_share", "val_missed"]
    assert all(ints[column].dtype == np.float64 for column in floats)


def test_per_class_loss_streams_terms_shares_and_the_loss_over_batches():
    from seglab.losses import CrossEntropy
    from seglab.training.keras_metrics import PerClassLoss

    loss = CrossEntropy()
    metric = PerClassLoss(loss, 3)
    rng = np.random.default_rng(4)
    batches = []
    for size in (2, 1):  # Keras weighs each batch's loss by its size
        y_true = rng.integers(0, 3, (size, 4, 4))
        y_pred = keras.ops.softmax(rng.normal(size=(size, 4, 4, 3)))
        batches.append((y_true, y_pred))
        metric.update_state(y_true, y_pred)
    terms = sum(np.asarray(loss.per_class(t, p)) * len(t) for t, p in batches) / 3
    np.testing.assert_allclose(metric.terms(), terms, rtol=1e-6)
    np.testing.assert_allclose(metric.shares(), terms / terms.sum(), rtol=1e-6)
    expected = sum(float(loss(t, p)) * len(t) for t, p in batches) / 3
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0 and np.isnan(metric.shares()).all()


def test_confusion_matrix_round_trips_through_its_config():
    metric = ConfusionMatrix(4, ignore_index=7, name="cm")
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert (copy.num_classes, copy.ignore_index, copy.name) == (4, 7, "cm")


def test_per_class_loss_passes_the_pixel_weights_on_by_default():
    from seglab.losses import CrossEntropy
    from seglab.training.keras_metrics import PerClassLoss

    y_true = np.array([[[0, 1], [1, 2]]])
    y_pred = keras.ops.softmax(np.random.default_rng(2).normal(size=(1, 2, 2, 3)))
    weights = np.array([[[1.0, 5.0], [5.0, 2.0]]], np.float32)
    weighted, plain = PerClassLoss(CrossEntropy(), 3), PerClassLoss(CrossEntropy(), 3, False)
    assert weighted.name == "loss_terms"
    for metric in (weighted, plain):
        metric.update_state(y_true, y_pred, sample_weight=weights)
    expected = np.asarray(CrossEntropy().per_class(y_true, y_pred, weights))
    np.testing.assert_allclose(weighted.terms(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        plain.terms(), np.asarray(CrossEntropy().per_class(y_true, y_pred)), rtol=1e-6
    )


def test_confusion_counts_stay_exact_past_float32_precision():
    # A float32 counter stops at 2**24 + 1 == 2**24; CamVid-size splits pass 2**24 pixels.
    metric = ConfusionMatrix(2)
    metric.counts.assign(np.full((2, 2), 2**24, np.int64))
    truth = np.array([[[0, 1]]])
    metric.update_state(truth, probabilities_for(truth, 2))
    np.testing.assert_array_equal(metric.matrix(), [[2**24 + 1, 2**24], [2**24, 2**24 + 1]])


def test_a_label_equal_to_the_class_count_is_out_of_range():
    metric = ConfusionMatrix(3)
    metric.update_state(np.array([[[0, 3, 3]]]), probabilities_for(np.array([[[0, 1, 2]]]), 3))
    assert metric.out_of_range == 2


def test_metric_result_counts_a_class_seen_on_one_pixel():
    metric = ConfusionMatrix(3)
    truth = np.array([[[0, 0, 0, 1]]])  # class 1: one pixel, found; class 2 absent
    metric.update_state(truth, probabilities_for(truth, 3))
    assert float(metric.result()) == pytest.approx(1.0)
    metric.update_state(np.array([[[2]]]), probabilities_for(np.array([[[0]]]), 3))
    # class 2 now has a one-pixel union and IoU 0: the mean is over three classes
    assert float(metric.result()) == pytest.approx((3 / 4 + 1 + 0) / 3)


SCORE_CASES = [
    # (tp, fp, fn) per class -> iou, dice, recall
    ("one_pixel_found", [1, 3], [0, 0], [0, 0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]),
    ("one_pixel_missed", [0, 3], [0, 1], [1, 0], [0.0, 0.75], [0.0, 6 / 7], [0.0, 1.0]),
    ("only_false_negatives", [0, 2], [0, 5], [5, 0], [0.0, 2 / 7], [0.0, 4 / 9], [0.0, 1.0]),
    ("only_false_positives", [0, 2], [4, 0], [0, 4], [0.0, 1 / 3], [0.0, 0.5], [np.nan, 1 / 3]),
]


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "iou", "dice", "recall"),
    [case[1:] for case in SCORE_CASES],
    ids=[case[0] for case in SCORE_CASES],
)
def test_scores_from_counts_table(tp, fp, fn, iou, dice, recall):
    from seglab.core.scores import scores_from_counts

    scores = scores_from_counts(np.array(tp), np.array(fp), np.array(fn))
    np.testing.assert_allclose(scores.iou, iou)
    np.testing.assert_allclose(scores.dice, dice)
    np.testing.assert_allclose(scores.recall, recall)


def test_no_class_defined_gives_nan_scores_without_a_warning():
    from seglab.core.scores import nan_mean, scores_from_counts

    zeros = np.zeros(3)
    scores = scores_from_counts(zeros, zeros, zeros)
    assert np.isnan([scores.miou, scores.min_iou, scores.pixel_acc, scores.class_acc]).all()
    assert scores.worst_class == -1
    assert np.isnan(nan_mean(np.array([]))) and np.isnan(nan_mean(np.array([np.nan])))


def test_per_class_loss_of_a_single_one_image_batch():
    from seglab.losses import CrossEntropy
    from seglab.training.keras_metrics import PerClassLoss

    y_true = np.array([[[0, 1], [1, 2]]])
    y_pred = keras.ops.softmax(np.random.default_rng(3).normal(size=(1, 2, 2, 3)))
    metric = PerClassLoss(CrossEntropy(), 3)
    metric.update_state(y_true, y_pred)
    expected = np.asarray(CrossEntropy().per_class(y_true, y_pred))
    np.testing.assert_allclose(metric.terms(), expected, rtol=1e-6)
    assert float(metric.result()) == pytest.approx(expected.sum(), rel=1e-6)


def test_loss_shares_of_a_zero_loss_are_undefined_without_a_warning():
    from seglab.losses import Dice
    from seglab.training.keras_metrics import PerClassLoss

    truth = np.array([[[0, 1]]])
    metric = PerClassLoss(Dice(smooth=0.0), 2)
    metric.update_state(truth, np.eye(2, dtype=np.float32)[truth])  # perfect: every term 0
    assert np.isnan(metric.shares()).all()


def test_confusion_matrix_takes_labels_with_a_trailing_channel():
    truth = np.array([[[0, 1], [2, 2]]])
    metric = ConfusionMatrix(3)
    metric.update_state(truth[..., None], probabilities_for(np.array([[[0, 1], [2, 0]]]), 3))
    np.testing.assert_array_equal(metric.matrix(), [[1, 0, 0], [0, 1, 0], [1, 0, 1]])


# The metrics' state, as Keras lists it (``metric.variables``): exact integer counts (int64: a
# float32 counter stops being exact past 2^24 pixels) and float64 loss sums, each named.
STATE_CASES = {
    "confusion_matrix": (
        "ConfusionMatrix",
        [("counts", "int64", (3, 3)), ("out_of_range", "int64", ())],
    ),
    "per_class_loss": ("PerClassLoss", [("totals", "float64", (3,)), ("count", "float64", ())]),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_metric_state_variables_have_their_names_dtypes_and_shapes(case):
    from seglab.losses import CrossEntropy
    from seglab.training.keras_metrics import PerClassLoss

    kind, expected = STATE_CASES[case]
    metric = ConfusionMatrix(3) if kind == "ConfusionMatrix" else PerClassLoss(CrossEntropy(), 3)
    state = [(v.name, v.dtype, tuple(v.shape)) for v in metric.variables]
    assert state == expected
    assert keras.ops.convert_to_numpy(metric.result()).dtype == np.float32
    assert metric.name == {"ConfusionMatrix": "miou", "PerClassLoss": "loss_terms"}[kind]


HISTOGRAM_CASES = [
    # (labels, keep, num_classes, expected (N, C))
    ([[0, 1, 1, 2]], [[True] * 4], 3, [[1, 2, 1]]),
    ([[0, 1, 1, 2], [2, 2, 2, 0]], [[True] * 4, [True] * 4], 3, [[1, 2, 1], [1, 0, 3]]),
    ([[0, 9, 1, 2]], [[True, False, True, False]], 3, [[1, 1, 0]]),  # only where kept
    ([[[1, 1], [0, 3]], [[3, 3], [3, 3]]], [[[True] * 2] * 2] * 2, 4, [[1, 2, 0, 1], [0, 0, 0, 4]]),
    ([[0, 0]], [[False, False]], 2, [[0, 0]]),  # nothing kept
]


@pytest.mark.parametrize(("labels", "keep", "num_classes", "expected"), HISTOGRAM_CASES)
def test_class_histograms_count_each_image_apart(labels, keep, num_classes, expected):
    counts = class_histograms(np.array(labels), np.array(keep), num_classes)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize(
    ("recall", "predicted_share", "how"),
    [
        (0.0, 0.0, "never predicted"),  # missed entirely
        (0.0, 0.01, "predicted, never on it"),  # found at the wrong place
        (0.2, 0.01, "partly found"),
        (float("nan"), 0.0, "never predicted"),
    ],
)
def test_a_hidden_class_is_said_to_be_missed_entirely_elsewhere_or_partly_found(
    recall, predicted_share, how
):
    from seglab.core.verdicts import how_hidden

    assert how_hidden([0.9, recall], [0.9, predicted_share], [1]) == ["", how]
    assert how_hidden([0.9, recall], [0.9, predicted_share], []) == ["", ""]
