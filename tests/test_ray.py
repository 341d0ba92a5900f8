"""A sweep on a real Ray cluster: ``hydra/launcher=ray_cluster`` (the documented preset over
Hydra's Ray launcher, changed only for the head's address) runs every job as a Ray task on a
head this test starts, the jobs logging to an ``mlflow server`` on PostgreSQL, as a team's would.

The head is started without ``MLFLOW_TRACKING_URI`` (a cluster's workers do not inherit the
submitting shell's): the jobs find the server through their sweep. A worker killed outright (what
a lost node does to its tasks) is Ray's preemption: Ray runs the task again and ``resume=auto``
continues the same run. A worker sent SIGTERM (what a user does to stop one job) ends that job
alone: its run KILLED, not retried, the sweep's other job going on. ``make test-cluster`` runs it
(a cluster's jobs share the machine's two cores, as SLURM's do); without Ray it skips, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_children_complete, assert_every_epoch_once, free_port, run_sweep
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
EPOCHS = 20  # smoke epochs (0.1-0.3 s each): the worker is lost mid-run


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A one-node Ray cluster of this machine (two CPUs, its own port and folder); its address.
    Stopped at the end through its process group: ``ray stop`` would stop every Ray on the
    machine."""
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("no Ray: pip install -e '.[ray]' (the locked dev environment has it)")
    port = free_port()  # an ephemeral port, outside the range Ray keeps for its workers
    assert not 10002 <= port <= 19999, port
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
        "--disable-usage-stats", f"--temp-dir={folder}",
    ]  # fmt: skip
    log = Path(folder, "head.log")
    with log.open("w") as out:
        head = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not start in 120 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        # Every process of the head is in its group; Ray's own shutdown takes ~30 s.
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_four_ray_tasks_nest_under_one_parent_in_the_server(tmp_path, ray_head, postgres_server):
    result, client, parents, children = run_sweep(
        tmp_path,
        "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={ray_head}",
        "loss=ce,dice",
        "trainer.seed=0,1",
        "trainer.threads=1",  # each task reserves one of the head's two CPUs
        tracking_uri=postgres_server,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Connecting to existing Ray cluster" in output
    assert output.count("(_run_job pid=") >= 4  # Ray's workers ran the jobs and sent their lines
    assert not (tmp_path / "mlflow.db").exists()  # nothing fell back to a local store
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["seglab.jobs"] == "4"
    names = sorted(r.info.run_name for r in children)
    assert names == ["ce,seed=0", "ce,seed=1", "dice,seed=0", "dice,seed=1"]
    assert_children_complete(client, parent, children)  # every point of every epoch arrived
    report = Path(client.download_artifacts(parent.info.run_id, "sweep_report.md")).read_text()
    assert all(name in report for name in names)


def signal_a_worker(tmp_path, head: str, signum: int, *overrides: str) -> tuple[str, int]:
    """Runs ``seglab train -m`` on the Ray ``head`` (smoke, ``EPOCHS`` epochs, one thread a job)
    and sends ``signum`` to the worker of the first job to reach epoch 2 (the pid Ray prints
    before its lines); the sweep's output and exit status once it ended on its own."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RAY_DEDUP_LOGS"] = "0"  # every epoch line of the worker, with its pid
    command = [
        sys.executable, "-m", "seglab.train", "-m", "debug=smoke", "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={head}", "loss=ce", f"trainer.epochs={EPOCHS}",
        "trainer.threads=1", f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep",
        *overrides,
    ]  # fmt: skip
    sweep = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    worker = None
    try:
        assert sweep.stdout is not None
        for line in sweep.stdout:
            lines.append(line)
            worker = re.search(r"\(_run_job pid=(\d+)\).*epoch 2/", line)
            if worker:
                os.kill(int(worker.group(1)), signum)
                break
        output = "".join(lines) + sweep.communicate(timeout=600)[0]
    finally:
        sweep.kill()
    assert worker is not None, output[-3000:]
    return output, sweep.returncode


def sweep_runs(tmp_path) -> tuple[list, list]:
    """The parent runs and the job runs of the sweep's local store."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    parents = [r for r in runs if r.data.tags.get("seglab.sweep") == "parent"]
    return parents, [r for r in runs if r.data.tags.get("seglab.sweep") != "parent"]


def test_a_lost_ray_worker_is_retried_and_resume_continues_its_run(tmp_path, ray_head):
    # What a lost node does to its tasks: no signal, no goodbye.
    output, status = signal_a_worker(tmp_path, ray_head, signal.SIGKILL, "resume=auto")
    assert status == 0, output[-3000:]
    assert "the task will be retried" in output  # Ray ran it again, in another worker
    (parent,), (run,) = sweep_runs(tmp_path)
    assert parent.info.status == "FINISHED" and run.info.status == "FINISHED", output[-3000:]
    assert 2 <= int(run.data.tags["seglab.resumed_at_epoch"]) < EPOCHS  # the same run went on
    assert_every_epoch_once(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), run, EPOCHS)


def test_a_ray_task_stopped_on_purpose_ends_killed_and_the_sweep_goes_on(tmp_path, ray_head):
    # What a user does to stop one job: SIGTERM to its worker's process.
    output, status = signal_a_worker(tmp_path, ray_head, signal.SIGTERM, "trainer.seed=0,1")
    assert status == 1, output[-3000:]  # the sweep says a job did not finish
    assert "the task will be retried" not in output  # stopped on purpose: not run again
    assert "job stopped alone (a signal to its Ray worker)" in output
    (parent,), runs = sweep_runs(tmp_path)
    jobs = {run.info.status: run for run in runs}
    assert sorted(jobs) == ["FINISHED", "KILLED"], output[-3000:]  # the other job went on
    assert jobs["KILLED"].data.tags["seglab.failure_reason"] == "interrupted (Ctrl-C or SIGTERM)"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert_every_epoch_once(client, jobs["FINISHED"], EPOCHS)
    assert parent.info.status == "FAILED" and parent.data.tags["seglab.failed_jobs"] == "1"
    report = Path(client.download_artifacts(parent.info.run_id, "sweep_report.md")).read_text()
    assert jobs["FINISHED"].info.run_name in report
