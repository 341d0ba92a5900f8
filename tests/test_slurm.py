"""Sweeps on a real SLURM cluster: ``hydra/launcher=slurm`` (the documented preset, changed only
for the partition, CPUs, memory and GPUs) submits every job with ``sbatch``; the jobs log to an
``mlflow server`` on PostgreSQL, as a team's would. Preemption and cancellation are SLURM's own:
``scancel --signal=USR2`` (what SLURM sends before a preemption or a time limit) and ``scancel``.
A search's trials run as SLURM jobs that report to one Optuna study on the same PostgreSQL.

``make test-cluster`` runs them (``make test`` leaves them out: its jobs share the machine's two
cores with the suite). ``.ci/run`` installs and starts a one-node cluster of this machine
(Debian's munge, slurmctld and slurmd), sets ``SLURM_CONF`` and ``SEGLAB_TEST_SLURM_PARTITION``
and runs them after ``make test``; without a cluster they skip, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_every_epoch_once
from mlflow.tracking import MlflowClient

from seglab.tracking.study import load_study

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
EPOCHS = 20  # smoke epochs (0.1-0.3 s each): a signal lands mid-run


@pytest.fixture(scope="module")
def partition() -> str:
    """The test cluster's partition; skips when no cluster was started."""
    name = os.environ.get("SEGLAB_TEST_SLURM_PARTITION")
    if not name or not shutil.which("sbatch"):
        pytest.skip(
            "no SLURM cluster: SEGLAB_TEST_SLURM_PARTITION is not set (.ci/run sets it after "
            "starting a one-node SLURM cluster; it printed why it could not)"
        )
    return name


def on_slurm(partition: str) -> list[str]:
    """The preset, with what a user changes for their cluster: here one CPU, no GPU."""
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.gpus_per_task=0",
    ]


def job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs (``<job>`` or ``<array job>_<index>``), from the names of
    their logs (``<id>_<task>_log.out``)."""
    logs = (sweep_dir / ".submitit").glob("*/*_log.out")
    return sorted(log.name.removesuffix("_log.out").rsplit("_", 1)[0] for log in logs)


@pytest.fixture
def background(tmp_path, postgres_server):
    """Starts ``seglab train -m`` in the background, as ``conftest.run_sweep`` runs it; at
    the end, whatever the test's outcome, the sweep is stopped and its SLURM jobs cancelled (a
    job left behind would hold the cluster's CPUs for the next test)."""
    started: list[subprocess.Popen[str]] = []

    def start(*overrides: str) -> subprocess.Popen[str]:
        env = {**os.environ, "MLFLOW_TRACKING_URI": postgres_server}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
        command = [
            sys.executable, "-m", "seglab.train", "-m", "debug=smoke",
            f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep", *overrides,
        ]  # fmt: skip
        sweep = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        started.append(sweep)
        return sweep

    yield start
    for sweep in started:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    if started:
        subprocess.run(["scancel", *job_ids(tmp_path / "sweep")], check=False)


def wait_for_epoch(client: MlflowClient, epoch: int, sweep: subprocess.Popen[str], name=None):
    """The job's run (named ``name``, or the only one) once it has logged ``val/loss`` of
    ``epoch``."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert sweep.poll() is None, sweep.stdout.read()[-3000:] if sweep.stdout else ""
        for run in job_runs(client):
            if name in (None, run.info.run_name) and "val/loss" in run.data.metrics:
                steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
                if max(steps) >= epoch:
                    return run
        time.sleep(0.5)
    raise AssertionError(f"no run logged epoch {epoch} in 300 s")


def job_runs(client: MlflowClient) -> list:
    """Every run of the store that is not a sweep's parent."""
    return [
        run
        for experiment in client.search_experiments()
        for run in client.search_runs([experiment.experiment_id])
        if run.data.tags.get("seglab.sweep") != "parent"
    ]


def scontrol_job(job: str) -> str:
    """What ``scontrol show job`` says of ``job``."""
    return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout


def finished(sweep: subprocess.Popen[str]) -> str:
    """The sweep's output once it ended (it must end on its own)."""
    output, _ = sweep.communicate(timeout=600)
    return output


def test_a_preempted_slurm_job_is_requeued_and_continues_its_run_to_the_end(
    tmp_path, partition, postgres_server, background
):
    sweep = background(*on_slurm(partition), "loss=ce", f"trainer.epochs={EPOCHS}", "resume=auto")
    client = MlflowClient(postgres_server)
    running = wait_for_epoch(client, 2, sweep)
    (job,) = job_ids(tmp_path / "sweep")
    # What SLURM sends before it preempts a job: the run ends KILLED with its checkpoint,
    # submitit requeues the job, and the requeued job continues the same run.
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    output = finished(sweep)
    assert sweep.returncode == 0, output[-3000:]
    (run,) = job_runs(client)
    assert run.info.run_id == running.info.run_id and run.info.status == "FINISHED", output[-3000:]
    resumed_at = int(run.data.tags["seglab.resumed_at_epoch"])
    assert 2 <= resumed_at < EPOCHS
    assert_every_epoch_once(client, run, EPOCHS)
    assert "Restarts=1" in scontrol_job(job)  # SLURM requeued it once


def test_four_slurm_jobs_nest_under_one_parent_and_a_cancelled_one_ends_killed(
    tmp_path, partition, postgres_server, background
):
    sweep = background(
        *on_slurm(partition), "loss=ce,dice", "trainer.seed=0,1", f"trainer.epochs={EPOCHS}"
    )
    client = MlflowClient(postgres_server)
    cancelled = wait_for_epoch(client, 1, sweep, name="dice,seed=1")
    jobs = job_ids(tmp_path / "sweep")  # <array>_<job number>: dice,seed=1 is the last
    subprocess.run(["scancel", jobs[-1]], check=True)
    output = finished(sweep)
    assert sweep.returncode != 0, output[-3000:]  # the sweep says a job did not finish
    # Every job was a SLURM job of one array, with submitit's log in the sweep's folder.
    logs = sorted((tmp_path / "sweep" / ".submitit").glob("*_*/*_log.out"))
    assert len(logs) == 4 and len({log.parent.name.split("_")[0] for log in logs}) == 1
    runs = {r.info.run_name: r for r in job_runs(client)}
    assert sorted(runs) == ["ce,seed=0", "ce,seed=1", "dice,seed=0", "dice,seed=1"]
    (parent,) = client.search_runs([cancelled.info.experiment_id], "tags.`seglab.sweep` = 'parent'")
    for name, run in runs.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, name
        if name == "dice,seed=1":  # scancel: KILLED, its checkpoint kept, the others went on
            assert run.info.status == "KILLED", output[-3000:]
            continue
        assert run.info.status == "FINISHED", (name, output[-3000:])
        assert_every_epoch_once(client, run, EPOCHS)  # every point arrived in the server
    # The parent lists the cancelled job; its report covers the three that finished.
    assert parent.info.status == "FAILED"
    assert parent.data.tags["seglab.failed_jobs"] == "1"
    report = Path(client.download_artifacts(parent.info.run_id, "sweep_report.md")).read_text()
    assert all(name in report for name in ("ce,seed=0", "ce,seed=1", "dice,seed=0"))


def test_a_search_runs_its_trials_as_slurm_jobs_sharing_one_study(
    tmp_path, partition, postgres_server, background
):
    # The study beside the server's tables (both emptied by postgres_server), schema optuna.
    storage = os.environ["SEGLAB_TEST_POSTGRES_URI"]
    sweep = background(
        *on_slurm(partition), "search=worst_class", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2", f"hydra.sweeper.storage={storage}", "trainer.epochs=3",
        "metrics.boundary=false", "metrics.gallery=0", "tracking.log_model=false",
    )  # fmt: skip
    output = finished(sweep)
    assert sweep.returncode == 0, output[-3000:]
    # Two trials at a time: two SLURM job arrays of two jobs each.
    logs = sorted((tmp_path / "sweep" / ".submitit").glob("*_*/*_log.out"))
    assert len(logs) == 4 and len({log.parent.name.split("_")[0] for log in logs}) == 2
    client = MlflowClient(postgres_server)
    runs = {int(r.data.tags["seglab.trial"]): r for r in job_runs(client)}
    study = load_study("seglab.worst_class", storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert sorted(runs) == [0, 1, 2, 3]
    for trial in study.trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == study.user_attrs["seglab.parent_run_id"]
        # each job reported its epochs to the shared study from its SLURM node
        history = client.get_metric_history(run.info.run_id, "val/min_iou")
        assert trial.intermediate_values == {m.step: m.value for m in history}
        assert trial.value == run.data.metrics["val/min_iou"]
