"""`python -m seglab.train debug=smoke` end to end, into a temporary MLflow store."""

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, EPOCH_KEYS, artifact_paths
from mlflow.tracking import MlflowClient

from seglab.core.per_image import PerImageCounts
from seglab.core.verdicts import HiddenFailureRule, hidden_classes
from seglab.training.runtime import resolve_precision, usable_cores


def train(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "seglab.train",
            "debug=smoke",
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
    assert {a.path for a in client.list_artifacts(run.info.run_id, "per_image")} == {
        "per_image/val.parquet"  # shapes has no test split
    }
    # the gallery: artifacts, one PNG per epoch, and no image key to crowd the UI's chart view
    # (one folder per class it showed: each epoch's hidden failures, else its worst class)
    pictures = [
        picture.path.split("/", 1)[1]
        for folder in client.list_artifacts(run.info.run_id, "gallery")
        for picture in client.list_artifacts(run.info.run_id, folder.path)
    ]
    assert {p.split("/")[0] for p in pictures} <= set(CLASSES)
    assert sorted({p.split("/")[1] for p in pictures}) == ["epoch_001.png", "epoch_002.png"]
    assert not client.list_artifacts(run.info.run_id, "images")
    assert json.loads(run.data.tags["seglab.class_names"]) == CLASSES
    assert str(tmp_path / "mlartifacts") in run.info.artifact_uri


def history(client, run, key):
    return [
        m.value
        for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    ]


def artifact_frame(client, run, path, reader=pd.read_csv):
    local = client.download_artifacts(run.info.run_id, path)
    return reader(local)


@pytest.mark.slow
def test_tags_and_per_class_table_come_from_the_last_epoch(smoke_run):
    _, _, client, runs = smoke_run
    run = runs[0]
    final_iou = [history(client, run, f"val/iou/{c}")[-1] for c in CLASSES]
    worst = CLASSES[int(np.nanargmin(final_iou))]
    assert run.data.tags["seglab.worst_class"] == worst
    table = artifact_frame(client, run, "per_class.csv")
    assert list(table["class"]) == CLASSES
    for column, key in (("val_iou", "iou"), ("val_recall", "recall"), ("val_dice", "dice")):
        expected = [history(client, run, f"val/{key}/{c}")[-1] for c in CLASSES]
        np.testing.assert_allclose(table[column], expected, rtol=1e-9, err_msg=column)
    # The verdict recomputed from the logged history, independently of the run's own state.
    pixels = table.val_pixels.to_numpy()
    hidden = hidden_classes(
        history(client, run, "val/loss"), final_iou, pixels, HiddenFailureRule()
    )
    assert run.data.tags["seglab.hidden_failure_classes"] == ",".join(CLASSES[c] for c in hidden)
    assert run.data.tags["seglab.hidden_failure"] == str(bool(hidden)).lower()
    assert list(table.hidden_failure) == [c in hidden for c in range(len(CLASSES))]
    for c, name in enumerate(CLASSES):
        assert history(client, run, f"val/hidden/{name}")[-1] == float(c in hidden)


@pytest.mark.slow
def test_the_run_and_experiment_descriptions_state_the_verdict_and_what_seglab_logs(smoke_run):
    _, _, client, runs = smoke_run
    run = runs[0]
    final = {k: history(client, run, k)[-1] for k in ("val/loss", "val/miou", "val/min_iou")}
    hidden = run.data.tags["seglab.hidden_failure_classes"]
    assert run.data.tags["mlflow.note.content"] == (
        f"val/loss {final['val/loss']:.4g}, mIoU {final['val/miou']:.3f}, worst class "
        f"{run.data.tags['seglab.worst_class']} (IoU {final['val/min_iou']:.3f}); "
        + (f"hidden failures: {hidden}" if hidden else "no hidden failure")
    )
    experiment = client.get_experiment(run.info.experiment_id)
    assert "val/iou/<class>" in experiment.tags["mlflow.note.content"]


@pytest.mark.slow
def test_class_weights_table_holds_the_training_counts_its_weights_came_from(smoke_run):
    _, _, client, runs = smoke_run
    run = runs[0]
    table = artifact_frame(client, run, "class_weights.csv")
    assert list(table["class"]) == CLASSES
    assert table.train_pixels.sum() == 16 * 32 * 32  # debug=smoke: 16 training images, 32x32
    assert (table.train_images <= 16).all() and table.train_images[0] == 16
    np.testing.assert_allclose(table.train_pixel_share, table.train_pixels / (16 * 32 * 32))
    # Median frequency balancing from the table's own columns (Eigen & Fergus: a class's
    # frequency over the images that contain it; every image here has 32 x 32 pixels), scaled
    # so that a training pixel weighs 1 on average (class_weights.normalize=pixel).
    frequency = table.train_pixels / (table.train_images * 32 * 32)
    raw = np.median(frequency) / frequency
    expected = raw / (table.train_pixel_share * raw).sum()
    np.testing.assert_allclose(table.weight, expected, rtol=1e-6)
    logged = [float(run.data.params[f"class_weight/{name}"]) for name in CLASSES]
    np.testing.assert_allclose(logged, table.weight, rtol=1e-5)


@pytest.mark.slow
def test_per_image_counts_add_up_to_the_final_confusion_matrix(smoke_run):
    _, _, client, runs = smoke_run
    run = runs[0]
    frame = artifact_frame(client, run, "per_image/val.parquet", pd.read_parquet)
    counts = PerImageCounts.from_frame(frame, CLASSES)
    assert len(counts.names) == 16  # debug=smoke: 16 validation images
    cm = artifact_frame(client, run, "confusion_matrix.csv").set_index("true\\predicted")
    cm = cm.loc[CLASSES, CLASSES].to_numpy()
    np.testing.assert_array_equal(counts.tp.sum(0), np.diag(cm))
    np.testing.assert_array_equal(counts.fp.sum(0), cm.sum(0) - np.diag(cm))
    np.testing.assert_array_equal(counts.fn.sum(0), cm.sum(1) - np.diag(cm))
    missed = [history(client, run, f"val/missed/{c}") for c in CLASSES]
    np.testing.assert_allclose([m[-1] for m in missed], counts.missed(), equal_nan=True)
    assert all(len(m) == 1 for m in missed)  # once, at the last epoch
    # The same pass's calibration: every valid pixel once per class, its ECE from those bins.
    reliability = artifact_frame(client, run, "calibration/val.csv")
    pixels = reliability.groupby("class", sort=False).pixels.sum()
    assert list(pixels.index) == CLASSES and (pixels == cm.sum()).all()
    gaps = (reliability.mean_probability - reliability.truly_class).abs() * reliability.pixels
    expected = gaps.groupby(reliability["class"], sort=False).sum() / cm.sum()
    ece = [history(client, run, f"val/ece/{c}") for c in CLASSES]
    assert all(len(e) == 1 for e in ece)
    np.testing.assert_allclose([e[-1] for e in ece], expected.to_numpy(), rtol=1e-6)


@pytest.mark.slow
def test_every_run_records_the_code_the_library_versions_and_its_timings(smoke_run):
    _, _, _, runs = smoke_run
    tags = runs[0].data.tags
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert tags["seglab.git_commit"] == (head or "unknown")
    assert tags["seglab.git_dirty"] in {"true", "false"}
    for package in ("seglab", "tensorflow", "keras", "mlflow", "numpy"):
        assert tags[f"version.{package}"] == version(package)
    seconds = {k: float(tags[f"seglab.seconds.{k}"]) for k in ("end_of_run", "boundary")}
    assert 0 <= seconds["boundary"] < seconds["end_of_run"]  # where the end of the run went


@pytest.mark.slow
def test_terminal_prints_the_per_class_table_with_the_loss(smoke_run):
    _, result, _, runs = smoke_run
    out = result.stdout
    assert "epoch 2/2" in out and "val/loss" in out
    assert (
        "class train_pixel_share class_weight val_iou val_dice val_recall val_predicted_share "
        "val_loss_share hidden_failure hidden_how val_missed val_boundary_iou val_hd95" in out
    )
    (run,) = runs
    for kind in ("boundary_iou", "hd95", "nsd"):  # where each class's outline is, logged
        assert {f"val/{kind}/{name}" for name in CLASSES} <= set(run.data.metrics)
    assert "val/class_acc" in out and "hidden failures:" in out
    precision = resolve_precision("auto")  # the default, logged as what it resolved to
    assert f"precision: {precision.name} ({precision.reason}); {usable_cores()} TensorFlow" in out
    assert run.data.params["precision"] == precision.name
    assert run.data.params["trainer.precision"] == "auto"
    for name in CLASSES:
        assert f"\n{name:>10} " in out
    assert f"MLflow run {runs[0].info.run_id}" in out


@pytest.mark.slow
def test_a_run_prints_no_tensorflow_start_up_lines_or_retracing_warnings(smoke_run):
    _, result, _, _ = smoke_run
    for noise in ("oneDNN custom operations", "cuInit", "cuda drivers", "retracing"):
        assert noise not in result.stdout + result.stderr, noise


def test_bad_input_ends_the_command_with_one_line_that_names_it(tmp_path):
    result = train(tmp_path, "model.depth=3", "data.image_size=36")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "seglab train: model.depth=3 needs image height and width divisible by 2**3=8, got "
        "36x36; choose an image size that is a multiple of 8 or a smaller model.depth"
    ]


def test_an_unknown_group_option_ends_the_command_in_one_line_with_the_choices(tmp_path):
    result = train(tmp_path, "-m", "class_weights=none,median_freq")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("seglab train: class_weights='median_freq' is not one of ['effective")
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything started


@pytest.mark.slow
def test_counts_are_cached_so_a_second_run_reuses_them(smoke_run):
    tmp_path, _, _, _ = smoke_run
    assert len(list((tmp_path / "cache").glob("class_counts-*.json"))) == 2  # train and val
