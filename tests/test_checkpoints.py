"""Best-checkpoint selection: the monitor, ties broken by the tie-breaker, and what is restored."""

import json
import math

import numpy as np
import pytest
from conftest import skip_where_capped_below

from seglab.training.checkpoints import Checkpointer
from seglab.training.model import build_unet

NAN = math.nan

# (monitor per epoch, tie-breaker per epoch, mode, tolerance, expected best epoch)
SELECTION_CASES = {
    # The untrained-first-epoch trap: the worst class is 0 in every epoch.
    "monitor_zero_throughout_takes_best_miou": ([0, 0, 0, 0], [0.1, 0.3, 0.5, 0.4], "max", 0.01, 3),
    "monitor_zero_throughout_exact_ties": ([0, 0, 0, 0], [0.1, 0.3, 0.5, 0.4], "max", 0.0, 3),
    "strictly_better_monitor_wins_over_tie_breaker": ([0.0, 0.2], [0.9, 0.1], "max", 0.01, 2),
    "monitor_rises_then_falls": ([0.2, 0.5, 0.4], [0.5, 0.5, 0.9], "max", 0.0, 2),
    "equal_tie_breaker_keeps_the_earlier_epoch": ([0.2, 0.2], [0.5, 0.5], "max", 0.0, 1),
    "within_tolerance_lower_tie_breaker_loses": ([0.30, 0.305], [0.6, 0.5], "max", 0.01, 1),
    "within_tolerance_higher_tie_breaker_wins": ([0.30, 0.295], [0.5, 0.6], "max", 0.01, 2),
    "beyond_tolerance_is_an_improvement": ([0.30, 0.3125], [0.6, 0.1], "max", 0.01, 2),
    # Ties may not drift down: epoch 3 ties epoch 2 but is 0.016 below the peak of epoch 1.
    "ties_do_not_drift_below_the_peak": ([0.30, 0.292, 0.284], [0.5, 0.6, 0.7], "max", 0.01, 2),
    "mode_min_follows_a_falling_loss": ([0.5, 0.4, 0.45], [0.1, 0.1, 0.9], "min", 0.0, 2),
    "mode_min_does_not_take_a_rising_loss": ([0.5, 0.6], [0.1, 0.9], "min", 0.0, 1),
    "nan_monitor_is_never_selected": ([NAN, 0.1, NAN], [0.9, 0.1, 0.9], "max", 0.01, 2),
    "all_nan_selects_nothing": ([NAN, NAN], [0.5, 0.6], "max", 0.01, 0),
    "nan_tie_breaker_is_beaten_by_a_number": ([0.0, 0.0], [NAN, 0.2], "max", 0.01, 2),
    # ties may not drift: 0.586 ties the selected 0.595 but is 0.014 below the peak 0.60
    "ties_stay_within_the_tolerance_of_the_peak": (
        [0.50, 0.60, 0.595, 0.586],
        [0.1, 0.2, 0.3, 0.4],
        "max",
        0.01,
        3,
    ),
}


@pytest.mark.parametrize("case", sorted(SELECTION_CASES))
def test_best_epoch_selection(case, tmp_path):
    monitor, tie, mode, tolerance, expected = SELECTION_CASES[case]
    checkpointer = Checkpointer(tmp_path, "val/min_iou", mode, "val/miou", tolerance)
    for epoch, (value, tie_value) in enumerate(zip(monitor, tie, strict=True), start=1):
        checkpointer.consider(epoch, {"val/min_iou": value, "val/miou": tie_value})
    assert checkpointer.best_epoch == expected


def tiny_model():
    model = build_unet((16, 16, 3), 2, depth=1, base_filters=2)
    model.compile("adam", "mse")
    return model


def test_best_and_last_checkpoints_hold_their_epochs(tmp_path):
    model = tiny_model()
    checkpointer = Checkpointer(tmp_path)
    for epoch, value in enumerate([0.0, 0.0, 0.0], start=1):
        checkpointer.save(
            model, epoch, {"val/min_iou": value, "val/miou": [0.2, 0.6, 0.4][epoch - 1]}
        )
    best = json.loads((tmp_path / "best" / "state.json").read_text())
    assert (best["epoch"], best["best_epoch"], best["best_tie"]) == (2, 2, 0.6)
    assert json.loads((tmp_path / "last" / "state.json").read_text())["epoch"] == 3


def test_unknown_monitor_or_tie_breaker_is_named_with_the_logged_metrics(tmp_path):
    metrics = {"val/min_iou": 0.1, "val/miou": 0.2}
    with pytest.raises(ValueError, match=r"checkpoint.monitor='val/nope' is not a logged metric"):
        Checkpointer(tmp_path, "val/nope").consider(1, metrics)
    with pytest.raises(ValueError, match=r"checkpoint.tie_breaker='val/x' is not a logged metric"):
        Checkpointer(tmp_path, tie_breaker="val/x").consider(1, metrics)
    with pytest.raises(ValueError, match=r"checkpoint.tie_tolerance must be >= 0, got -1"):
        Checkpointer(tmp_path, tie_tolerance=-1)
    with pytest.raises(ValueError, match=r"checkpoint.mode='up' is not one of"):
        Checkpointer(tmp_path, mode="up")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint to resume from in"):
        Checkpointer(tmp_path / "empty").read_state()


def test_selection_state_survives_a_restore(tmp_path):
    model = tiny_model()
    first = Checkpointer(tmp_path)
    first.save(model, 1, {"val/min_iou": 0.3, "val/miou": 0.5})
    first.save(model, 2, {"val/min_iou": 0.295, "val/miou": 0.6})  # a tie, won on mIoU
    resumed = Checkpointer(tmp_path)
    resumed.restore(model)
    assert (resumed.best, resumed.best_epoch, resumed.best_tie, resumed.peak) == (
        0.295,
        2,
        0.6,
        0.3,
    )
    # Still 0.016 below the peak: no drift after a resume either.
    assert not resumed.consider(3, {"val/min_iou": 0.284, "val/miou": 0.9})


@pytest.mark.parametrize("reader", ["saving", "fresh"])  # from memory; from the files
@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("improving", [0.2, 0.5, 0.4], 2),
        ("nan", [NAN, NAN], 2),  # nothing selected: the last checkpoint stands in
    ],
)
def test_restore_best_loads_the_best_weights_or_the_last_when_none_was_selected(
    tmp_path, name, values, expected, reader
):
    model = tiny_model()
    weights = {}
    checkpointer = Checkpointer(tmp_path / name)
    for epoch, value in enumerate(values, start=1):
        model.set_weights([w + 1.0 for w in model.get_weights()])  # a new state each epoch
        weights[epoch] = model.get_weights()
        checkpointer.save(model, epoch, {"val/min_iou": value, "val/miou": 0.5})
    model.set_weights([w * 0 for w in model.get_weights()])
    if reader == "fresh":  # another process, as after a resume
        checkpointer = Checkpointer(tmp_path / name)
    assert checkpointer.restore_best(model) == expected
    for got, want in zip(model.get_weights(), weights[expected], strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("error::UserWarning")  # Keras warns when it skips the optimizer
def test_restore_brings_back_the_weights_and_the_optimizer_state(tmp_path):
    model = tiny_model()
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    y = np.random.default_rng(1).random((2, 16, 16, 2)).astype(np.float32)
    model.fit(x, y, epochs=2, verbose=0)  # moments and step count are no longer zero
    Checkpointer(tmp_path).save(model, 1, {"val/min_iou": 0.1, "val/miou": 0.2})
    saved_weights = [w.copy() for w in model.get_weights()]
    saved_optimizer = [np.array(v) for v in model.optimizer.variables]
    fresh = tiny_model()  # compiled, its optimizer not built yet: as the trainer resumes
    state = Checkpointer(tmp_path).restore(fresh)
    assert state.epoch == 1
    for got, want in zip(fresh.get_weights(), saved_weights, strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(np.abs(v).sum() > 0 for v in saved_optimizer)
    for got, want in zip(fresh.optimizer.variables, saved_optimizer, strict=True):
        np.testing.assert_array_equal(np.array(got), want)


def test_the_metric_names_known_before_a_run_are_the_ones_each_epoch_logs():
    from conftest import CLASSES, EPOCH_KEYS

    from seglab.schema import epoch_metric_keys

    assert epoch_metric_keys(CLASSES) == sorted(EPOCH_KEYS)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "checkpoint.monitor=val/iou/spec",
            r"'val/iou/spec' is not a logged metric; choose .*speck",
        ),
        ("checkpoint.tie_breaker=val/mIoU", r"'val/mIoU' is not a logged metric"),
        ("metrics.overlays=0", r"metrics.overlays must be >= 1, got 0"),
        ("metrics.gallery_pool=0", r"metrics.gallery_pool >= 1, got 4 and 0"),
        (
            "metrics.boundary=sometimes",
            r"metrics.boundary='sometimes' is not one of \[true, false\]",
        ),
    ],
)
def test_a_run_names_a_bad_option_before_it_starts(tmp_path, option, message):
    from conftest import compose_train

    from seglab.train import run

    cfg = compose_train("debug=smoke", option, f"paths.output_dir={tmp_path}")
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run for a bad option


def test_restore_into_a_built_mixed_precision_optimizer_keeps_its_variables_once(tmp_path):
    skip_where_capped_below("float16")
    # The trainer builds the optimizer before it restores; the loss scale optimizer of mixed
    # precision would add its step counter and scale a second time if restore built it again.
    from seglab.training.runtime import FLOAT32, Precision, set_precision

    set_precision(Precision("float16", "test"))
    try:
        model = tiny_model()
        x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
        y = np.random.default_rng(1).random((2, 16, 16, 2)).astype(np.float32)
        model.fit(x, y, epochs=2, verbose=0)
        Checkpointer(tmp_path).save(model, 1, {"val/min_iou": 0.1, "val/miou": 0.2})
        saved = [np.array(v) for v in model.optimizer.variables]
        fresh = tiny_model()
        fresh.optimizer.build(fresh.trainable_variables)
        Checkpointer(tmp_path).restore(fresh)
        assert len(fresh.optimizer.variables) == len(saved)
        for got, want in zip(fresh.optimizer.variables, saved, strict=True):
            np.testing.assert_array_equal(np.array(got), want)
    finally:
        set_precision(FLOAT32)
