"""The best checkpoint as the run's MLflow model, and ``python -m seglab.predict`` over a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import CLASSES, compose_train
from mlflow.tracking import MlflowClient
from PIL import Image

from seglab.core.formatting import percent
from seglab.predict import load_run_model, predict_folder
from seglab.tracking.tracker import MlflowTracker
from seglab.train import run
from seglab.training.model import build_unet
from seglab.training.runtime import built_in, resolve_precision

pytestmark = pytest.mark.slow
SIZES = {"wide.png": (40, 48), "square.png": (32, 32), "small.jpg": (24, 20)}  # (height, width)


def train_once(out: Path, *overrides: str):
    """One smoke run into ``out``; returns its store URI, a client and the run."""
    uri = f"sqlite:///{out}/mlflow.db"
    run(
        compose_train(
            "debug=smoke", *overrides, f"paths.output_dir={out}", f"tracking.tracking_uri={uri}"
        )
    )
    client = MlflowClient(uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    return uri, client, logged


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-epoch smoke run with a region loss holding class weights (its config must load)."""
    out = tmp_path_factory.mktemp("trained")
    uri, client, logged = train_once(
        out, "trainer.epochs=3", "loss=ce_dice", "class_weights=median_frequency"
    )
    return out, uri, client, logged


def best_checkpoint_model(out: Path, run):
    """The best checkpoint's weights in a U-Net built like the smoke config's, in the precision
    the run trained in (its param ``precision``: bfloat16 where ``auto`` finds it)."""
    with built_in(resolve_precision(run.data.params["precision"])):
        model = build_unet((32, 32, 3), len(CLASSES), depth=2, base_filters=4)
    run_id = run.info.run_id
    model.load_weights(out / "checkpoints" / run_id / "best" / "model.weights.h5")
    return model


def logged_model(client, run_id: str):
    """The run's one model output, its LoggedModel, local folder and parsed ``MLmodel``."""
    (output,) = client.get_run(run_id).outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    folder = Path(model.artifact_location.removeprefix("file://"))
    return output, model, folder, yaml.safe_load((folder / "MLmodel").read_text())


def test_the_best_checkpoint_is_the_runs_mlflow_model_with_signature_and_example(trained):
    out, _, client, logged = trained
    run_id = logged.info.run_id
    state = json.loads((out / "checkpoints" / run_id / "best" / "state.json").read_text())
    output, model, folder, mlmodel = logged_model(client, run_id)
    assert output.step == state["best_epoch"]
    assert (model.name, model.source_run_id, str(model.status)) == ("model", run_id, "READY")
    assert "tensorflow" in mlmodel["flavors"]
    signature = {k: json.loads(v) for k, v in mlmodel["signature"].items() if v}
    assert signature["inputs"][0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 32, 32, 3]}
    assert signature["outputs"][0]["tensor-spec"] == {
        "dtype": "float32",
        "shape": [-1, 32, 32, len(CLASSES)],
    }
    assert (folder / "input_example.json").is_file()
    meta = mlmodel["metadata"]
    assert meta["class_names"] == CLASSES
    assert meta["checkpoint_epoch"] == state["best_epoch"]
    assert len(meta["colors"]) == len(CLASSES)


def test_logged_model_loads_with_its_weighted_loss_and_predicts_like_the_best_checkpoint(
    trained,
):
    out, uri, _, logged = trained
    run_id = logged.info.run_id
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    np.save(out / "images.npy", images)
    script = f"""
import numpy as np
from seglab.predict import load_run_model
from seglab.tracking.tracker import MlflowTracker
model, _ = load_run_model(MlflowTracker(tracking_uri={uri!r}), {run_id!r})
np.save({str(out / "predicted.npy")!r}, model.predict(np.load({str(out / "images.npy")!r})))
print(type(model.loss).__name__, model.loss.get_config()["class_weights"])
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    name, weights = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert name == "CEDice"
    want = [float(logged.data.params[f"class_weight/{c}"]) for c in CLASSES]
    np.testing.assert_allclose(json.loads(weights), want, rtol=1e-5)
    expected = best_checkpoint_model(out, logged).predict(images, verbose=0)
    np.testing.assert_allclose(np.load(out / "predicted.npy"), expected, atol=1e-6)


class Payload:
    """Unpickling this writes a marker file: proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_the_logged_model_holds_no_pickle_and_a_pickle_added_to_it_is_refused(trained, tmp_path):
    import pickle

    from seglab.tracking.models import pickle_files

    _, uri, client, logged = trained
    _, _, folder, _ = logged_model(client, logged.info.run_id)
    assert (folder / "data" / "model.keras").is_file()
    assert pickle_files(folder) == []
    injected = folder / "data" / "global_custom_objects.cloudpickle"
    marker = tmp_path / "ran.txt"
    injected.write_bytes(pickle.dumps(Payload(str(marker))))
    try:
        with pytest.raises(ValueError, match=r"global_custom_objects.cloudpickle is a pickle"):
            load_run_model(MlflowTracker(tracking_uri=uri), logged.info.run_id)
    finally:
        injected.unlink()
    assert not marker.exists()


def write_images(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = {}
    for name, (h, w) in SIZES.items():
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, quality=100)
        # As seglab decodes it: with Pillow (TensorFlow's JPEG decoder rounds differently).
        images[name] = np.asarray(Image.open(folder / name).convert("RGB"))
    (folder / "notes.txt").write_text("not an image")
    return images


def test_predict_writes_index_masks_at_each_images_size_and_overlays(trained, tmp_path):
    out, _, client, logged = trained
    run_id = logged.info.run_id
    images = write_images(tmp_path / "in")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlflow.db"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seglab.predict",
            f"run_id={run_id}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'pred'}",
            "batch_size=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "masks and overlays of 3 images" in result.stdout
    written = {p.relative_to(tmp_path / "pred").as_posix() for p in (tmp_path / "pred").rglob("*")}
    stems = [Path(n).stem for n in SIZES]
    folders = ("masks", "overlays")
    assert written == {*folders, *(f"{d}/{s}.png" for d in folders for s in stems)}
    model = best_checkpoint_model(out, logged)
    colors = np.array(logged_model(client, run_id)[3]["metadata"]["colors"], np.float64)
    for name, image in images.items():
        mask = np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{Path(name).stem}.png"))
        assert mask.dtype == np.uint8 and mask.shape == SIZES[name]
        # Independently: bilinear to the model's 32x32, argmax, nearest back to the image size.
        small = tf.image.resize(image.astype(np.float32) / 255.0, (32, 32), method="bilinear")
        labels = model.predict(small[None], verbose=0)[0].argmax(-1)
        expected = tf.image.resize(labels[..., None], SIZES[name], method="nearest")[..., 0]
        np.testing.assert_array_equal(mask, np.asarray(expected))
        picture = np.asarray(Image.open(tmp_path / "pred" / "overlays" / f"{Path(name).stem}.png"))
        blend = np.clip(np.round(0.5 * image + 0.5 * colors[mask]), 0, 255)
        np.testing.assert_array_equal(picture, blend.astype(np.uint8))
    masks = [np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{s}.png")) for s in stems]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=len(CLASSES))
    shares = ", ".join(
        f"{n} {percent(c / counts.sum())}" for n, c in zip(CLASSES, counts, strict=True)
    )
    assert f"predicted pixel shares: {shares}\n" in result.stdout


def test_predict_names_a_bad_run_id_input_folder_or_option(trained, tmp_path):
    _, uri, _, logged = trained
    tracker = MlflowTracker(tracking_uri=uri)
    with pytest.raises(ValueError, match=r"run_id='0123abc': no such run at sqlite:///"):
        load_run_model(tracker, "0123abc")
    model, metadata = load_run_model(tracker, logged.info.run_id)
    (tmp_path / "empty").mkdir()
    cases = {
        "missing": (r"input='.*missing' is not a folder", {}),
        "empty": (r"input='.*empty' has no images \(\.png, \.jpg, \.jpeg\)", {}),
        "in": (r"overlay_alpha must be in \[0, 1\], got 2", {"overlay_alpha": 2.0}),
        "broken": (
            r"^cannot read .*broken/wide.png: image file is truncated$",
            {},
        ),
    }
    write_images(tmp_path / "in")
    write_images(tmp_path / "broken")
    (tmp_path / "broken" / "wide.png").write_bytes((tmp_path / "in" / "wide.png").read_bytes()[:60])
    for folder, (message, kwargs) in cases.items():
        with pytest.raises(ValueError, match=message):
            predict_folder(model, metadata, str(tmp_path / folder), str(tmp_path / "o"), **kwargs)
    assert not (tmp_path / "o").exists()  # nothing written for a bad input
    # One batch at a time: the batches before the unreadable file keep their masks.
    with pytest.raises(ValueError, match=r"cannot read .*broken/wide.png"):
        predict_folder(model, metadata, str(tmp_path / "broken"), str(tmp_path / "p"), 1)
    assert sorted(p.name for p in (tmp_path / "p" / "masks").iterdir()) == [
        "small.png",
        "square.png",
    ]


def test_the_command_names_a_missing_store_in_one_line_and_creates_none(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = subprocess.run(
        [sys.executable, "-m", "seglab.predict", "run_id=0123abc", "input=in", "output=out"],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"seglab predict: MLFLOW_TRACKING_URI='{uri}': no MLflow store at {tmp_path}/mlflow.db"
    ]
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "out").exists()  # no empty output folder from a run that failed


def test_an_unknown_run_id_is_named_with_the_store(tmp_path, sqlite_uri):
    MlflowClient(sqlite_uri).search_experiments()  # an empty store
    with pytest.raises(ValueError, match=r"run_id='0123abc': no such run at sqlite:///.*mlflow.db"):
        load_run_model(MlflowTracker(tracking_uri=sqlite_uri), "0123abc")


def test_a_run_without_a_logged_model_is_named(tmp_path):
    uri, _, logged = train_once(tmp_path, "trainer.epochs=1", "tracking.log_model=false")
    with pytest.raises(ValueError, match=r"has no logged model 'model': .*log_model=false"):
        load_run_model(MlflowTracker(tracking_uri=uri), logged.info.run_id)


def test_a_model_that_cannot_be_logged_leaves_the_run_finished_with_the_reason(
    tmp_path, monkeypatch
):
    def fail(*args, **kwargs):
        raise TypeError("cannot serialize MyLoss")

    monkeypatch.setattr("seglab.tracking.run_log.log_model", fail)
    uri, _, logged = train_once(tmp_path, "trainer.epochs=1")
    assert logged.info.status == "FINISHED"
    assert logged.data.tags["seglab.model_error"] == "TypeError: cannot serialize MyLoss"
    assert (tmp_path / "checkpoints" / logged.info.run_id / "best").is_dir()
    with pytest.raises(ValueError, match=r"has no logged model 'model': TypeError: cannot ser"):
        load_run_model(MlflowTracker(tracking_uri=uri), logged.info.run_id)


@pytest.mark.parametrize(("alpha", "expected"), [(0.0, 100), (0.25, 125), (0.5, 150), (1.0, 200)])
def test_overlay_blends_each_pixel_towards_its_class_colour_by_alpha(alpha, expected):
    from seglab.predict import overlay

    image = np.full((1, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1]])
    colors = np.array([[200.0, 200.0, 200.0], [0.0, 100.0, 255.0]])
    blended = overlay(image, mask, colors, alpha)
    np.testing.assert_array_equal(blended[0, 0], [expected] * 3)
    np.testing.assert_array_equal(
        blended[0, 1], np.round((1 - alpha) * 100 + alpha * colors[1]).astype(np.uint8)
    )


def test_masks_of_more_than_256_classes_are_written_in_16_bits(tmp_path):
    classes = 300
    inputs = keras.Input((8, 8, 3))
    # Every pixel predicts class 299, which 8 bits cannot hold.
    bias = keras.initializers.Constant(np.eye(classes)[299] * 10)
    head = keras.layers.Conv2D(classes, 1, kernel_initializer="zeros", bias_initializer=bias)
    model = keras.Model(inputs, keras.layers.Softmax()(head(inputs)))
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    metadata = {"colors": [[c % 256, 0, 0] for c in range(classes)]}
    _, counts = predict_folder(model, metadata, str(tmp_path / "in"), str(tmp_path / "out"))
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png"))
    assert mask.dtype == np.uint16 and mask.shape == (12, 10) and (mask == 299).all()
    assert counts[299] == 120 and counts.sum() == 120
