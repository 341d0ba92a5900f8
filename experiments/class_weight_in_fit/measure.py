"""The class_weight question, measured: Keras 3's ``fit(class_weight=...)`` on segmentation
masks, and the weightings that work, each against a hand-weighted NumPy reference.

    .venv/bin/python experiments/class_weight_in_fit/measure.py
"""

from __future__ import annotations

import numpy as np

from seglab.data.pipeline import pixel_weight_map
from seglab.losses import CrossEntropy, Dice, FocalLoss

WEIGHTS = np.array([1.0, 5.0, 2.0], np.float32)


def tiny_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (4, 8, 8, 3), integer masks (4, 8, 8) over 3 classes, and a fixed softmax
    prediction (4, 8, 8, 3)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(4, 8, 8, 3)).astype(np.float32)
    masks = rng.choice(3, size=(4, 8, 8), p=[0.8, 0.05, 0.15])
    logits = rng.normal(size=(4, 8, 8, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    return images, masks, probs


def keras_class_weight_error(images: np.ndarray, masks: np.ndarray, one_hot: bool) -> str:
    """What ``fit(class_weight=...)`` does with (B, H, W) integer or (B, H, W, C) one-hot
    targets: the exception it raises (or ``"trained"``)."""
    import keras  # after seglab, which imports TensorFlow without its start-up lines

    model = keras.Sequential(
        [keras.Input(images.shape[1:]), keras.layers.Conv2D(3, 1, activation="softmax")]
    )
    targets = np.eye(3, dtype=np.float32)[masks] if one_hot else masks
    model.compile(
        "adam", "categorical_crossentropy" if one_hot else "sparse_categorical_crossentropy"
    )
    try:
        model.fit(images, targets, class_weight=dict(enumerate(WEIGHTS)), epochs=1, verbose=0)
    except Exception as error:  # what Keras raises is the measurement
        return f"{type(error).__name__}: {error}"
    return "trained"


def measure() -> dict[str, object]:
    """Keras' failure, then each working weighting beside its hand-computed value."""
    import keras

    images, masks, probs = tiny_problem()
    one_hot = np.eye(3)[masks]
    p_true = np.take_along_axis(probs, masks[..., None], -1)[..., 0].astype(np.float64)
    pixel_weights = WEIGHTS[masks]

    # Pixelwise losses: a (B, H, W) sample_weight map w[mask], as seglab builds it in tf.data.
    seglab_map = pixel_weight_map(masks, WEIGHTS, ignore_index=255).numpy()
    hand_ce = float((pixel_weights * -np.log(p_true)).mean())
    hand_focal = float((pixel_weights * -0.25 * (1 - p_true) ** 2 * np.log(p_true)).mean())
    keras_ce = keras.losses.SparseCategoricalCrossentropy()(masks, probs, sample_weight=seglab_map)

    # Region losses: the weights go inside the mean over classes.
    tp = (one_hot * probs).sum(axis=(0, 1, 2))
    dice_per_class = 1 - (2 * tp + 1e-5) / (
        probs.sum(axis=(0, 1, 2)) + one_hot.sum((0, 1, 2)) + 1e-5
    )
    hand_dice = float((WEIGHTS * dice_per_class).sum() / WEIGHTS.sum())

    # What Keras' route could do at best for a region loss: one weight per image multiplies that
    # image's whole loss, every class alike (here: the weight of the image's rarest class).
    per_image_dice = [float(Dice()(masks[i : i + 1], probs[i : i + 1])) for i in range(4)]
    image_weights = [WEIGHTS[np.unique(m)].max() for m in masks]
    per_sample = float(np.dot(per_image_dice, image_weights) / 4)

    return {
        "Keras fit(class_weight), (B,H,W) integer masks": keras_class_weight_error(
            images, masks, one_hot=False
        ),
        "Keras fit(class_weight), (B,H,W,C) one-hot masks": keras_class_weight_error(
            images, masks, one_hot=True
        ),
        "seglab pixel map equals w[mask]": bool(np.array_equal(seglab_map, pixel_weights)),
        "CE, hand-weighted: mean_i w[y_i] (-log p_i)": hand_ce,
        "CE, seglab CrossEntropy with the map": float(CrossEntropy()(masks, probs, seglab_map)),
        "CE, Keras SparseCategoricalCrossentropy with the map": float(keras_ce),
        "focal, hand-weighted: mean_i w[y_i] focal(p_i)": hand_focal,
        "focal, seglab FocalLoss with the map": float(FocalLoss()(masks, probs, seglab_map)),
        "Dice, hand-weighted: sum_c w_c dice_c / sum_c w_c": hand_dice,
        "Dice, seglab Dice(class_weights=w)": float(Dice(class_weights=WEIGHTS)(masks, probs)),
        "Dice, unweighted": float(Dice()(masks, probs)),
        "Dice, one weight per image (Keras' per-sample route)": per_sample,
    }


if __name__ == "__main__":
    for name, value in measure().items():
        shown = f"{value:.6f}" if isinstance(value, float) else str(value)
        print(f"{name:<56} {shown}")
