"""Multirun -> MLflow parent/child runs, the sweep report, and the notebook over it."""

import json
from pathlib import Path

import nbformat
import pytest
from conftest import CLASSES, artifact_paths, assert_children_complete
from conftest import run_sweep as sweep
from nbclient import NotebookClient

from seglab.analysis import rankings as ranking
from seglab.analysis import runs as stored
from seglab.core.statistics import t_interval
from seglab.paths import project_root
from seglab.report import main as report_main
from seglab.tracking import sweep as sweeps
from seglab.tracking.sweep import RUN_COLOURS, count_jobs, job_store, run_name

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    """2 configurations x 3 seeds, on 2 joblib workers writing to one sqlite file."""
    tmp_path = tmp_path_factory.mktemp("basic")
    return (
        tmp_path,
        *sweep(
            tmp_path,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "loss=ce,dice",
            "trainer.seed=0,1,2",
        ),
    )


@pytest.mark.slow
def test_sweep_makes_one_parent_and_a_complete_child_per_job(basic_sweep):
    _, result, client, parents, children = basic_sweep
    (parent,) = parents
    assert len(children) == 6
    assert {c.info.run_name for c in children} == {
        f"{loss},seed={seed}" for loss in ("ce", "dice") for seed in SEEDS
    }
    for child in children:
        assert child.data.tags["seglab.loss"] in child.info.run_name
        assert child.data.tags["seglab.augment"] == "none"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["seglab.jobs"] == "6"
    assert "[sweep] 6 jobs; parent MLflow run" in result.stdout
    # each job's start is printed once, by the sweep (not again by the launcher)
    for job in range(1, 7):
        assert result.stdout.count(f"[sweep] job {job}/6 started") == 1
    assert "[HYDRA]" not in result.stdout
    # each run's colour in the UI's charts, by job number
    assert {c.data.tags["mlflow.runColor"] for c in children} == set(RUN_COLOURS[:6])
    assert_children_complete(client, parent, children)  # nothing lost between the workers


@pytest.mark.slow
def test_report_groups_the_seeds_of_each_configuration(basic_sweep, tmp_path):
    sweep_tmp, _, client, _, children = basic_sweep
    summary = stored.summary(stored.history(client, children), children)
    assert sorted(summary.configuration.unique()) == ["loss=ce", "loss=dice"]
    assert sorted(summary[summary.configuration == "loss=ce"].seed) == list(SEEDS)
    by_config = stored.configuration_summary(summary, stored.history(client, children))
    rows = by_config.set_index(["configuration", "metric"])
    for loss in ("ce", "dice"):
        logged = [
            c.data.metrics["val/min_iou"] for c in children if c.data.tags["seglab.loss"] == loss
        ]
        interval = t_interval(logged)
        row = rows.loc[(f"loss={loss}", "min_iou")]
        assert row.n == 3 and row["mean"] == pytest.approx(interval.mean)
        assert (row.ci_low, row.ci_high) == pytest.approx((interval.low, interval.high))
        assert rows.loc[(f"loss={loss}", "val/iou/speck"), "n"] == 3
    ranked = ranking.rankings(summary)
    assert list(ranked.table.seeds) == [3, 3]
    assert report_main([str(sweep_tmp / "sweep"), f"out={tmp_path}"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Configurations over seeds" in text
    assert "| loss=ce | 3 |" in text and "| loss=dice | 3 |" in text


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
        "report.html",
    } <= paths
    report = client.download_artifacts(parent.info.run_id, "sweep_report.md")
    text = Path(report).read_text()  # its figures are the parent's figures/ artifacts
    assert "![class_iou_curves](figures/class_iou_curves.png)" in text
    # the description is the report without its title and figures: the UI opens on the verdict
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("The lowest val loss hides") and "![" not in note
    assert text.startswith("# seglab sweep report\n\n" + note.split("\n\n", 1)[0])
    paragraphs = text.split("\n\n")[1:]
    kept = [
        p
        for p, before in zip(paragraphs, ["", *paragraphs], strict=False)
        if not p.startswith("![") and not before.startswith("![") and p != "## Figures"
    ]
    assert note == "\n\n".join(kept) + "\n"


@pytest.mark.slow
def test_report_numbers_equal_the_logged_values(basic_sweep, tmp_path):
    sweep_tmp, _, client, _, children = basic_sweep
    assert report_main([str(sweep_tmp / "sweep"), f"out={tmp_path}"]) == 0
    summary = stored.summary(stored.history(client, children), children).set_index("run_id")
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
    assert len(history[(history.metric == "val/iou")]) == 6 * 2 * len(CLASSES)
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
    # ce and dice: across them on val CE, each loss within its own function
    assert "Spearman correlation of val CE with worst-class IoU across configurations" in text
    assert "of each val loss within its own loss function: loss=ce " in text


@pytest.mark.slow
def test_report_accepts_a_parent_run_id_and_an_experiment_name(basic_sweep, tmp_path, capsys):
    sweep_tmp, _, _, (parent,), _ = basic_sweep
    uri = f"sqlite:///{sweep_tmp}/mlflow.db"
    assert report_main([parent.info.run_id, f"tracking_uri={uri}", f"out={tmp_path}"]) == 0
    assert "6 runs: 6 finished." in capsys.readouterr().out
    assert report_main(["seglab", f"tracking_uri={uri}", f"out={tmp_path / 'e'}"]) == 0
    assert report_main(["nope", f"tracking_uri={uri}"]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_executes_against_a_sweep_in_the_store_the_environment_names(
    basic_sweep, monkeypatch, tmp_path
):
    sweep_tmp = basic_sweep[0]
    # A copy of the sweep file that points at no store: the notebook must take the environment's.
    info = json.loads((sweep_tmp / "sweep" / "sweep.json").read_text())
    (tmp_path / "sweep.json").write_text(
        json.dumps({**info, "tracking_uri": f"sqlite:///{tmp_path}/elsewhere.db"})
    )
    monkeypatch.setenv("SEGLAB_SWEEP", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{sweep_tmp}/mlflow.db")
    notebook = nbformat.read(project_root() / "notebooks/per_class_iou_analysis.ipynb", 4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(str(o) for o in outputs)
    assert "6 runs of sweep" in text and "Spearman correlation of val" in text
    assert "Configurations over seeds" not in text or "loss=ce" in text
    assert "missed entirely" in text and "np.float64" not in text
    assert "The lowest val loss hides" in text  # the verdict, as the report opens
    assert "Where the outline is" in text  # boundary IoU and HD95 beside the region IoU
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # each figure once
    assert not [o for o in outputs if o.get("name") == "stderr"]  # no warnings
    assert not (tmp_path / "elsewhere.db").exists()


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
    assert "[sweep] 1 of 2 jobs FAILED: ['after=5']" in result.stderr
    assert "[sweep] job failed: FloatingPointError" in result.stderr


def test_child_run_name_lists_the_swept_values_only():
    overrides = ["debug=smoke", "loss=dice", "+loss.after=5", "paths.output_dir=/x"]
    assert run_name(overrides, ["loss", "loss.after"]) == "dice,after=5"
    swept = ["trainer.seed", "class_weights", "data.rare_contrast"]
    job = ["trainer.seed=2", "class_weights=none", "data.rare_contrast=0.35", "loss=ce"]
    assert run_name(job, swept) == "seed=2,none,rare_contrast=0.35"


def test_job_count_multiplies_sweeps_and_lets_the_command_line_win():
    assert count_jobs(["loss=ce,dice", "trainer.epochs=3"]) == 2
    assert count_jobs(["loss=ce,dice"], {"class_weights": "none,enet,manual"}) == 6
    assert count_jobs(["class_weights=none"], {"class_weights": "none,enet"}) == 1


@pytest.mark.slow
def test_ctrl_c_ends_the_parent_killed_with_the_finished_jobs_reported(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seglab.train",
            "-m",
            "debug=smoke",
            "trainer.epochs=1,200,1",  # job 2 is still training when Ctrl-C comes
            f"paths.output_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 600
        for line in child.stdout:
            lines.append(line)
            if line.startswith("epoch 2/200"):
                child.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(lines[-20:])
        lines += child.stdout.readlines()
        child.wait(timeout=300)
    finally:
        child.kill()
    assert child.returncode != 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("seglab.sweep") == "parent"]
    children = {r.info.run_name: r.info.status for r in runs if r != parent}
    assert children == {"epochs=1": "FINISHED", "epochs=200": "KILLED"}
    assert parent.info.status == "KILLED", "".join(lines[-30:])
    tags = parent.data.tags
    assert tags["seglab.failure_reason"] == "interrupted (Ctrl-C or SIGTERM) after 2 of 3 jobs"
    assert tags["seglab.jobs_run"] == "epochs=1 (FINISHED), epochs=200 (KILLED)"
    report = client.download_artifacts(parent.info.run_id, "sweep_report.md")
    # runs of different epoch counts are ranked apart: the table names each one's group
    assert "| epochs=1 | trainer.epochs=1 | FINISHED |" in Path(report).read_text()


@pytest.mark.parametrize(
    ("launcher", "slurm_job", "expected"),
    [
        # in the sweep's process the signal is the sweep's, inside a SLURM allocation too
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", None, None),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", "17", None),
        (
            "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
            "17",
            "scancel of its SLURM job",
        ),
        ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", None, None),
    ],
)  # a Ray task: test_ray.py
def test_a_signal_stops_a_job_alone_only_in_a_process_of_its_own(
    monkeypatch, launcher, slurm_job, expected
):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    if slurm_job is not None:
        monkeypatch.setenv("SLURM_JOB_ID", slurm_job)
    assert sweeps.stopped_alone(launcher) == expected


def test_a_report_that_cannot_even_be_imported_still_ends_the_parent_failed(tmp_path, monkeypatch):
    import json
    import sys
    import time

    from seglab.tracking.sweep import end_sweep
    from seglab.tracking.tracker import MlflowTracker

    tracker = MlflowTracker("t", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.check()
    parent = tracker.open_run({"seglab.sweep": "parent"}, "sweep x")
    info = {"parent_run_id": parent, "total_jobs": 0, "start_time": time.time()}
    (tmp_path / "sweep.json").write_text(json.dumps(info))
    monkeypatch.setitem(
        sys.modules, "seglab.analysis.report", None
    )  # importing it raises ImportError
    assert end_sweep(tmp_path, tracker) is False
    run = tracker.client.get_run(parent)
    assert run.info.status == "FAILED"
    assert "import of seglab.analysis.report halted" in run.data.tags["seglab.report_error"]


def test_a_sweep_whose_every_job_failed_ends_failed_saying_no_run_finished(tmp_path, capsys):
    """Both jobs named alike, one failed before its first epoch: the parent gets a report that
    lists them with their reasons, and the command says where it is (it exists)."""
    import time

    from mlflow.tracking import MlflowClient

    from seglab.tracking.sweep import end_sweep
    from seglab.tracking.tracker import MlflowTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker("unlucky", tracking_uri=uri)
    tracker.check()
    parent = tracker.open_run({"seglab.sweep": "parent"}, "sweep x")
    info = {"parent_run_id": parent, "total_jobs": 2, "start_time": time.time()}
    (tmp_path / "sweep.json").write_text(json.dumps(info))
    client = MlflowClient(uri)
    experiment = client.get_run(parent).info.experiment_id
    for step, reason in ((None, "ValueError: the val split has no labelled pixel"), (1, "nan")):
        child = client.create_run(
            experiment, run_name="exp1", tags={"mlflow.parentRunId": parent}
        ).info.run_id
        if step is not None:
            client.log_metric(child, "val/loss", 0.5, step=step)
        client.set_tag(child, "seglab.failure_reason", reason)
        client.set_terminated(child, "FAILED")
    assert end_sweep(tmp_path, MlflowTracker("unlucky", tracking_uri=uri)) is False
    out, err = capsys.readouterr()
    assert client.get_run(parent).info.status == "FAILED"
    assert f"FAILED; report in {tmp_path / 'report'}\n" in out
    text = (tmp_path / "report" / "report.md").read_text()
    assert "2 runs: 0 finished, 2 did not (listed below)." in text
    assert "| FAILED | 0 | ValueError: the val split has no labelled pixel |" in text
    assert "[sweep] no run finished; 2 of 2 jobs FAILED: ['exp1', 'exp1']" in err
    assert "[sweep]   exp1: ValueError: the val split has no labelled pixel\n" in err


@pytest.mark.parametrize(
    ("explicit", "sweep_file", "expected"),
    [
        (None, None, None),  # a single run: MLFLOW_TRACKING_URI, then the project's store
        (None, "http://team:5000", "http://team:5000"),  # a job: its parent's store
        ("sqlite:////own.db", "http://team:5000", "sqlite:////own.db"),  # tracking.tracking_uri
        ("sqlite:////own.db", None, "sqlite:////own.db"),
    ],
)
def test_a_sweep_job_logs_to_its_sweeps_store_unless_told_otherwise(
    explicit, sweep_file, expected, monkeypatch
):
    context = None if sweep_file is None else {"tracking_uri": sweep_file, "parent_run_id": "p"}
    monkeypatch.setattr(sweeps, "job_context", lambda: context)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://workers-own:5000")  # not the sweep's
    assert job_store(explicit) == expected
