"""The U-Net every seglab experiment trains (Ronneberger et al. 2015), in Keras 3."""

from __future__ import annotations

import keras
from keras import layers

from seglab.training.encoders import ENCODER_CHOICES, build_encoder_unet, check_encoder
from seglab.training.normalization import BatchNormalization


def build_unet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    depth: int = 3,
    base_filters: int = 8,
    dropout: float = 0.0,
    output_activation: str = "softmax",
    batch_norm: bool = True,
    batch_norm_momentum: float = 0.9,
    encoder: str = "none",
    encoder_weights: str | None = None,
    encoder_freeze: int = 0,
) -> keras.Model:
    """Builds a U-Net that outputs per-pixel class probabilities.

    Each level has two 3x3 conv blocks (conv, optional batch norm, ReLU); the encoder halves the
    resolution and doubles the filters ``depth`` times, the decoder mirrors it with transposed
    convolutions and skip connections. The output activation runs in float32 so the probabilities
    stay float32 under a ``mixed_bfloat16`` or ``mixed_float16`` policy.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be multiples of
            ``2**depth``.
        num_classes: Number of output classes (softmax channels).
        depth: Number of down-sampling steps.
        base_filters: Filters of the first level; level ``k`` has ``base_filters * 2**k``.
        dropout: Dropout rate in the bottleneck (0 disables it).
        output_activation: ``softmax`` (one distribution per pixel) or ``sigmoid``
            (independent per-class probabilities, as in the hidden-failure question); metrics
            take the argmax either way.
        batch_norm: Whether conv blocks use batch normalization.
        batch_norm_momentum: Momentum of the moving statistics used at validation. Keras'
            0.99 needs hundreds of steps to catch up, so short runs validate with stale
            statistics; 0.9 tracks them within an epoch.
        encoder: ``none`` (this U-Net, trained from scratch), a backbone of
            :data:`seglab.training.encoders.ENCODERS` or ``kerashub:<preset>``, whose decoder is
            :func:`~seglab.training.encoders.build_encoder_unet`'s (``depth``,
            ``base_filters``, ``dropout`` and ``batch_norm`` shape this U-Net only, and are
            not used then).
        encoder_weights: ``imagenet`` (from Keras' cache), ``None`` (random) or a weights file;
            for KerasHub, ``preset`` or ``None``.
        encoder_freeze: Epochs trained with the encoder frozen before it is unfrozen.

    Returns:
        A model mapping (B, H, W, channels) images to (B, H, W, num_classes) probabilities.

    Raises:
        ValueError: On a size that ``2**depth`` does not divide, or an argument out of range.
    """
    height, width, _ = input_shape
    check_encoder(encoder)
    if encoder_freeze < 0:
        raise ValueError(f"model.encoder_freeze must be >= 0 epochs, got {encoder_freeze}")
    if encoder == "none" and (encoder_weights is not None or encoder_freeze):
        raise ValueError(
            "model.encoder_weights and model.encoder_freeze need a model.encoder; choose one "
            f"of {list(ENCODER_CHOICES[1:])}"
        )
    if output_activation not in ("softmax", "sigmoid"):
        raise ValueError(
            f"model.output_activation must be 'softmax' or 'sigmoid', got {output_activation!r}"
        )
    if encoder != "none":
        return build_encoder_unet(
            input_shape,
            num_classes,
            encoder,
            encoder_weights,
            output_activation,
            batch_norm_momentum,
            encoder_freeze,
        )
    if depth < 1:
        raise ValueError(f"model.depth must be >= 1, got {depth}")
    if base_filters < 1:
        raise ValueError(f"model.base_filters must be >= 1, got {base_filters}")
    if num_classes < 2:
        raise ValueError(f"a segmentation model needs at least 2 classes, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
    if batch_norm and not 0.0 <= batch_norm_momentum < 1.0:
        # the moving statistics are momentum * old + (1 - momentum) * batch: past 1 they diverge
        raise ValueError(f"model.batch_norm_momentum must be in [0, 1), got {batch_norm_momentum}")
    step = 2**depth
    if height % step or width % step:
        raise ValueError(
            f"model.depth={depth} needs image height and width divisible by 2**{depth}={step}, "
            f"got {height}x{width}; choose an image size that is a multiple of {step} "
            "or a smaller model.depth"
        )

    def conv_block(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(x)
            if batch_norm:
                x = BatchNormalization(momentum=batch_norm_momentum)(x)
            x = layers.Activation("relu")(x)
        return x

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = conv_block(x, base_filters * 2**depth)
    if dropout:
        x = layers.Dropout(dropout)(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = conv_block(x, filters)
    logits = layers.Conv2D(num_classes, 1, name="logits")(x)
    probabilities = layers.Activation(output_activation, dtype="float32", name="probabilities")(
        logits
    )
    return keras.Model(inputs, probabilities, name="unet")
