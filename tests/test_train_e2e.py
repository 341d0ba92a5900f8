"""`python -m seglab.train trainer=smoke` end to end, into a temporary MLflow store."""

import os
import subprocess
import sys

import pytest
from conftest import CLASSES, EPOCH_KEYS, artifact_paths
from mlflow.tracking import MlflowClient


def train(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "seglab.train",
            "trainer=smoke",
            f"paths.output_dir={tmp_path}",
            *overrides,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    result = train(tmp_path, "class_weights=median_frequency", "augment=light")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    return tmp_path, result, client, runs


@pytest.mark.slow
def test_smoke_run_finishes_as_one_mlflow_run_in_the_given_store(smoke_run):
    _, _, _, runs = smoke_run
    assert len(runs) == 1
    assert runs[0].info.status == "FINISHED"


@pytest.mark.slow
def test_every_epoch_metric_has_one_value_per_epoch(smoke_run):
    _, _, client, runs = smoke_run
    for key in EPOCH_KEYS:
        history = client.get_metric_history(runs[0].info.run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key


@pytest.mark.slow
def test_config_is_logged_as_params_and_artifact_with_figures_tables_and_tags(smoke_run):
    tmp_path, _, client, runs = smoke_run
    run = runs[0]
    assert run.data.params["trainer.epochs"] == "2"
    assert run.data.params["data.image_size"] == "32"
    assert run.data.params["loss._target_"] == "seglab.losses.CrossEntropy"
    assert run.data.params["class_weights.scheme"] == "median_frequency"
    weights = [float(run.data.params[f"class_weight/{name}"]) for name in CLASSES]
    assert weights[4] > weights[1] > weights[0] > 0
    artifacts = artifact_paths(client, run.info.run_id)
    assert {
        "config.yaml",
        "class_weights.csv",
        "per_class.csv",
        "confusion_matrix.csv",
        "figures/loss_vs_class_iou.png",
        "figures/confusion_matrix.png",
        "figures/val_overlays.png",
        "figures/augmented_samples.png",
    } <= artifacts
    assert run.data.tags["seglab.worst_class"] in CLASSES
    assert run.data.tags["seglab.hidden_failure"] in {"true", "false"}
    assert str(tmp_path / "mlartifacts") in run.info.artifact_uri


@pytest.mark.slow
def test_terminal_prints_the_per_class_table_with_the_loss(smoke_run):
    _, result, _, runs = smoke_run
    out = result.stdout
    assert "epoch 2/2" in out and "val/loss" in out
    assert "class train_pixel_share class_weight val_iou val_dice val_loss_share" in out
    for name in CLASSES:
        assert f"\n{name:>10} " in out
    assert f"MLflow run {runs[0].info.run_id}" in out


@pytest.mark.slow
def test_counts_are_cached_so_a_second_run_reuses_them(smoke_run):
    tmp_path, _, _, _ = smoke_run
    assert len(list((tmp_path / "cache").glob("class_counts-*.json"))) == 2  # train and val
