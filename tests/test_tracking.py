import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from seglab.core.records import EpochRecord
from seglab.core.scores import scores_from_confusion
from seglab.tracking.run_log import epoch_metrics
from seglab.tracking.tracker import MlflowTracker, flatten


def test_uri_precedence_is_config_then_environment_then_default(monkeypatch):
    assert MlflowTracker(default_uri="sqlite:///d.db").uri == "sqlite:///d.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert MlflowTracker(default_uri="sqlite:///d.db").uri == "http://127.0.0.1:5999"
    assert MlflowTracker(tracking_uri="sqlite:///x.db").uri == "sqlite:///x.db"


def test_epoch_metrics_are_keyed_by_path_per_class():
    cm = np.array([[8, 0], [2, 0]])
    record = EpochRecord(3, 0.5, 0.25, 0.3, np.array([0.6, 0.4]), cm, scores_from_confusion(cm), 1)
    metrics = epoch_metrics(record, ["bg", "rare"], hidden=[1])
    assert metrics == {
        "train/loss": 0.5,
        "val/loss": 0.25,
        "val/ce": 0.3,
        "val/loss_share/bg": 0.6,
        "val/loss_share/rare": 0.4,
        "val/miou": pytest.approx(0.4),
        "val/min_iou": 0.0,
        "val/pixel_acc": pytest.approx(0.8),
        "val/class_acc": pytest.approx(0.5),
        "val/hidden_count": 1.0,
        "val/iou/bg": pytest.approx(0.8),
        "val/dice/bg": pytest.approx(16 / 18),
        "val/recall/bg": 1.0,
        "val/predicted_share/bg": 1.0,
        "val/hidden/bg": 0.0,
        "val/iou/rare": 0.0,
        "val/dice/rare": 0.0,
        "val/recall/rare": 0.0,
        "val/predicted_share/rare": 0.0,
        "val/hidden/rare": 1.0,
    }


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": "1",
        "a.c.d": "[1, 2]",
        "e": "None",
    }


def only_run(uri: str):
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("t").experiment_id]
    )
    assert len(runs) == 1
    return runs[0]


def test_run_finishes_with_metrics_per_step_and_artifacts_under_the_artifact_root(
    sqlite_uri, tmp_path
):
    tracker = MlflowTracker("t", tracking_uri=sqlite_uri, artifact_root=str(tmp_path / "art"))
    with tracker.start_run():
        tracker.log_metrics({"val/miou": 0.5, "val/iou/a": float("nan")}, step=1)
        tracker.log_metrics({"val/miou": 0.7, "val/iou/a": 0.1}, step=2)
        tracker.log_params({f"p{i}": i for i in range(150)})  # more than one log_batch
        tracker.log_text("x: 1\n", "config.yaml")
    run = only_run(sqlite_uri)
    assert run.info.status == "FINISHED"
    history = MlflowClient(sqlite_uri).get_metric_history(run.info.run_id, "val/iou/a")
    assert [m.step for m in history] == [1, 2]
    assert math.isnan(history[0].value) and history[1].value == pytest.approx(0.1)
    assert len(run.data.params) == 150
    assert (tmp_path / "art" / "t" / run.info.run_id / "artifacts" / "config.yaml").is_file()


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (RuntimeError("loss is NaN"), "FAILED", "RuntimeError: loss is NaN"),
        (KeyboardInterrupt(), "KILLED", "interrupted (Ctrl-C or SIGTERM)"),
    ],
)
def test_run_that_raises_ends_with_its_status_and_reason_and_keeps_its_metrics(
    sqlite_uri, error, status, reason
):
    tracker = MlflowTracker("t", tracking_uri=sqlite_uri)
    with pytest.raises(type(error)), tracker.start_run():
        tracker.log_metrics({"train/loss": 1.0}, step=1)
        raise error
    run = only_run(sqlite_uri)
    assert run.info.status == status
    assert run.data.tags["seglab.failure_reason"] == reason
    assert run.data.metrics["train/loss"] == 1.0
