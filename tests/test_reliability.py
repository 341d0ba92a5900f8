"""Bad input fails before training with a clear message; faults lose nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, compose_train
from hydra.errors import MissingConfigException
from mlflow.tracking import MlflowClient

from seglab.tracking.resume import resumable_run
from seglab.tracking.run_log import RunLog
from seglab.tracking.store import RetryingClient
from seglab.tracking.tracker import MlflowTracker
from seglab.train import run
from seglab.training.checkpoints import Checkpointer


def smoke_config(tmp_path, *overrides):
    return compose_train("debug=smoke", f"paths.output_dir={tmp_path}", *overrides)


def runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("seglab")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


BAD_INPUTS = [
    (["class_weights=manual", "class_weights.weights=[1,2]"], r"has 2 values but there are 5"),
    (["class_weights=manual", "class_weights.weights={spek: 3}"], r"unknown classes \['spek'\]"),
    (["class_weights=manual", "class_weights.weights=[1,1,1,1,-2]"], r"finite, >= 0 and not all 0"),
    (
        ["class_weights=manual", "class_weights.weights=[1,1,1,1,nan]"],
        r"finite, >= 0 and not all 0",
    ),
    (
        ["class_weights=manual", "class_weights.weights=[1,1,1,1,x]"],
        r"must be numbers, got \['x'\]",
    ),
    (
        ["+trainer.class_weight={4: 10}"],
        r"trainer.class_weight: Keras' class_weight .* 'TypeError: only 0-dim",
    ),
    (["+class_weight=[1,2]"], r"config key class_weight: Keras' class_weight"),
    (["data.image_size=40", "model.depth=4"], r"divisible by 2\*\*4=16, got 40x40"),
    (["data.num_val=0"], r"the val split is empty"),
    (["data.num_train=0"], r"the train split is empty"),
    (["data.class_names=[a,b]"], r"data.class_names must name 5 classes"),
    (["augment=medium", "augment.strength=1.5"], r"augment.strength must be in \[0, 1\], got 1.5"),
    (["class_weights=per_batch", "loss=dice"], r"per_batch builds per-pixel weight maps"),
    (["checkpoint.mode=up"], r"checkpoint.mode='up' is not one of"),
    (["tracking.tracking_uri=ftp://host/x"], r"tracking.tracking_uri='ftp://host/x' is not an"),
    (["tracking.tracking_uri=sqlite:/x.db"], r"write sqlite URIs as sqlite:///<path>"),
    (["resume=0123abcd"], r"resume='0123abcd': no such run"),
    (["data.class_names=[bg,'',b,c,d]"], r"a class name is empty \(\[''\]\); name every class"),
    (["data.class_names=[bg,a/b,'a,b',c,d]"], r"classes 'a/b' and 'a,b' would share the metric"),
    (["resume=true"], r"has no unfinished run with a checkpoint"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=[str(o) for o, _ in BAD_INPUTS])
def test_bad_input_fails_before_training_naming_the_option(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(smoke_config(tmp_path, *overrides))
    assert runs(tmp_path) == []  # nothing started


@pytest.mark.parametrize("kind", ["file_uri", "plain_path", "text_file"])
def test_tracking_stores_seglab_cannot_use_are_named_in_one_line(tmp_path, kind):
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    uri, message = {
        "file_uri": (f"file://{tmp_path}/mlruns", "is a file store, which seglab does not use"),
        "plain_path": (str(tmp_path / "mlruns"), "is a file store, which seglab does not use"),
        "text_file": (f"sqlite:///{text}", f"{text} is not an SQLite database"),
    }[kind]
    with pytest.raises(ValueError) as refused:
        MlflowTracker("t", tracking_uri=uri).check()
    assert str(refused.value).startswith(f"tracking.tracking_uri={uri!r}")
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert text.read_text() == "not a database\n"  # nothing written over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # nothing created


def test_unknown_group_option_names_the_choices(tmp_path):
    with pytest.raises(MissingConfigException, match=r"loss/dicee") as error:
        smoke_config(tmp_path, "loss=dicee")
    assert "dice" in str(error.value) and "lovasz" in str(error.value)


def test_unreachable_tracking_server_is_named_with_its_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: closed
    with pytest.raises(ValueError, match=r"MLFLOW_TRACKING_URI='http://127.0.0.1:9': cannot reach"):
        run(smoke_config(tmp_path))


def test_output_dir_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"paths.output_dir='.*a_file/out': cannot write to"):
        run(smoke_config(tmp_path, f"paths.output_dir={blocker}/out"))


def test_nan_loss_fails_the_run_with_the_reason_and_keeps_metrics_and_checkpoint(tmp_path):
    cfg = smoke_config(
        tmp_path,
        "trainer.epochs=3",
        "~loss",
        "+loss._target_=sweep_helpers.NaNAfter",
        "+loss.after=8",  # calls: 4 train + 2 val in epoch 1, so call 9 is epoch 2's 3rd batch
        "+loss._partial_=true",
    )
    with pytest.raises(FloatingPointError, match="training loss became nan at batch"):
        run(cfg)
    (failed,) = runs(tmp_path)
    assert failed.info.status == "FAILED"
    assert (
        "FloatingPointError: training loss became nan" in failed.data.tags["seglab.failure_reason"]
    )
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "val/loss")] == [1]
    last = tmp_path / "checkpoints" / failed.info.run_id / "last" / "state.json"
    assert '"epoch": 1' in last.read_text()


def signalled_after_a_checkpoint(tmp_path, command, sig):
    """Starts ``command`` (a training run into ``tmp_path``), sends ``sig`` once it has written a
    checkpoint, waits for it to end; returns its exit code and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    options = ["debug=smoke", "trainer.epochs=100000", f"paths.output_dir={tmp_path}"]
    process = subprocess.Popen(
        [*command, *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("checkpoints/*/last/state.json")):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.5)
    process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 120 s after {sig.name}:\n{process.communicate()[1][-3000:]}")
    return process.returncode, stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_the_run_killed_with_its_checkpoint(tmp_path, sig):
    command = [sys.executable, "-m", "seglab.train"]
    returncode, stderr = signalled_after_a_checkpoint(tmp_path, command, sig)
    assert returncode != 0
    (killed,) = runs(tmp_path)
    assert killed.info.status == "KILLED", stderr[-2000:]
    assert killed.data.tags["seglab.failure_reason"] == "interrupted (Ctrl-C or SIGTERM)"
    assert (tmp_path / "checkpoints" / killed.info.run_id / "last" / "model.weights.h5").is_file()


@pytest.mark.slow
def test_a_preempted_job_ends_killed_is_requeued_and_continues_its_run(tmp_path):
    from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE

    job = [sys.executable, str(Path(__file__).with_name("preempted_job.py")), str(tmp_path / "job")]
    command = [*job, "resume=auto"]
    returncode, stderr = signalled_after_a_checkpoint(tmp_path, command, signal.SIGUSR2)
    # submitit's handler ran after the run ended: it saved the job again and requeued it.
    assert returncode == LOCAL_REQUEUE_RETURN_CODE, stderr[-2000:]
    assert (tmp_path / "job" / "1_submitted.pkl").is_file()
    (killed,) = runs(tmp_path)
    assert killed.info.status == "KILLED", stderr[-2000:]
    assert killed.data.tags["seglab.failure_reason"] == (
        "stopped by the scheduler (SIGUSR2: preemption or time limit): a job the scheduler "
        "requeues continues this run with resume=auto"
    )
    state = tmp_path / "checkpoints" / killed.info.run_id / "last" / "state.json"
    epoch = json.loads(state.read_text())["epoch"]
    # The requeued job: the same command (in this process, to save a start-up).
    run(smoke_config(tmp_path, "resume=auto", f"trainer.epochs={epoch + 1}"))
    (resumed,) = runs(tmp_path)
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["seglab.resumed_at_epoch"] == str(epoch)


CHECKED_KEYS = ["train/loss", "val/loss", "val/miou", *(f"val/iou/{c}" for c in CLASSES)]


# Where the kill lands, how the run is resumed, and the epoch it resumes after. "auto" starts the
# first run too (nothing to resume yet), as a job a scheduler requeues does.
KILLS = [
    ("after_checkpoint", "true", 1),
    ("after_logging", "auto", 1),
    ("in_the_summary", "auto", 3),
]


@pytest.mark.slow
@pytest.mark.parametrize(("kill", "resume", "after"), KILLS, ids=[k[0] for k in KILLS])
def test_resume_continues_the_same_run_without_gaps_or_duplicates(
    tmp_path, monkeypatch, kill, resume, after
):
    real_save = Checkpointer.save
    real_log = MlflowTracker.log_metrics
    real_summary = RunLog.summarize

    def save(self, model, epoch, metrics):
        real_save(self, model, epoch, metrics)
        if kill == "after_checkpoint" and epoch == 1:
            raise KeyboardInterrupt("killed after the checkpoint, before logging")

    def log(self, metrics, step):
        real_log(self, metrics, step)
        if kill == "after_logging" and step == 1 and "val/loss" in metrics:
            raise KeyboardInterrupt("killed after logging epoch 1")

    def summary(*args, **kwargs):
        if kill == "in_the_summary":
            raise KeyboardInterrupt("killed after the last epoch, before the summary")
        return real_summary(*args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save)
    monkeypatch.setattr(MlflowTracker, "log_metrics", log)
    monkeypatch.setattr(RunLog, "summarize", summary)
    first = smoke_config(tmp_path, "trainer.epochs=3", *(["resume=auto"] * (resume == "auto")))
    with pytest.raises(KeyboardInterrupt):
        run(first)
    (killed,) = runs(tmp_path)
    assert killed.info.status == "KILLED"
    monkeypatch.undo()
    final = run(smoke_config(tmp_path, "trainer.epochs=3", f"resume={resume}"))
    assert final.epoch == 3
    (resumed,) = runs(tmp_path)
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED"
    assert "seglab.failure_reason" not in resumed.data.tags
    assert resumed.data.tags["seglab.resumed_at_epoch"] == str(after)
    # The end of the run happened once, on the last epoch: its verdict and model are there.
    assert resumed.data.tags["seglab.hidden_failure"] in {"true", "false"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(client.get_run(resumed.info.run_id).outputs.model_outputs) == 1
    for key in CHECKED_KEYS:
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, key)]
        assert sorted(steps) == [1, 2, 3], key
    val_loss = client.get_metric_history(resumed.info.run_id, "val/loss")[-1].value
    assert final.val_loss == pytest.approx(val_loss, rel=1e-4)


@pytest.mark.slow
def test_resume_by_run_id_after_a_finished_run_extends_it(tmp_path):
    run(smoke_config(tmp_path, "trainer.epochs=1"))
    (first,) = runs(tmp_path)
    last = tmp_path / "checkpoints" / first.info.run_id / "last"
    for name, damaged in (("model.weights.h5", None), ("state.json", b'{"epoch": 1,\x01')):
        path = last / name
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2] if damaged is None else damaged)
        written = path.read_bytes()
        with pytest.raises(ValueError) as refused:  # a damaged checkpoint: named, nothing lost
            run(smoke_config(tmp_path, "trainer.epochs=2", f"resume={first.info.run_id}"))
        assert str(refused.value).startswith(f"checkpoint file {path} is damaged: ")
        assert "\n" not in str(refused.value) and path.read_bytes() == written
        (again,) = runs(tmp_path)
        assert again.info.status == "FINISHED"  # the run's status is its own still
        assert not (last.parent / "owner.json").exists()  # and nobody holds it
        path.write_bytes(whole)
    run(smoke_config(tmp_path, "trainer.epochs=2", f"resume={first.info.run_id}"))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val/miou")] == [1, 2]


@pytest.mark.slow
def test_same_seed_gives_the_same_per_class_iou_history(tmp_path):
    for _ in range(2):
        run(smoke_config(tmp_path, "trainer.epochs=2", "trainer.deterministic=true"))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    histories = [
        [
            [m.value for m in client.get_metric_history(r.info.run_id, f"val/iou/{c}")]
            for c in CLASSES
        ]
        + [[m.value for m in client.get_metric_history(r.info.run_id, "train/loss")]]
        for r in runs(tmp_path)
    ]
    np.testing.assert_array_equal(histories[0], histories[1])


def test_retrying_client_waits_out_a_locked_database():
    class Flaky:
        calls = 0

        def log_batch(self, *args, **kwargs):
            Flaky.calls += 1
            if Flaky.calls < 3:
                raise RuntimeError("(sqlite3.OperationalError) database is locked")
            return "ok"

        def fail(self):
            raise RuntimeError("something else")

    client = RetryingClient(Flaky(), attempts=5, delay=0.001)
    assert client.log_batch() == "ok" and Flaky.calls == 3
    with pytest.raises(RuntimeError, match="something else"):
        client.fail()


def test_run_lock_names_its_live_holder_and_frees_on_release(tmp_path):
    from seglab.tracking.runlock import RunLock

    lock = RunLock()
    lock.acquire(tmp_path, "abc")
    held = RunLock.holder(tmp_path)
    assert (held["pid"], held["host"]) == (os.getpid(), __import__("socket").gethostname())
    with pytest.raises(ValueError, match=rf"run abc is being trained by pid {os.getpid()} on"):
        RunLock().acquire(tmp_path, "abc")
    lock.release()
    assert RunLock.holder(tmp_path) is None
    RunLock().acquire(tmp_path, "abc")  # free again


def test_a_killed_trainer_leaves_its_run_resumable_at_once(tmp_path):
    from seglab.tracking.runlock import RunLock

    script = (
        "import sys, time; from seglab.tracking.runlock import RunLock; "
        f"lock = RunLock(); lock.acquire({str(tmp_path)!r}, 'abc'); print('held', flush=True); "
        "time.sleep(300)"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert RunLock.holder(tmp_path)["pid"] == child.pid
        child.send_signal(signal.SIGKILL)  # no cleanup runs: owner.json stays behind
        child.wait(timeout=30)
    finally:
        child.kill()
    assert (tmp_path / "owner.json").is_file()
    assert RunLock.holder(tmp_path) is None  # the OS released the lock with the process


def test_another_hosts_trainer_is_live_while_its_heartbeat_is_fresh(tmp_path):
    import json

    from seglab.tracking.runlock import RunLock

    owner = tmp_path / "owner.json"
    owner.write_text(json.dumps({"host": "gpu-node-7", "pid": 4242, "since": 0}))
    assert RunLock.holder(tmp_path)["host"] == "gpu-node-7"
    stale = time.time() - RunLock.stale_after - 60
    os.utime(owner, (stale, stale))
    assert RunLock.holder(tmp_path) is None


def test_resume_skips_a_live_run_and_refuses_one_named(tmp_path, sqlite_uri):
    from seglab.tracking.runlock import RunLock

    tracker = MlflowTracker("t", tracking_uri=sqlite_uri)
    ids = []
    for _ in range(2):
        run = tracker.client.create_run(tracker.experiment_id())
        (tmp_path / run.info.run_id / "last").mkdir(parents=True)
        ids.append(run.info.run_id)
        time.sleep(0.01)  # distinct start times
    older, newer = ids
    lock = RunLock()
    lock.acquire(tmp_path / newer, newer)
    try:
        assert resumable_run(tracker, True, tmp_path) == older
        with pytest.raises(ValueError, match=rf"resume='{newer}': run {newer} is being trained"):
            resumable_run(tracker, newer, tmp_path)
        other = RunLock()
        other.acquire(tmp_path / older, older)
        with pytest.raises(ValueError, match=r"no unfinished run .* that no live process trains"):
            resumable_run(tracker, True, tmp_path)
        other.release()
    finally:
        lock.release()
    assert resumable_run(tracker, newer, tmp_path) == newer


CONFIG = {"loss._target_": "seglab.losses.CrossEntropy", "trainer.seed": "0", "trainer.epochs": "2"}


@pytest.mark.parametrize(
    ("now", "changes"),
    [
        ({}, []),
        (
            {
                "trainer.epochs": "5",
                "paths.output_dir": "/elsewhere",
                "trainer.jit_compile": "True",
            },
            [],
        ),
        ({"tracking.tracking_uri": "http://host:5000", "resume": "abc"}, []),
        ({"trainer.seed": "1"}, ["trainer.seed: 0 -> 1"]),
        (
            {"loss._target_": "seglab.losses.Dice", "trainer.seed": "2"},
            [
                "loss._target_: seglab.losses.CrossEntropy -> seglab.losses.Dice",
                "trainer.seed: 0 -> 2",
            ],
        ),
        ({"model.depth": "4"}, []),  # not logged by the run (an older seglab): not compared
    ],
)
def test_a_resumed_run_may_change_only_length_places_and_speed(now, changes):
    from seglab.tracking.resume import config_changes

    assert config_changes(CONFIG, {**CONFIG, **now}) == changes


def test_resume_finds_the_run_started_with_the_same_options_and_refuses_another(
    tmp_path, sqlite_uri
):
    tracker = MlflowTracker("t", tracking_uri=sqlite_uri)
    ids = {}
    for loss in ("ce", "dice"):  # an interrupted sweep: the dice run is the latest
        run = tracker.client.create_run(tracker.experiment_id())
        tracker.client.log_param(run.info.run_id, "loss._target_", loss)
        (tmp_path / run.info.run_id / "last").mkdir(parents=True)
        ids[loss] = run.info.run_id
        time.sleep(0.01)  # distinct start times
    assert resumable_run(tracker, True, tmp_path, {"loss._target_": "ce"}) == ids["ce"]
    assert resumable_run(tracker, True, tmp_path, {"loss._target_": "dice"}) == ids["dice"]
    with pytest.raises(
        ValueError, match=r"that was started with these options and data \(run .* was "
    ):
        resumable_run(tracker, True, tmp_path, {"loss._target_": "focal"})
    with pytest.raises(
        ValueError,
        match=rf"resume='{ids['ce']}': the run was started with other options or data "
        r"\(loss._target_: ce -> dice\); resume with its own",
    ):
        resumable_run(tracker, ids["ce"], tmp_path, {"loss._target_": "dice"})


@pytest.mark.slow
def test_resuming_with_another_loss_is_refused_and_the_run_is_left_as_it_was(tmp_path):
    run(smoke_config(tmp_path, "trainer.epochs=1"))
    (first,) = runs(tmp_path)
    resume = f"resume={first.info.run_id}"
    with pytest.raises(ValueError, match=r"loss._target_: seglab.losses.CrossEntropy -> "):
        run(smoke_config(tmp_path, "trainer.epochs=2", "loss=dice", resume))
    (after,) = runs(tmp_path)
    assert after.info.status == "FINISHED" and after.data.metrics == first.data.metrics


@pytest.mark.parametrize(
    ("items", "shown"),
    [
        ([], ""),
        (["a"], "a"),
        (["a", "b", "c"], "a; b; c"),
        (["a", "b", "c", "d", "e"], "a; b; c; and 2 more"),
    ],
)
def test_refusals_list_the_first_three_and_count_the_rest(items, shown):
    from seglab.core.checks import listed

    assert listed(items) == shown
