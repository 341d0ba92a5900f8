"""Fault injection: bad files, full disks, racing processes, hostile names. Each case asserts the
status or the one-line message, and that nothing already written was lost."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_train
from mlflow.tracking import MlflowClient

from seglab.tracking.tracker import MlflowTracker
from seglab.train import run
from seglab.training.checkpoints import Checkpointer


def test_two_runs_starting_on_a_fresh_store_both_finish(tmp_path):
    """Opening a fresh sqlite store creates its schema; two at once raced in the migration."""
    uri = f"sqlite:///{tmp_path}/fresh.db"
    script = (
        "import sys; from seglab.tracking.tracker import MlflowTracker; "
        f"t = MlflowTracker('race', tracking_uri={uri!r}); t.check()\n"
        "with t.start_run(): t.log_metrics({'a': 1.0}, step=1)"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE) for _ in range(3)
    ]
    errors = [child.communicate(timeout=300)[1].decode()[-2000:] for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], errors
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3


def test_a_store_that_cannot_be_written_is_named_in_one_line(tmp_path, monkeypatch):
    database = tmp_path / "mlflow.db"
    MlflowTracker("t", tracking_uri=f"sqlite:///{database}").check()  # it exists
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == database else real_access(p, mode)
    )
    with pytest.raises(
        ValueError, match=rf"the store {database} is not a readable and writable file"
    ):
        MlflowTracker("t", tracking_uri=f"sqlite:///{database}").check()


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_fails_the_run_and_keeps_what_was_written(
    tmp_path, monkeypatch
):
    real_write = Checkpointer._write

    def write(self, model, state, name):
        if state.epoch == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / name))
        real_write(self, model, state, name)

    monkeypatch.setattr(Checkpointer, "_write", write)
    cfg = compose_train("debug=smoke", f"paths.output_dir={tmp_path}")
    with pytest.raises(OSError, match="No space left on device"):
        run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (failed,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    assert failed.info.status == "FAILED"
    assert "No space left on device" in failed.data.tags["seglab.failure_reason"]
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "val/loss")] == [1]
    state = json.loads(
        (tmp_path / "checkpoints" / failed.info.run_id / "last/state.json").read_text()
    )
    assert state["epoch"] == 1  # the previous checkpoint, whole
    assert not (tmp_path / "checkpoints" / failed.info.run_id / "owner.json").exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "x" * 201, ""])
def test_experiment_names_cannot_leave_the_artifact_root(name):
    with pytest.raises(ValueError, match=r"tracking.experiment_name=.*letters, digits"):
        MlflowTracker(name)


def test_runs_of_the_same_seed_get_different_names(tmp_path):
    import keras

    names = set()
    for _ in range(2):
        keras.utils.set_random_seed(0)  # what trainer.seed does before the run opens
        tracker = MlflowTracker("t", tracking_uri=f"sqlite:///{tmp_path}/m.db")
        with tracker.start_run(tags={"seglab.loss": "ce", "seglab.class_weights": "none"}):
            names.add(tracker.client.get_run(tracker.run_id).info.run_name)
    assert len(names) == 2 and all(n.startswith("ce-none-") for n in names)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("config", r"data.class_names names \['a'\] more than once"),
        ("yaml_string", r"'classes' in .*classes.yaml must be a list of class names, got 'bgab'"),
        ("yaml_list", r"classes.yaml must be a mapping such as 'classes: \[background, cell\]'"),
        ("yaml_broken", r"classes.yaml is not valid YAML at line 1"),
    ],
)
def test_class_names_must_be_a_list_of_unique_names(tmp_path, source, message):
    from seglab.data.datasets.folder import folder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    text = {
        "yaml_string": "classes: bgab",
        "yaml_list": "- a\n- b",
        "yaml_broken": "classes: [a, b",
    }
    if source in text:
        (tmp_path / "classes.yaml").write_text(text[source])
    names = ["a", "a", "b"] if source == "config" else None
    with pytest.raises(ValueError, match=message):
        folder(str(tmp_path), names, 16)


def test_duplicate_names_are_refused_for_the_synthetic_set_too():
    from seglab.data.datasets.shapes import shapes

    with pytest.raises(ValueError, match=r"data.class_names names \['x'\] more than once"):
        shapes(["bg", "x", "x", "c", "d"], num_train=2, num_val=2)


# ------------------------------------------------------------------------------ predict's output
class Constant:
    """Stands in for a model: predicts class 1 everywhere."""

    input_shape = (None, 8, 8, 3)
    output_shape = (None, 8, 8, 2)

    def predict(self, batch, verbose=0):
        out = np.zeros((*np.shape(batch)[:3], 2), np.float32)
        out[..., 1] = 1
        return out


def images(folder: Path, *names: str) -> Path:
    import tensorflow as tf

    folder.mkdir(exist_ok=True)
    for name in names:
        encode = tf.io.encode_png if name.endswith(".png") else tf.io.encode_jpeg
        (folder / name).write_bytes(encode(np.full((8, 8, 3), 90, np.uint8)).numpy())
    return folder


META = {"colors": [[0, 0, 0], [255, 0, 0]]}


def test_predict_never_writes_through_a_symlink(tmp_path):
    from seglab.predict import predict_folder

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png").symlink_to(victim)
    with pytest.raises(ValueError, match=r"refusing to write through the symlink .*masks/a.png"):
        predict_folder(Constant(), META, str(images(tmp_path / "in", "a.png")), str(out))
    assert victim.read_text() == "keep me"
    assert not (out / "overlays" / "a.png").exists()  # refused before writing anything


def test_predict_refuses_inputs_that_would_write_one_file(tmp_path):
    from seglab.predict import predict_folder

    source = images(tmp_path / "in", "a.png", "a.jpg", "b.png")
    with pytest.raises(
        ValueError, match=r"input has a.jpg and a.png: both would write masks/a.png"
    ):
        predict_folder(Constant(), META, str(source), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
