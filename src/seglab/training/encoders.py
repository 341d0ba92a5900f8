"""Encoders for the shared U-Net: ``keras.applications`` backbones, pretrained or not, with their
own preprocessing inside the model and a U-Net decoder on their feature pyramid.

The decoder follows segmentation_models' ``Unet``: the backbone's last feature map of each
stride 2, 4, 8 and 16 is a skip connection, the stride-32 output is the bottleneck, and five
decoder blocks (upsampling by 2, the skip concatenated when the backbone has one at that
stride, two 3x3 conv + batch norm + ReLU) return to the input's resolution. The skips are found
by their output stride, not by layer names, so every backbone is wired the same way.

Weights (``model.encoder_weights``): ``imagenet`` loads the backbone's no-top ImageNet file
from Keras' cache (``$KERAS_HOME/models``, default ``~/.keras/models``), where Keras keeps what
it downloads; seglab never downloads on its own, so a machine without network refuses in one
line naming the file and the folder to put it in. A path loads that weights file; ``null``
leaves the backbone randomly initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
from keras import layers

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
ENCODER_CHOICES = ("none", *ENCODERS)


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
    ImageNet mean subtracted; the others preprocess inside the backbone).

    Args:
        family: The backbone's module in ``keras.applications``.
    """

    def __init__(self, family: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.family = family

    def call(self, images: Any) -> Any:
        preprocess = getattr(keras.applications, self.family).preprocess_input
        return preprocess(images * 255.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "family": self.family}


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


def build_encoder(
    encoder: str, input_shape: tuple[int, int, int], weights: str | None
) -> tuple[keras.Model, list[int]]:
    """The backbone as one model whose outputs are its feature pyramid (bottleneck first, then
    the skips from deep to shallow), and the skips' strides."""
    spec = ENCODERS[encoder]
    path = weights_path(encoder, weights)
    build = getattr(keras.applications, spec.constructor)
    backbone = build(include_top=False, weights=None, input_shape=input_shape, **spec.options)
    if path is not None:
        backbone.load_weights(path)
    features = pyramid(backbone, input_shape[0], input_shape[1])
    if STRIDE not in features:
        raise ValueError(f"model.encoder={encoder}: no stride-{STRIDE} output found")
    strides = [s for s in SKIP_STRIDES if s in features]
    outputs = [features[STRIDE], *(features[s] for s in strides)]
    return keras.Model(backbone.inputs, outputs, name="encoder"), strides


def decoder_block(
    x: keras.KerasTensor, skip: keras.KerasTensor | None, filters: int, momentum: float
) -> keras.KerasTensor:
    """Upsample by 2, concatenate ``skip`` (when there is one), two 3x3 conv-BN-ReLU."""
    x = layers.UpSampling2D(2)(x)
    if skip is not None:
        x = layers.Concatenate()([x, skip])
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=momentum)(x)
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
    backbone, strides = build_encoder(encoder, input_shape, weights)
    backbone.trainable = freeze_epochs == 0
    inputs = keras.Input(shape=input_shape, name="image")
    preprocessed = EncoderInput(ENCODERS[encoder].family, name="encoder_input")(inputs)
    bottleneck, *skips = backbone(preprocessed)
    by_stride = dict(zip(strides, skips, strict=True))
    x = bottleneck
    for stride, filters in zip((*SKIP_STRIDES, 1), DECODER_FILTERS, strict=True):
        x = decoder_block(x, by_stride.get(stride), filters, batch_norm_momentum)
    logits = layers.Conv2D(num_classes, 3, padding="same", name="logits")(x)
    probabilities = layers.Activation(output_activation, dtype="float32", name="probabilities")(
        logits
    )
    model = keras.Model(inputs, probabilities, name=f"unet_{encoder}")
    setattr(model, FREEZE_ATTRIBUTE, freeze_epochs)
    return model


FREEZE_ATTRIBUTE = "seglab_encoder_freeze"  # on the model: its encoder's frozen epochs


def frozen_epochs(model: keras.Model) -> int:
    """The epochs ``model`` trains with its encoder frozen (0: none, or no encoder)."""
    return int(getattr(model, FREEZE_ATTRIBUTE, 0))


def unfreeze(model: keras.Model) -> None:
    """Makes the encoder of a U-Net built on one trainable, batch norm included."""
    model.get_layer("encoder").trainable = True
