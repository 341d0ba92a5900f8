"""Multirun -> MLflow parent/child runs, the sweep report, and the notebook over it."""

import json

import nbformat
import pytest
from conftest import CLASSES, artifact_paths, assert_children_complete
from conftest import run_sweep as sweep
from nbclient import NotebookClient

from seglab import analysis
from seglab.paths import project_root
from seglab.report import main as report_main
from seglab.sweep import count_jobs, run_name


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("basic")
    return (tmp_path, *sweep(tmp_path, "loss=ce,dice", "class_weights=none,median_frequency"))


@pytest.mark.slow
def test_basic_sweep_makes_one_parent_and_a_child_per_job(basic_sweep):
    _, result, _, parents, children = basic_sweep
    (parent,) = parents
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.run_name for c in children} == {
        f"loss={loss},class_weights={weights}"
        for loss in ("ce", "dice")
        for weights in ("none", "median_frequency")
    }
    for child in children:
        assert child.info.status == "FINISHED"
        loss, weights = child.data.tags["seglab.loss"], child.data.tags["seglab.class_weights"]
        assert child.info.run_name == f"loss={loss},class_weights={weights}"
        assert child.data.tags["seglab.augment"] == "none"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["seglab.jobs"] == "4"
    assert "[sweep] job 4/4 started" in result.stdout
    assert "[sweep] 4 jobs; parent MLflow run" in result.stdout


@pytest.mark.slow
def test_parent_holds_the_sweep_table_and_figures(basic_sweep):
    _, _, client, (parent,), _ = basic_sweep
    paths = artifact_paths(client, parent.info.run_id)
    assert {
        "sweep_report.md",
        "sweep_summary.csv",
        "sweep_history.csv",
        "figures/final_iou_heatmap.png",
        "figures/val_loss_vs_min_iou.png",
        "figures/class_iou_curves.png",
    } <= paths


@pytest.mark.slow
def test_report_numbers_equal_the_logged_values(basic_sweep, tmp_path):
    sweep_tmp, _, client, _, children = basic_sweep
    assert report_main([str(sweep_tmp / "sweep"), "--out", str(tmp_path)]) == 0
    summary = analysis.summary(analysis.history(client, children), children).set_index("run_id")
    for child in children:
        metrics = child.data.metrics  # MLflow's latest value of each key
        row = summary.loc[child.info.run_id]
        assert row.val_loss == metrics["val/loss"]
        assert row.min_iou == metrics["val/min_iou"]
        assert row.miou == metrics["val/miou"]
        ious = [metrics[f"val/iou/{c}"] for c in CLASSES]
        assert row.worst_class == CLASSES[ious.index(min(ious))]  # first of ties, by index
    history = __import__("pandas").read_csv(tmp_path / "history.csv")
    assert set(history.metric) >= {"val/loss", "val/iou", "val/loss_share", "val/miou"}
    assert len(history[(history.metric == "val/iou")]) == 4 * 2 * len(CLASSES)
    for name in (
        "report.md",
        "history.parquet",
        "summary.csv",
        "final_iou_heatmap.png",
        "val_loss_vs_min_iou.png",
        "class_iou_curves.png",
    ):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "report.md").read_text()
    assert "Spearman correlation of val loss with worst-class IoU" in text


@pytest.mark.slow
def test_report_accepts_a_parent_run_id_and_an_experiment_name(basic_sweep, tmp_path, capsys):
    sweep_tmp, _, _, (parent,), _ = basic_sweep
    uri = f"sqlite:///{sweep_tmp}/mlflow.db"
    assert report_main([parent.info.run_id, "--tracking-uri", uri, "--out", str(tmp_path)]) == 0
    assert "4 runs." in capsys.readouterr().out
    assert report_main(["seglab", "--tracking-uri", uri, "--out", str(tmp_path / "e")]) == 0
    assert report_main(["nope", "--tracking-uri", uri]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_executes_against_a_sweep(basic_sweep, monkeypatch):
    sweep_tmp = basic_sweep[0]
    monkeypatch.setenv("SEGLAB_SWEEP", str(sweep_tmp / "sweep"))
    notebook = nbformat.read(project_root() / "notebooks/per_class_iou_analysis.ipynb", 4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = "".join(str(o) for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "4 runs of sweep" in outputs and "Spearman(val loss, worst-class IoU)" in outputs
    assert "image/png" in outputs


@pytest.mark.slow
def test_joblib_sweep_of_six_jobs_loses_no_run_metric_or_artifact(tmp_path):
    _, client, (parent,), children = sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "loss=ce,dice",
        "class_weights=none,median_frequency,inverse_frequency",
    )
    assert len(children) == 6 and parent.info.status == "FINISHED"
    assert_children_complete(client, parent, children)


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep(tmp_path):
    result, _, (parent,), children = sweep(
        tmp_path,
        "~loss",
        "+loss._target_=sweep_helpers.NaNAfter",
        "+loss._partial_=true",
        "+loss.after=1000000,5",
        check=False,
    )
    assert len(children) == 2
    assert result.returncode == 1  # after both jobs ran and the parent got its report
    by_status = {c.info.status: c for c in children}
    assert set(by_status) == {"FINISHED", "FAILED"}
    reason = by_status["FAILED"].data.tags["seglab.failure_reason"]
    assert reason.startswith("FloatingPointError") and "loss became nan" in reason
    assert parent.info.status == "FAILED" and parent.data.tags["seglab.failed_jobs"] == "1"
    assert "[sweep] 1 of 2 jobs FAILED: ['+loss.after=5']" in result.stderr
    assert "[sweep] job failed: FloatingPointError" in result.stderr


def test_child_run_name_lists_the_swept_values_only():
    overrides = ["debug=smoke", "loss=dice", "+loss.after=5", "paths.output_dir=/x"]
    assert run_name(overrides, ["loss", "loss.after"]) == "loss=dice,+loss.after=5"


def test_job_count_multiplies_sweeps_and_lets_the_command_line_win():
    assert count_jobs(["loss=ce,dice", "trainer.epochs=3"]) == 2
    assert count_jobs(["loss=ce,dice"], {"class_weights": "none,enet,manual"}) == 6
    assert count_jobs(["class_weights=none"], {"class_weights": "none,enet"}) == 1


def test_sweep_file_is_required_for_a_sweep_dir(tmp_path):
    with pytest.raises(ValueError, match="is not a seglab sweep directory"):
        analysis.read_sweep_file(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"parent_run_id": "x"}))
    assert analysis.read_sweep_file(tmp_path)["parent_run_id"] == "x"
