"""Encoders for the shared U-Net: every backbone builds and trains, weights load from a file or
Keras' cache (never the network), the preprocessing is keras.applications', freezing holds for
its epochs and resumes in its phase, the logged model reloads in safe mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import CLASSES, compose_train
from mlflow.tracking import MlflowClient

from seglab.config import build
from seglab.losses import CrossEntropy
from seglab.tracking.models import load_model_folder
from seglab.tracking.run_log import epoch_metrics
from seglab.train import run
from seglab.training.checkpoints import Checkpointer
from seglab.training.encoders import (
    ENCODERS,
    FREEZE_ATTRIBUTE,
    EncoderInput,
    build_encoder,
    keras_cache,
)
from seglab.training.model import build_unet
from seglab.training.normalization import BatchNormalization


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_every_encoder_builds_and_trains_a_step_at_the_input_size(encoder):
    keras.utils.set_random_seed(0)
    model = build_unet((32, 64, 3), 3, encoder=encoder)
    model.compile("adam", CrossEntropy(255), run_eagerly=True)  # one step: tracing costs more
    images = np.random.default_rng(0).random((2, 32, 64, 3), dtype=np.float32)
    masks = np.random.default_rng(1).integers(0, 3, (2, 32, 64))
    before = [w.copy() for w in model.get_layer("encoder").get_weights()]
    history = model.fit(images, masks, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.output_shape == (None, 32, 64, 3)
    after = model.get_layer("encoder").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_the_skips_are_the_backbones_last_maps_at_each_stride():
    """ResNet50: the layers segmentation_models' Unet takes, found by stride alone."""
    encoder, strides, _ = build_encoder("resnet50", (64, 64, 3), None)
    names = [tensor._keras_history.operation.name for tensor in encoder.outputs]
    assert strides == [16, 8, 4, 2]
    assert names == [
        "conv5_block3_out",
        "conv4_block6_out",
        "conv3_block4_out",
        "conv2_block3_out",
        "conv1_relu",
    ]


PIXEL = np.array([[[[1.0, 0.5, 0.0]]]], dtype=np.float32)
PREPROCESSED = [  # (family, the pixel (1.0, 0.5, 0.0) as the encoder takes it)
    ("resnet", [0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68]),  # BGR minus ImageNet mean
    ("efficientnet", [255.0, 127.5, 0.0]),  # rescales inside the backbone
    ("mobilenet_v3", [255.0, 127.5, 0.0]),
    ("convnext", [255.0, 127.5, 0.0]),
]


@pytest.mark.parametrize(("family", "expected"), PREPROCESSED)
def test_preprocessing_is_keras_applications_own_on_0_255_pixels(family, expected):
    shown = np.asarray(EncoderInput(family)(PIXEL))[0, 0, 0]
    np.testing.assert_allclose(shown, expected, rtol=1e-6)
    reference = getattr(keras.applications, family).preprocess_input(PIXEL * 255.0)
    np.testing.assert_allclose(shown, np.asarray(reference)[0, 0, 0], rtol=1e-6)


def backbone_file(tmp_path, seed: int = 7):
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=True
    )
    path = tmp_path / "backbone.weights.h5"
    backbone.save_weights(path)
    return backbone, path


def test_a_local_weights_file_loads_into_the_encoder(tmp_path):
    backbone, path = backbone_file(tmp_path)
    keras.utils.set_random_seed(0)
    model = build_unet((32, 32, 3), 3, encoder="mobilenetv3small", encoder_weights=str(path))
    loaded = model.get_layer("encoder").get_weights()
    assert len(loaded) == len(backbone.get_weights())
    for mine, theirs in zip(loaded, backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_the_encoder_normalizes_with_seglabs_fused_layer_as_keras_backbone_does(tmp_path):
    backbone, path = backbone_file(tmp_path)
    model = build_unet((32, 32, 3), 3, encoder="mobilenetv3small", encoder_weights=str(path))
    encoder = model.get_layer("encoder")
    norms = [
        layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 34 and all(isinstance(layer, BatchNormalization) for layer in norms)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    bottleneck = encoder(images, training=False)[0]
    np.testing.assert_allclose(bottleneck, backbone(images, training=False), rtol=1e-4, atol=1e-4)


def test_imagenet_weights_come_from_keras_cache(tmp_path, monkeypatch):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # the format Keras' files are in

    backbone, _ = backbone_file(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    keras_cache().mkdir(parents=True)
    with h5py.File(keras_cache() / ENCODERS["mobilenetv3small"].weights_file, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, backbone)
    model = build_unet((32, 32, 3), 3, encoder="mobilenetv3small", encoder_weights="imagenet")
    for mine, theirs in zip(
        model.get_layer("encoder").get_weights(), backbone.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_imagenet_weights_missing_offline_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    expected = (
        r"model.encoder_weights=imagenet: resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 "
        rf"is not in Keras' cache {tmp_path}/home/models and seglab does not download"
    )
    with pytest.raises(ValueError, match=expected):
        build_unet((32, 32, 3), 3, encoder="resnet50", encoder_weights="imagenet")


BAD = [
    ({"encoder": "resnet18"}, r"model.encoder='resnet18' is not one of \['none', 'resnet50'"),
    ({"encoder": "resnet50", "encoder_weights": "/no/file.h5"}, r"'/no/file.h5' is not a file"),
    ({"encoder_freeze": 2}, r"need a model.encoder"),
    ({"encoder": "resnet50", "encoder_freeze": -1}, r"encoder_freeze must be >= 0"),
]


@pytest.mark.parametrize(("options", "message"), BAD)
def test_bad_encoder_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        build_unet((32, 32, 3), 3, **options)


def test_a_size_the_encoder_stride_does_not_divide_is_refused():
    with pytest.raises(ValueError, match=r"divisible by its stride 32, got 48x64"):
        build_unet((48, 64, 3), 3, encoder="efficientnetb0")


class EncoderWatch(keras.callbacks.Callback):
    """The encoder's and the decoder head's weights after every epoch."""

    def __init__(self):
        super().__init__()
        self.encoder, self.head = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.encoder.append([w.copy() for w in self.model.get_layer("encoder").get_weights()])
        self.head.append(self.model.get_layer("logits").get_weights()[0].copy())


def tiny_encoder_unet(freeze_epochs: int) -> keras.Model:
    """A model shaped like an encoder U-Net (a sub-model named ``encoder`` with batch norm,
    frozen for ``freeze_epochs``) at a fraction of a backbone's tracing time."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    encoder = keras.Model(inputs, keras.layers.BatchNormalization()(x), name="encoder")
    encoder.trainable = freeze_epochs == 0
    image = keras.Input((32, 32, 3))
    logits = keras.layers.Conv2D(5, 1, name="logits")(encoder(image))
    model = keras.Model(image, keras.layers.Softmax()(logits))
    setattr(model, FREEZE_ATTRIBUTE, freeze_epochs)
    return model


def smoke_trainer_and_data(tmp_path, epochs: int):
    cfg = compose_train(
        "debug=smoke",
        f"paths.output_dir={tmp_path}",
        f"trainer.epochs={epochs}",
        "trainer.shuffle=false",
        "trainer.deterministic=true",
    )
    trainer = build(cfg.trainer)
    trainer.prepare()
    return trainer, build(cfg.data)


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_frozen_encoder_keeps_every_weight_until_its_epochs_are_over(tmp_path):
    trainer, data = smoke_trainer_and_data(tmp_path, epochs=2)
    model = tiny_encoder_unet(freeze_epochs=1)
    initial = [w.copy() for w in model.get_layer("encoder").get_weights()]
    watch = EncoderWatch()
    trainer.fit(model, CrossEntropy(255), data, callbacks=[watch])
    assert same(watch.encoder[0], initial)  # batch norm statistics included
    assert not same(watch.encoder[1], initial)
    assert not np.array_equal(watch.head[0], watch.head[1])


@pytest.mark.parametrize("stopped_after", [1, 2])
def test_a_resume_continues_in_its_phase_as_if_never_stopped(tmp_path, stopped_after):
    """Frozen for 2 of 3 epochs: stopped after epoch 1 (frozen phase, its optimizer state
    restored) or 2 (the phase's end: a fresh optimizer, as unstopped), then resumed: the final
    weights are those of the run that never stopped."""
    trainer, data = smoke_trainer_and_data(tmp_path, epochs=3)
    straight = tiny_encoder_unet(freeze_epochs=2)
    trainer.fit(straight, CrossEntropy(255), data)

    checkpoints = Checkpointer(tmp_path / "checkpoints")
    first, data = smoke_trainer_and_data(tmp_path, epochs=stopped_after)
    stopped = tiny_encoder_unet(freeze_epochs=2)
    first.fit(
        stopped,
        CrossEntropy(255),
        data,
        on_epoch=lambda record: checkpoints.save(
            stopped, record.epoch, epoch_metrics(record, data.class_names)
        ),
    )
    second, data = smoke_trainer_and_data(tmp_path, epochs=3)
    resumed = tiny_encoder_unet(freeze_epochs=2)
    records = second.fit(resumed, CrossEntropy(255), data, resume_from=checkpoints)
    assert [r.epoch for r in records] == list(range(stopped_after + 1, 4))
    np.testing.assert_allclose(
        np.concatenate([w.ravel() for w in resumed.get_weights()]),
        np.concatenate([w.ravel() for w in straight.get_weights()]),
        rtol=1e-6,
    )


def test_the_saved_model_reloads_in_safe_mode_and_predicts_identically(tmp_path):
    """What the run logs (a .keras file in an MLflow model folder) with the encoder's
    preprocessing layer, loaded as seglab loads it: no pickle, safe mode."""
    model = build_unet((32, 32, 3), 3, encoder="mobilenetv3small")
    (tmp_path / "data").mkdir()
    model.save(tmp_path / "data" / "model.keras")
    loaded = load_model_folder(tmp_path, "run")
    assert isinstance(loaded.get_layer("encoder_input"), EncoderInput)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )


@pytest.mark.slow
def test_an_encoder_run_composes_with_loss_weights_augmentation_evaluate_and_predict(
    tmp_path, capsys
):
    """A region loss with class weights and augmentation on a frozen-then-unfrozen encoder: the
    run finishes, `seglab evaluate` scores its logged model on val exactly as training scored
    that checkpoint's epoch, and `seglab predict` segments images of other sizes."""
    from PIL import Image

    from seglab.evaluate import main as evaluate
    from seglab.predict import load_run_model, predict_folder
    from seglab.tracking.tracker import MlflowTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run(
        compose_train(
            "debug=smoke",
            f"paths.output_dir={tmp_path}",
            f"tracking.tracking_uri={uri}",
            "model.encoder=mobilenetv3small",
            "model.encoder_freeze=1",
            "loss=dice",
            "class_weights=median_frequency",
            "augment=light",
        )
    )
    client = MlflowClient(uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    run_id = logged.info.run_id
    assert logged.info.status == "FINISHED"
    capsys.readouterr()
    # shapes has no test split: the default scores val, as val/best/..., and says so
    assert evaluate([f"run_id={run_id}", f"tracking_uri={uri}"]) == 0
    assert capsys.readouterr().out.startswith(
        "the data has no test split (its splits: train, val): scoring val with the best "
        "checkpoint, logged as val/best/... (split=<name> and prefix=<name> choose)\n"
    )
    model, metadata = load_run_model(MlflowTracker(tracking_uri=uri), run_id)
    epoch = metadata["checkpoint_epoch"]
    for name in CLASSES:
        trained = {m.step: m.value for m in client.get_metric_history(run_id, f"val/iou/{name}")}
        again = client.get_metric_history(run_id, f"val/best/iou/{name}")
        assert [m.step for m in again] == [epoch]
        np.testing.assert_equal(again[0].value, trained[epoch])
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(tmp_path / "in" / "a.png")
    files, _ = predict_folder(model, metadata, str(tmp_path / "in"), str(tmp_path / "out"))
    assert [f.name for f in files] == ["a.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")).shape == (40, 56)


IMAGENET_SCALE = [1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)]
IMAGENET_OFFSET = [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]


@pytest.fixture(scope="module")
def kerashub_preset(tmp_path_factory):
    """A small KerasHub ResNet saved as a preset folder, with an ImageNet-normalising image
    converter (what a preset downloaded elsewhere holds)."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(11)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 8, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        use_pre_activation=False,
    )
    folder = tmp_path_factory.mktemp("preset")
    backbone.save_to_preset(folder)
    converter = keras_hub.layers.ResNetImageConverter(scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET)
    converter.save_to_preset(folder)
    return folder, backbone, converter


def test_a_kerashub_preset_folder_is_an_encoder_with_its_weights_and_preprocessing(
    kerashub_preset, tmp_path
):
    folder, backbone, converter = kerashub_preset
    model = build_unet((32, 32, 3), 3, encoder=f"kerashub:{folder}", encoder_weights="preset")
    encoder = model.get_layer("encoder")
    assert [o.shape[1] for o in encoder.outputs] == [1, 2, 4, 8]  # strides 32, 16, 8, 4
    assert same(encoder.get_weights(), backbone.get_weights())
    # (1.0, 0.5, 0.0) normalised by the ImageNet mean and standard deviation
    shown = np.asarray(model.get_layer("encoder_input")(PIXEL))[0, 0, 0]
    np.testing.assert_allclose(shown, [2.2489083, 0.1964286, -1.8044444], rtol=1e-5)
    np.testing.assert_allclose(shown, np.asarray(converter(PIXEL * 255.0))[0, 0, 0], rtol=1e-5)
    random = build_unet((32, 32, 3), 3, encoder=f"kerashub:{folder}", encoder_weights=None)
    assert not same(random.get_layer("encoder").get_weights(), encoder.get_weights())
    model.compile("adam", CrossEntropy(255), run_eagerly=True)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    model.fit(images, np.zeros((2, 32, 32), int), epochs=1, verbose=0)
    (tmp_path / "data").mkdir()
    model.save(tmp_path / "data" / "model.keras")
    loaded = load_model_folder(tmp_path, "run")
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def test_kerashub_options_it_cannot_use_are_named(kerashub_preset, tmp_path):
    folder = kerashub_preset[0]
    with pytest.raises(ValueError, match=r"encoder_weights='imagenet': a KerasHub encoder takes"):
        build_unet((32, 32, 3), 3, encoder=f"kerashub:{folder}", encoder_weights="imagenet")
    with pytest.raises(ValueError, match=r"kerashub:/no/such: the preset cannot be loaded"):
        build_unet((32, 32, 3), 3, encoder="kerashub:/no/such", encoder_weights="preset")
    with pytest.raises(ValueError, match=r"model.encoder='kerashub:' is not one of"):
        build_unet((32, 32, 3), 3, encoder="kerashub:")
