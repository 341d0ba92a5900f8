"""Encoders for the shared U-Net: ``keras.applications`` backbones, pretrained or not, with their
own preprocessing inside the model and a U-Net decoder on their feature pyramid.

The decoder follows segmentation_models' ``Unet``: the backbone's last feature map of each
stride 2, 4, 8 and 16 is a skip connection, the stride-32 output is the bottleneck, and five
decoder blocks (upsampling by 2, the skip concatenated when the backbone has one at that
stride, two 3x3 conv + batch norm + ReLU) return to the input's resolution. The skips are found
by their output stride, not by layer names, so every backbone is wired the same way. The
backbone's batch normalization layers, and the decoder's, are seglab's fused ones
(:mod:`seglab.training.normalization`); KerasHub backbones keep their own.

Weights (``model.encoder_weights``): ``imagenet`` loads the backbone's no-top ImageNet file
from Keras' cache (``$KERAS_HOME/models``, default ``~/.keras/models``), where Keras keeps what
it downloads; seglab never downloads on its own, so a machine without network refuses in one
line naming the file and the folder to put it in. A path loads that weights file; ``null``
leaves the backbone randomly initialised.

KerasHub backbones (``model.encoder=kerashub:<preset>``, with the ``kerashub`` extra): any
backbone with ``pyramid_outputs`` down to stride 32 (ResNet, EfficientNet, DenseNet, CSPNet,
MiT...), from a preset name (KerasHub downloads it, or finds it in its cache) or a preset folder
(``save_to_preset``); ``model.encoder_weights`` is ``preset`` (the preset's weights) or ``null``.
Its preprocessing is the preset's image converter's scale and offset on 0-255 pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from seglab.core.checks import check_choice
from seglab.training.normalization import BatchNormalization

STRIDE = 32  # every backbone here halves the resolution five times
SKIP_STRIDES = (16, 8, 4, 2)  # decoder order: deepest skip first
DECODER_FILTERS = (256, 128, 64, 32, 16)


@dataclass(frozen=True)
class EncoderSpec:
    """One ``keras.applications`` backbone.

    Attributes:
        constructor: Its function in ``keras.applications``.
        family: Its module there, whose ``preprocess_input`` the model applies.
        weights_file: The no-top ImageNet weights file Keras caches for it.
        options: Further arguments of the constructor.
    """

    constructor: str
    family: str
    weights_file: str
    options: dict[str, Any] = field(default_factory=dict)


ENCODERS = {
    "resnet50": EncoderSpec(
        "ResNet50", "resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "efficientnetb0": EncoderSpec("EfficientNetB0", "efficientnet", "efficientnetb0_notop.h5"),
    "mobilenetv3small": EncoderSpec(
        "MobileNetV3Small",
        "mobilenet_v3",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        {"include_preprocessing": True},
    ),
    "convnext_tiny": EncoderSpec(
        "ConvNeXtTiny", "convnext", "convnext_tiny_notop.h5", {"include_preprocessing": True}
    ),
}
INPUT_LAYER = "encoder_input"  # the preprocessing layer's name in the model
KERASHUB = "kerashub:"  # model.encoder=kerashub:<preset name or folder>
ENCODER_CHOICES = ("none", *ENCODERS, f"{KERASHUB}<preset>")


def check_encoder(encoder: str) -> None:
    """Raises naming ``model.encoder`` and its choices on an encoder seglab cannot build."""
    if encoder.startswith(KERASHUB) and encoder.removeprefix(KERASHUB):
        return
    check_choice("model.encoder", encoder, ENCODER_CHOICES)


def keras_cache() -> Path:
    """Where Keras keeps downloaded model weights: ``$KERAS_HOME/models`` (``~/.keras``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def weights_path(encoder: str, weights: str | None) -> Path | None:
    """The weights file to load into ``encoder`` (``None``: random initialisation).

    Raises:
        ValueError: When ``imagenet`` is not in Keras' cache, or a path is not a file, naming
            the option, the file and (for ``imagenet``) the folder to put it in.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        path = keras_cache() / ENCODERS[encoder].weights_file
        if not path.is_file():
            raise ValueError(
                f"model.encoder_weights=imagenet: {path.name} is not in Keras' cache "
                f"{path.parent} and seglab does not download; put the file there (Keras "
                "downloads it on a machine with network) or use model.encoder_weights=null"
            )
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(
            f"model.encoder_weights={weights!r} is not a file; give imagenet, null or the path "
            f"of a weights file for {encoder}"
        )
    return path


@keras.saving.register_keras_serializable(package="seglab")
class EncoderInput(layers.Layer):
    """Images in ``[0, 1]`` (what seglab's data gives) as the encoder takes them: times 255,
    then ``keras.applications.<family>.preprocess_input`` (``resnet``: RGB to BGR and the
    ImageNet mean subtracted; the others preprocess inside the backbone), or a KerasHub image
    converter's ``scale`` and ``offset`` (a number or one per channel).

    Args:
        family: The backbone's module in ``keras.applications``.
        scale: Multiplies the 0-255 pixels (KerasHub), when there is no ``family``.
        offset: Is added after ``scale`` (KerasHub).
    """

    def __init__(
        self,
        family: str | None = None,
        scale: float | list[float] | None = None,
        offset: float | list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.family = family
        self.scale = scale
        self.offset = offset

    def call(self, images: Any) -> Any:
        pixels = images * 255.0
        if self.family is not None:
            return getattr(keras.applications, self.family).preprocess_input(pixels)
        if self.scale is not None:
            pixels = pixels * ops.convert_to_tensor(self.scale, pixels.dtype)
        if self.offset is not None:
            pixels = pixels + ops.convert_to_tensor(self.offset, pixels.dtype)
        return pixels

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "family": self.family,
            "scale": self.scale,
            "offset": self.offset,
        }


def pyramid(backbone: keras.Model, height: int, width: int) -> dict[int, keras.KerasTensor]:
    """The backbone's last feature map at each stride of :data:`SKIP_STRIDES` and
    :data:`STRIDE`, found by output size (a padded map matches none)."""
    found: dict[int, keras.KerasTensor] = {}
    for layer in backbone.layers[1:]:
        output = layer.output
        if not isinstance(output, keras.KerasTensor) or len(output.shape) != 4:
            continue
        h, w = output.shape[1], output.shape[2]
        if h and w and height % h == 0 and height // h == width // w and width % w == 0:
            found[height // h] = output
    return {s: found[s] for s in (*SKIP_STRIDES, STRIDE) if s in found}


def with_fused_norms(backbone: keras.Model) -> keras.Model:
    """``backbone`` rebuilt with seglab's fused batch normalization in place of Keras' (the same
    layer names, configs and variables, so the backbone's weights files load alike)."""

    def clone(layer: layers.Layer) -> layers.Layer:
        kind = BatchNormalization if type(layer) is layers.BatchNormalization else type(layer)
        return kind.from_config(layer.get_config())

    return keras.models.clone_model(backbone, clone_function=clone)


def kerashub_backbone(
    preset: str, input_shape: tuple[int, int, int], weights: str | None
) -> tuple[keras.Model, dict[int, keras.KerasTensor], EncoderInput]:
    """A KerasHub backbone from ``preset``, its pyramid by stride, and its preprocessing."""
    option = f"model.encoder={KERASHUB}{preset}"
    try:
        import keras_hub
    except ImportError:
        raise ValueError(f"{option} needs KerasHub: pip install -e '.[kerashub]'") from None
    if weights not in (None, "preset"):
        raise ValueError(
            f"model.encoder_weights={weights!r}: a KerasHub encoder takes preset (the "
            "preset's own weights) or null (random initialisation)"
        )
    try:
        backbone = keras_hub.models.Backbone.from_preset(
            preset, load_weights=weights == "preset", image_shape=input_shape
        )
    except Exception as error:  # no network, no such preset, a folder that is no preset
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{option}: the preset cannot be loaded ({type(error).__name__}: {reason}); "
            "without network, give a preset folder saved with save_to_preset elsewhere"
        ) from None
    levels = getattr(backbone, "pyramid_outputs", None) or {}
    features = {input_shape[0] // tensor.shape[1]: tensor for tensor in levels.values()}
    if STRIDE not in features:
        raise ValueError(
            f"{option}: {type(backbone).__name__} has no stride-{STRIDE} pyramid output; "
            "choose a backbone with pyramid_outputs (ResNet, EfficientNet, DenseNet, CSPNet, MiT)"
        )
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
        scale, offset = converter.scale, converter.offset
    except (FileNotFoundError, ValueError, KeyError):  # a preset without an image converter
        scale = offset = None
    return backbone, features, EncoderInput(None, listed(scale), listed(offset), name=INPUT_LAYER)


def listed(value: Any) -> float | list[float] | None:
    """A converter's scale or offset as JSON (a number or a list), for the layer's config."""
    return None if value is None else np.asarray(value, dtype=float).tolist()


def build_encoder(
    encoder: str, input_shape: tuple[int, int, int], weights: str | None
) -> tuple[keras.Model, list[int], EncoderInput]:
    """The backbone as one model whose outputs are its feature pyramid (bottleneck first, then
    the skips from deep to shallow), the skips' strides and the encoder's preprocessing."""
    if encoder.startswith(KERASHUB):
        backbone, features, preprocessing = kerashub_backbone(
            encoder.removeprefix(KERASHUB), input_shape, weights
        )
    else:
        spec = ENCODERS[encoder]
        path = weights_path(encoder, weights)
        build = getattr(keras.applications, spec.constructor)
        backbone = build(include_top=False, weights=None, input_shape=input_shape, **spec.options)
        backbone = with_fused_norms(backbone)
        if path is not None:
            backbone.load_weights(path)
        features = pyramid(backbone, input_shape[0], input_shape[1])
        preprocessing = EncoderInput(spec.family, name=INPUT_LAYER)
        if STRIDE not in features:
            raise ValueError(f"model.encoder={encoder}: no stride-{STRIDE} output found")
    strides = [s for s in SKIP_STRIDES if s in features]
    outputs = [features[STRIDE], *(features[s] for s in strides)]
    return keras.Model(backbone.inputs, outputs, name="encoder"), strides, preprocessing


def decoder_block(
    x: keras.KerasTensor, skip: keras.KerasTensor | None, filters: int, momentum: float
) -> keras.KerasTensor:
    """Upsample by 2, concatenate ``skip`` (when there is one), two 3x3 conv-BN-ReLU."""
    x = layers.UpSampling2D(2)(x)
    if skip is not None:
        x = layers.Concatenate()([x, skip])
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = BatchNormalization(momentum=momentum)(x)
        x = layers.Activation("relu")(x)
    return x


def build_encoder_unet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    encoder: str,
    weights: str | None,
    output_activation: str,
    batch_norm_momentum: float,
    freeze_epochs: int = 0,
) -> keras.Model:
    """A U-Net on a pretrained (or random) backbone (see the module's docstring), its encoder
    frozen (batch norm included: it keeps its statistics) when ``freeze_epochs > 0``; the
    trainer unfreezes it after that many epochs (:func:`frozen_epochs`).

    Raises:
        ValueError: On a size the encoder's stride does not divide, or weights it cannot load.
    """
    height, width, _ = input_shape
    if height % STRIDE or width % STRIDE:
        raise ValueError(
            f"model.encoder={encoder} needs image height and width divisible by its stride "
            f"{STRIDE}, got {height}x{width}; choose a data.image_size that is a multiple of "
            f"{STRIDE}"
        )
    backbone, strides, preprocessing = build_encoder(encoder, input_shape, weights)
    backbone.trainable = freeze_epochs == 0
    inputs = keras.Input(shape=input_shape, name="image")
    bottleneck, *skips = backbone(preprocessing(inputs))
    by_stride = dict(zip(strides, skips, strict=True))
    x = bottleneck
    for stride, filters in zip((*SKIP_STRIDES, 1), DECODER_FILTERS, strict=True):
        x = decoder_block(x, by_stride.get(stride), filters, batch_norm_momentum)
    logits = layers.Conv2D(num_classes, 3, padding="same", name="logits")(x)
    probabilities = layers.Activation(output_activation, dtype="float32", name="probabilities")(
        logits
    )
    name = "unet_kerashub" if encoder.startswith(KERASHUB) else f"unet_{encoder}"
    model = keras.Model(inputs, probabilities, name=name)
    setattr(model, FREEZE_ATTRIBUTE, freeze_epochs)
    return model


FREEZE_ATTRIBUTE = "seglab_encoder_freeze"  # on the model: its encoder's frozen epochs


def frozen_epochs(model: keras.Model) -> int:
    """The epochs ``model`` trains with its encoder frozen (0: none, or no encoder)."""
    return int(getattr(model, FREEZE_ATTRIBUTE, 0))


def unfreeze(model: keras.Model) -> None:
    """Makes the encoder of a U-Net built on one trainable, batch norm included."""
    model.get_layer("encoder").trainable = True
