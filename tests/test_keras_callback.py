"""SeglabCallback: seglab's diagnosis in anyone's ``model.fit``, checked against the shared
trainer, scikit-learn and Keras' own loss, with every mask and output form it accepts."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import CLASSES, EPOCH_KEYS, artifact_paths, compose_train
from mlflow.tracking import MlflowClient
from sklearn.metrics import confusion_matrix as sk_confusion

from seglab import schema
from seglab.analysis.runs import experiment_runs, history, summary
from seglab.config import build
from seglab.keras import SeglabCallback
from seglab.keras.validation import ValidationSet, cross_entropy_terms, mask_labels
from seglab.losses import build_loss
from seglab.train import run

IGNORE = 255


def tiny_data(n: int = 10, size: int = 8, classes: int = 3, seed: int = 0):
    """Images (n, size, size, 3) and masks with every class, some pixels ignored."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size, 3), dtype=np.float32)
    masks = rng.integers(0, classes, (n, size, size))
    masks[:, 0, 0] = IGNORE
    return images, masks


def tiny_model(classes: int = 3, activation: str | None = "softmax", seed: int = 0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(classes, 1, activation=activation)(x)
    return keras.Model(inputs, outputs)


def store(tmp_path) -> dict:
    return {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment_name": "own"}


def runs_of(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("own")
    return client, [] if experiment is None else client.search_runs([experiment.experiment_id])


def metric(client, run, key):
    return [
        m.value
        for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    ]


# --- Same numbers as the shared trainer -------------------------------------------------------


def test_the_callback_logs_the_shared_trainers_numbers_for_the_same_training(tmp_path):
    """seglab train, then the same U-Net, data, seed and deterministic ops in plain model.fit
    with the callback: the same per-class IoU, loss and CE history."""
    overrides = ("debug=smoke", f"paths.output_dir={tmp_path}", "trainer.epochs=3")
    cfg = compose_train(*overrides, "trainer.deterministic=true")
    run(cfg)
    trainer = build(cfg.trainer)
    trainer.prepare()
    data = build(cfg.data)
    with trainer.building():
        model = build(cfg.model, input_shape=data.image_shape, num_classes=data.num_classes)
    model.compile(optimizer=trainer.optimizer(), loss=build_loss(build(cfg.loss), None, IGNORE))
    train, val = trainer.streams(data)
    callback = SeglabCallback(val, data.class_names, IGNORE, **store(tmp_path))
    model.fit(train, epochs=3, shuffle=False, callbacks=[callback], verbose=0)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (trained,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    (fitted,) = runs_of(tmp_path)[1]
    for key in [f"val/iou/{c}" for c in CLASSES] + ["val/min_iou", "val/hidden_count"]:
        assert metric(client, fitted, key) == metric(client, trained, key), key
    for key in ["val/loss", "val/ce", "train/loss", *(f"val/loss_share/{c}" for c in CLASSES)]:
        np.testing.assert_allclose(
            metric(client, fitted, key), metric(client, trained, key), rtol=1e-5, err_msg=key
        )
    assert set(fitted.data.metrics) >= set(EPOCH_KEYS) | {f"val/missed/{c}" for c in CLASSES}


# --- Every input form, checked against scikit-learn and Keras ---------------------------------


def one_hot(masks, classes=3):
    hot = np.eye(classes, dtype=np.float32)[np.where(masks == IGNORE, 0, masks)]
    hot[masks == IGNORE] = 0
    return hot


FORMS = [  # (name, masks as given, output activation, from_logits, output)
    ("labels (B,H,W), softmax", lambda m: m, "softmax", False, "softmax"),
    ("labels (B,H,W,1), softmax", lambda m: m[..., None], "softmax", False, "softmax"),
    ("float labels, softmax", lambda m: m.astype(np.float32), "softmax", False, "softmax"),
    ("one-hot, softmax", one_hot, "softmax", False, "softmax"),
    ("labels, logits", lambda m: m, None, True, "softmax"),
    ("labels, sigmoid per class", lambda m: m, "sigmoid", False, "sigmoid"),
]


@pytest.mark.parametrize("source", ["arrays", "batched dataset", "unbatched dataset"])
@pytest.mark.parametrize(("name", "form", "activation", "from_logits", "output"), FORMS)
def test_each_input_form_gives_scikit_learns_confusion_matrix(
    source, name, form, activation, from_logits, output
):
    images, masks = tiny_data()
    given = form(masks)
    data = {
        "arrays": (images, given),
        "batched dataset": tf.data.Dataset.from_tensor_slices((images, given)).batch(4),
        "unbatched dataset": tf.data.Dataset.from_tensor_slices((images, given)),
    }[source]
    model = tiny_model(activation=activation)
    callback = SeglabCallback(data, ["a", "b", "c"], IGNORE, from_logits, output, batch_size=3)
    result = callback.validate(model)

    scores = np.asarray(model.predict(images, verbose=0))
    keep = masks != IGNORE
    expected = sk_confusion(masks[keep], scores.argmax(-1)[keep], labels=[0, 1, 2])
    np.testing.assert_array_equal(result.confusion, expected)
    assert result.images == 10


def test_a_one_channel_sigmoid_is_the_foreground_of_two_classes():
    images, masks = tiny_data(classes=2)
    masks[masks == IGNORE] = 0
    model = tiny_model(classes=1, activation=None)
    logits = np.asarray(model.predict(images, verbose=0))[..., 0]
    callback = SeglabCallback(
        (images, masks[..., None]), ["bg", "fg"], from_logits=True, output="sigmoid"
    )
    result = callback.validate(model)
    expected = sk_confusion(masks.ravel(), (logits > 0).astype(int).ravel(), labels=[0, 1])
    np.testing.assert_array_equal(result.confusion, expected)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    p_true = np.clip(np.where(masks == 1, p, 1 - p), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(result.ce_terms.sum() / 10, -np.log(p_true).mean(), rtol=1e-6)


def test_val_loss_is_keras_own_val_loss_over_uneven_batches():
    """10 images in batches of 4, 4 and 2: Keras weights each batch's loss by its size."""
    images, masks = tiny_data()
    masks[masks == IGNORE] = 0
    model = tiny_model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy())
    result = SeglabCallback((images, masks), ["a", "b", "c"], batch_size=4).validate(model)
    expected = model.evaluate(images, masks, batch_size=4, verbose=0)
    record = result.record(1, 0.0, 0.0)
    np.testing.assert_allclose(record.val_loss, expected, rtol=1e-5)
    # unweighted CE == Keras' sparse CE here; its shares sum to 1
    np.testing.assert_allclose(record.val_ce, expected, rtol=1e-5)
    np.testing.assert_allclose(record.loss_share.sum(), 1.0)


CE_CASES = [  # (labels, probabilities, expected per-class terms)
    # perfect prediction: each term -log(1 - 1e-7) over 2 pixels
    ([[0, 1]], [[[1.0, 0.0], [0.0, 1.0]]], [1e-7 / 2, 1e-7 / 2]),
    # all wrong: -log(1e-7) = 16.118
    ([[0, 1]], [[[0.0, 1.0], [1.0, 0.0]]], [16.11809565 / 2, 16.11809565 / 2]),
    # an ignored pixel counts nowhere (not in the denominator either)
    ([[0, 255]], [[[0.5, 0.5], [1.0, 0.0]]], [0.69314718, 0.0]),
    # unnormalised scores are renormalised: (2, 2) is (0.5, 0.5)
    ([[1, 1]], [[[2.0, 2.0], [0.0, 0.5]]], [0.0, (0.69314718 + 1e-7) / 2]),
]


@pytest.mark.parametrize(("labels", "probabilities", "expected"), CE_CASES)
def test_cross_entropy_terms_literal_values(labels, probabilities, expected):
    terms = cross_entropy_terms(np.array(labels), np.array(probabilities), 255)
    np.testing.assert_allclose(terms, expected, rtol=1e-6, atol=1e-12)


def test_cross_entropy_terms_sum_to_keras_sparse_cross_entropy():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=(2, 5, 5))
    labels = rng.integers(0, 4, (2, 5, 5))
    expected = keras.losses.SparseCategoricalCrossentropy()(labels, probs.astype(np.float32))
    np.testing.assert_allclose(cross_entropy_terms(labels, probs, 255).sum(), expected, rtol=1e-5)


# --- Bad input: one clear error before any run ------------------------------------------------

BAD_FIT = [
    ("labels beyond the class names", {"masks": 5}, r"labels \[5\] beyond the 3 class_names"),
    ("wrong channel count", {"classes": 4}, r"outputs 4 channels per pixel; 3 class_names"),
    ("output size", {"stride": 2}, r"outputs 4x4 pixels, the validation masks are 8x8"),
    ("soft labels", {"soft": True}, r"non-integer values"),
    ("one-hot gaps, no ignore", {"gaps": True, "ignore": None}, r"no class; pass ignore_index"),
    ("nothing labelled", {"masks_all": IGNORE}, r"no labelled pixel: every pixel is ignore_ind"),
]


@pytest.mark.parametrize(("name", "fault", "message"), BAD_FIT, ids=[c[0] for c in BAD_FIT])
def test_bad_input_fails_fit_in_one_line_before_any_run(tmp_path, name, fault, message):
    images, masks = tiny_data()
    masks[masks == IGNORE] = 1
    given = masks
    if "masks" in fault:
        given = masks.copy()
        given[0, 1, 1] = fault["masks"]
    if "masks_all" in fault:
        given = np.full_like(masks, fault["masks_all"])
    if fault.get("soft"):
        given = masks.astype(np.float32) + 0.5
    if fault.get("gaps"):
        given = one_hot(masks)
        given[0, 2, 2] = 0
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(fault.get("classes", 3), 1, strides=fault.get("stride", 1))(inputs)
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    model.compile("sgd", "sparse_categorical_crossentropy")
    ignore = fault.get("ignore", IGNORE)
    callback = SeglabCallback((images, given), ["a", "b", "c"], ignore, **store(tmp_path))
    with pytest.raises(ValueError, match=message):
        model.fit(images, masks, epochs=1, callbacks=[callback], verbose=0)
    assert runs_of(tmp_path)[1] == []


BAD_ARGUMENTS = [
    ({"ignore_index": 1}, r"ignore_index=1 is the label of class 'b'"),
    ({"output": "linear"}, r"output='linear' is not one of \['softmax', 'sigmoid'\]"),
    ({"class_names": ["a"]}, r"give at least 2 class names"),
    ({"validation_data": [1, 2, 3, 4]}, r"validation_data must be a tf.data.Dataset"),
    ({"validation_data": (np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8)))}, r"same, non-zero"),
    ({"monitor": "val/iou/z"}, r"SeglabCallback monitor='val/iou/z' is not a logged metric"),
    ({"experiment_name": "../x"}, r"experiment_name='../x'"),
    ({"mode": "up"}, r"SeglabCallback mode='up' is not one of \['max', 'min'\]"),
]


@pytest.mark.parametrize(("change", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_naming_them(change, message):
    images, masks = tiny_data()
    arguments = {"validation_data": (images, masks), "class_names": ["a", "b", "c"]}
    with pytest.raises(ValueError, match=message):
        SeglabCallback(**{**arguments, "ignore_index": IGNORE, **change})


def test_mask_labels_reads_one_hot_gaps_as_ignored():
    masks = np.array([[[0, 2], [IGNORE, 1]]])
    np.testing.assert_array_equal(mask_labels(one_hot(masks), 3, IGNORE), masks)


def test_an_empty_dataset_is_refused():
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 8, 8, 3)), np.zeros((0, 8, 8))))
    with pytest.raises(ValueError, match="validation_data is empty"):
        SeglabCallback(empty, ["a", "b"])._check(tiny_model(2))
    assert ValidationSet(empty, 2, None).dataset is not None


# --- The run: where it logs, how it ends, who reads it ----------------------------------------


def fit_tiny(callback, epochs=3, model=None, initial_epoch=0):
    images, masks = tiny_data(n=12)
    model = model or tiny_model()
    if getattr(model, "optimizer", None) is None:
        loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE)
        model.compile(keras.optimizers.Adam(0.05), loss)
    masks = np.where(masks == IGNORE, 0, masks)
    model.fit(
        images,
        masks,
        epochs=epochs,
        initial_epoch=initial_epoch,
        batch_size=4,
        callbacks=[callback],
        verbose=0,
    )
    return model


def test_a_run_holds_what_a_seglab_run_holds_and_the_report_reads_it(tmp_path, capsys):
    images, masks = tiny_data(n=12)
    callback = SeglabCallback(
        (images, masks),
        ["a", "b", "c"],
        IGNORE,
        gallery=2,
        params={"lr": 0.05},
        seed=3,
        **store(tmp_path),
    )
    fit_tiny(callback)
    client, (fitted,) = runs_of(tmp_path)
    assert fitted.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(fitted.info.run_id, "val/iou/b")] == [1, 2, 3]
    assert fitted.data.params["lr"] == "0.05"
    assert fitted.data.params["trainer.seed"] == "3"  # the report's seed column
    assert fitted.data.params["callback.loss_share_of"] == "ce"
    assert fitted.data.tags["seglab.loss"] == "sparse_categorical_crossentropy"
    # the loss ignores the ignored pixels as the callback does: val/loss is val/ce
    np.testing.assert_allclose(
        metric(client, fitted, "val/loss"), metric(client, fitted, "val/ce"), rtol=1e-5
    )
    assert fitted.data.tags[schema.TAG_WORST_CLASS] in {"a", "b", "c"}
    assert fitted.data.tags[schema.NOTE].startswith("val/loss ")
    assert {
        schema.PER_CLASS_FILE,
        schema.CONFUSION_FILE,
        schema.FIGURE_LOSS_VS_IOU,
        schema.FIGURE_OVERLAYS,
    } <= artifact_paths(client, fitted.info.run_id)
    per_image = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=fitted.info.run_id,
            artifact_path=schema.per_image_file("val"),
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        )
    )
    assert len(per_image) == 12 * 3
    frame = history(client, experiment_runs(client, "own"))
    row = summary(frame, experiment_runs(client, "own")).iloc[0]
    assert row["worst_class"] == fitted.data.tags[schema.TAG_WORST_CLASS]
    assert row["seed"] == 3
    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "worst class:" in out


def test_it_logs_into_the_active_mlflow_run_and_leaves_its_status_to_the_owner(tmp_path):
    images, masks = tiny_data(n=12)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("own")
    try:
        with mlflow.start_run() as active:
            fit_tiny(SeglabCallback((images, masks), ["a", "b", "c"], IGNORE))
            client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
            assert client.get_run(active.info.run_id).info.status == "RUNNING"
    finally:
        mlflow.set_tracking_uri(None)
    (only,) = runs_of(tmp_path)[1]
    assert only.info.run_id == active.info.run_id and only.info.status == "FINISHED"
    assert "val/min_iou" in only.data.metrics


def test_as_a_context_manager_several_fits_log_one_run_with_contiguous_epochs(tmp_path):
    images, masks = tiny_data(n=12)
    with SeglabCallback((images, masks), ["a", "b", "c"], IGNORE, **store(tmp_path)) as cb:
        model = fit_tiny(cb, epochs=2)
        fit_tiny(cb, epochs=4, initial_epoch=2, model=model)
    client, (only,) = runs_of(tmp_path)
    assert only.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(only.info.run_id, "val/loss")] == [1, 2, 3, 4]


def test_an_error_in_the_block_ends_the_run_failed_with_the_reason(tmp_path):
    images, masks = tiny_data(n=12)
    callback = SeglabCallback((images, masks), ["a", "b", "c"], IGNORE, **store(tmp_path))
    with pytest.raises(RuntimeError, match="out of memory"), callback:
        fit_tiny(callback, epochs=1)
        raise RuntimeError("out of memory")
    (only,) = runs_of(tmp_path)[1]
    assert only.info.status == "FAILED"
    assert only.data.tags[schema.TAG_FAILURE_REASON] == "RuntimeError: out of memory"


def test_a_nan_loss_ends_the_run_failed_with_the_reason(tmp_path):
    images, masks = tiny_data(n=12)
    callback = SeglabCallback((images, masks), ["a", "b", "c"], IGNORE, **store(tmp_path))
    model = tiny_model()
    model.compile("sgd", lambda y, p: keras.ops.mean(p) * np.nan)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        fit_tiny(callback, epochs=2, model=model)
    (only,) = runs_of(tmp_path)[1]
    assert only.info.status == "FAILED"
    assert "loss became nan" in only.data.tags[schema.TAG_FAILURE_REASON]


def test_later_callbacks_see_the_worst_class_iou_and_the_best_weights_come_back(tmp_path):
    images, masks = tiny_data(n=12)
    callback = SeglabCallback(
        (images, masks),
        ["a", "b", "c"],
        IGNORE,
        restore_best=True,
        save_best=True,
        **store(tmp_path),
    )
    seen = []
    spy = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(dict(logs)))
    model = tiny_model()
    model.compile(
        keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE)
    )
    model.fit(
        images,
        np.where(masks == IGNORE, 0, masks),
        epochs=3,
        batch_size=4,
        callbacks=[callback, spy],
        verbose=0,
    )
    client, (only,) = runs_of(tmp_path)
    ious = metric(client, only, "val/min_iou")
    assert [logs["val/min_iou"] for logs in seen] == pytest.approx(ious)
    best = int(only.data.tags[schema.TAG_BEST_EPOCH])
    # the model now holds the best epoch's weights: validating it again gives that epoch's IoU
    assert callback.validate(model).record(0, 0, 0).scores.min_iou == pytest.approx(ious[best - 1])
    assert "best_model/model.weights.h5" in {
        a.path for a in client.list_artifacts(only.info.run_id, "best_model")
    }


JAX_SCRIPT = """
import json, sys
import numpy as np, keras
from seglab.keras import SeglabCallback
rng = np.random.default_rng(0)
x = rng.random((12, 8, 8, 3), dtype=np.float32)
y = rng.integers(0, 3, (12, 8, 8))
y[:, 0, 0] = 255
inputs = keras.Input((8, 8, 3))
model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
model.compile("adam", loss)
cb = SeglabCallback((x, y), ["a", "b", "c"], 255, from_logits=True, tracking_uri=sys.argv[1],
                    experiment_name="own")
model.fit(x, np.where(y == 255, 0, y), epochs=2, batch_size=4, callbacks=[cb], verbose=0)
logits = np.asarray(model.predict(x, verbose=0))
print(json.dumps({"backend": keras.backend.backend(), "run": cb.run_id,
                  "predicted": logits.argmax(-1).tolist(), "logits": logits.tolist()}))
"""


def test_the_jax_backend_logs_the_same_numbers_from_arrays(tmp_path):
    """Under KERAS_BACKEND=jax (in a subprocess: the backend is chosen at import) the run ends
    FINISHED, and its last epoch's confusion matrix and CE are scikit-learn's and the formula's
    on the model's own predictions."""
    import json
    import os
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, uri], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    client = MlflowClient(uri)
    run = client.get_run(out["run"])
    assert run.info.status == "FINISHED"
    rng = np.random.default_rng(0)
    rng.random((12, 8, 8, 3), dtype=np.float32)
    masks = rng.integers(0, 3, (12, 8, 8))
    masks[:, 0, 0] = IGNORE
    keep = masks != IGNORE
    predicted = np.asarray(out["predicted"])
    cm = sk_confusion(masks[keep], predicted[keep], labels=[0, 1, 2])
    tp = np.diag(cm)
    expected_iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    for c, name in enumerate("abc"):
        assert run.data.metrics[f"val/iou/{name}"] == pytest.approx(expected_iou[c], abs=1e-12)
    logits = np.asarray(out["logits"], dtype=np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, np.where(keep, masks, 0)[..., None], -1)[..., 0]
    per_batch = [ce[i : i + 4][keep[i : i + 4]].mean() for i in range(0, 12, 4)]
    assert run.data.metrics["val/ce"] == pytest.approx(np.mean(per_batch), rel=1e-5)


@pytest.mark.slow
def test_the_notebook_reads_the_callbacks_runs_by_experiment(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from seglab.paths import project_root

    images, masks = tiny_data(n=12)
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        callback = SeglabCallback(
            (images, masks), ["a", "b", "c"], IGNORE, seed=seed, **store(tmp_path)
        )
        fit_tiny(callback, model=tiny_model(seed=seed))
    monkeypatch.setenv("SEGLAB_EXPERIMENT", "own")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    notebook = nbformat.read(project_root() / "notebooks/per_class_iou_analysis.ipynb", 4)
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(str(o) for o in outputs)
    assert "2 runs of experiment own" in text and "missed entirely" in text
    assert not [o for o in outputs if o.get("name") == "stderr"]  # no warnings
