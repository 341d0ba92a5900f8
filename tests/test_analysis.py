"""Rankings and mismatch lines on a hand-made run summary (no MLflow needed)."""

import pandas as pd
import pytest

from seglab.analysis import rankings, spearman, split_key


def summary(rows):
    columns = ["run_id", "run_name", "status", "loss", "val_loss", "min_iou", "miou", "worst_class"]
    return pd.DataFrame(rows, columns=columns)


RUNS = summary(
    [
        ("a", "ce,none", "FINISHED", "ce", 0.02, 0.00, 0.79, "speck"),
        ("b", "ce,median", "FINISHED", "ce", 0.03, 0.48, 0.83, "speck"),
        ("c", "dice,none", "FINISHED", "dice", 0.01, 0.92, 0.98, "speck"),
        ("d", "dice,median", "FINISHED", "dice", 0.70, 0.06, 0.58, "disk"),
        ("e", "failed", "FAILED", "ce", 0.001, 0.99, 0.99, "speck"),
    ]
)


def test_rankings_ignore_unfinished_runs_and_rank_three_ways():
    ranked = rankings(RUNS)
    assert list(ranked.table.run_name) == ["dice,none", "ce,none", "ce,median", "dice,median"]
    assert list(ranked.table.rank_by_min_iou) == [1, 4, 2, 3]
    assert list(ranked.table.rank_by_miou) == [1, 3, 2, 4]
    assert ranked.best_by_loss == ranked.best_by_min_iou == "dice,none"


def test_mismatch_is_reported_within_a_loss_when_not_over_all_runs():
    (line,) = rankings(RUNS).mismatches
    assert line.startswith("Among loss=ce, the lowest val_loss (ce,none: 0.0200) has worst-class")
    assert "ce,median reaches 0.480" in line


def test_global_mismatch_is_reported_first():
    ranked = rankings(RUNS[RUNS.loss == "ce"])
    assert ranked.mismatches[0].startswith("Among all runs, the lowest val_loss (ce,none")
    assert len(ranked.mismatches) == 1  # one loss only: no per-loss repeat


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 2], [2, 1], float("nan")),
    ],
)
def test_spearman_on_ranks(x, y, expected):
    value = spearman(pd.Series(x, dtype=float), pd.Series(y, dtype=float))
    assert value == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("val/iou/speck", ("val/iou", "speck")),
        ("val/loss_share/bg", ("val/loss_share", "bg")),
        ("val/loss", ("val/loss", "")),
        ("val/miou", ("val/miou", "")),
    ],
)
def test_metric_keys_split_into_metric_and_class(key, expected):
    assert split_key(key) == expected
