"""The image-weights question, measured on seglab's own streams.

A weight per image (boost the images that contain the rare class), with augmentation and a
validation split: does the weight scale exactly that image's loss, does every augmented view of
the image keep it, and are the validation split and its metrics left alone?

    .venv/bin/python experiments/image_weights/measure.py
"""

from __future__ import annotations

import numpy as np

from seglab.core.class_weights import Weighting
from seglab.data.augment import Augmenter
from seglab.data.datasets.shapes import shapes
from seglab.data.pipeline import batches
from seglab.losses import CrossEntropy
from seglab.training.trainer import Trainer

SPECK, BOOST = 4, 5.0


def fixed_prediction(masks: np.ndarray, seed: int = 0) -> np.ndarray:
    """Some fixed softmax probabilities of the right shape: any prediction serves, the same one
    is scored with and without the image weight."""
    logits = np.random.default_rng(seed).normal(size=(*masks.shape, 5))
    return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)


def measure(num_train: int = 40, num_val: int = 10, epochs: int = 3) -> dict[str, float]:
    """The measured facts, as numbers (ratios 1.0 and counts equal mean "holds exactly")."""
    import keras  # after seglab, which imports TensorFlow without its start-up lines

    data = shapes(image_size=64, num_train=num_train, num_val=num_val, seed=0)
    loss = CrossEntropy(ignore_index=data.ignore_index)
    originals = [mask for _, mask in data.train.as_numpy_iterator()]
    contains = np.array([bool((mask == SPECK).any()) for mask in originals])

    # 1. One batch of every training image, no augmentation: weights with and without the boost.
    def one_batch(boost: tuple[int, float] | None) -> tuple[np.ndarray, np.ndarray]:
        (_, masks, weights), *_ = batches(
            data.train, num_train, shuffle=False, image_boost=boost, num_classes=5
        )
        return masks.numpy(), weights.numpy()

    masks, plain = one_batch((SPECK, 1.0))
    _, boosted = one_batch((SPECK, BOOST))
    probs = fixed_prediction(masks)
    per_image = [
        float(loss(masks[i : i + 1], probs[i : i + 1], boosted[i : i + 1]))
        / float(loss(masks[i : i + 1], probs[i : i + 1], plain[i : i + 1]))
        for i in range(num_train)
    ]
    ratios = np.array(per_image)
    # The batch loss moves by exactly (BOOST - 1) x the boosted images' pixel losses / N.
    batch_gain = float(loss(masks, probs, boosted)) - float(loss(masks, probs, plain))
    pixel_losses = -np.log(np.take_along_axis(probs, masks[..., None], -1)[..., 0])
    expected_gain = (BOOST - 1) * pixel_losses[contains].sum() / masks.size
    keras_ce = keras.losses.SparseCategoricalCrossentropy()(masks, probs, sample_weight=boosted)

    # 2. Augmented views over several epochs: every labelled pixel of a view keeps its image's
    # weight (the stream keeps the order, so view i comes from image i).
    stream = batches(
        data.train,
        num_train,
        shuffle_seed=0,
        shuffle=False,
        augment=Augmenter(1.0),
        image_boost=(SPECK, BOOST),
        num_classes=5,
    )
    views = kept = 0
    for _ in range(epochs):
        for _, view_masks, view_weights in stream:
            pairs = zip(view_masks.numpy(), view_weights.numpy(), strict=True)
            for i, (mask, weight) in enumerate(pairs):
                labelled = mask != data.ignore_index
                views += 1
                kept += bool(np.all(weight[labelled] == (BOOST if contains[i] else 1.0)))

    # 3. The validation stream, with and without boost and augmentation.
    trainer = Trainer(lambda: keras.optimizers.Adam(), batch_size=8)
    _, plain_val = trainer.streams(data, Weighting.for_loss(loss))
    _, boosted_val = trainer.streams(
        data, Weighting.for_loss(loss, image_boost=(SPECK, BOOST)), augment=Augmenter(1.0)
    )
    differing = sum(
        int(np.sum(a.numpy() != b.numpy()))
        for batch_a, batch_b in zip(plain_val, boosted_val, strict=True)
        for a, b in zip(batch_a, batch_b, strict=True)
    )
    val_masks = np.concatenate([m.numpy() for _, m, *_ in plain_val])
    val_probs = fixed_prediction(val_masks, seed=1)
    val_ce = [
        float(loss(np.concatenate([m.numpy() for _, m, *_ in s]), val_probs))
        for s in (plain_val, boosted_val)
    ]
    return {
        "train images": num_train,
        "images with the rare class (boosted)": int(contains.sum()),
        "loss ratio, boosted images (min)": float(ratios[contains].min()),
        "loss ratio, boosted images (max)": float(ratios[contains].max()),
        "loss ratio, other images (min)": float(ratios[~contains].min()),
        "loss ratio, other images (max)": float(ratios[~contains].max()),
        "batch loss gain": batch_gain,
        "(boost - 1) x boosted pixel losses / N": float(expected_gain),
        "seglab CE with the weights": float(loss(masks, probs, boosted)),
        "Keras SparseCategoricalCrossentropy, same weights": float(keras_ce),
        "augmented views over the epochs": views,
        "views that kept their image's weight": kept,
        "validation values that differ with boost + augmentation": differing,
        "validation CE of a fixed prediction, plain": val_ce[0],
        "validation CE of a fixed prediction, boost + augmentation": val_ce[1],
    }


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name:<58} {value:.6g}" if isinstance(value, float) else f"{name:<58} {value}")
