"""The augmentation-layers question, counted: how many distinct views do N images give over E
epochs, and what do random augmentation layers do at validation and inference?

    .venv/bin/python experiments/augmentation_views/measure.py
"""

from __future__ import annotations

import hashlib

import numpy as np

from seglab.core.class_weights import Weighting
from seglab.data.augment import Augmenter
from seglab.data.datasets.shapes import shapes
from seglab.losses import CrossEntropy
from seglab.training.trainer import Trainer


def fingerprint(array: np.ndarray) -> str:
    """A view's identity: its pixel values to 4 decimals (float noise does not make it new)."""
    return hashlib.sha1(np.round(array.astype(np.float64), 4).tobytes()).hexdigest()


def measure(num_images: int = 8, epochs: int = 5) -> dict[str, int]:
    """Counts for Keras' random layers and for seglab's augmentation."""
    import keras  # after seglab, which imports TensorFlow without its start-up lines

    data = shapes(image_size=32, num_train=num_images, num_val=num_images, seed=0)
    images = np.stack([image for image, _ in data.train.as_numpy_iterator()])

    # Keras' random layers, called as a model calls them while training, once per epoch.
    layers = keras.Sequential(
        [keras.layers.RandomFlip("horizontal", seed=0), keras.layers.RandomRotation(0.25, seed=0)]
    )
    keras_views = [np.asarray(layers(images, training=True)) for _ in range(epochs)]
    at_inference = np.asarray(layers(images, training=False))
    model = keras.Sequential([keras.Input(images.shape[1:]), layers])
    predicted = model.predict(images, verbose=0)

    # seglab: the training stream, one pass per epoch (draws are new every pass).
    trainer = Trainer(lambda: keras.optimizers.Adam(), batch_size=num_images, shuffle=False)
    weighting = Weighting.for_loss(CrossEntropy(ignore_index=data.ignore_index))
    train, val = trainer.streams(data, weighting, augment=Augmenter(1.0))
    _, plain_val = trainer.streams(data, weighting)
    seglab_views, labels_kept = [], 0
    for _ in range(epochs):
        for batch_images, batch_masks, *_ in train:
            seglab_views.extend(batch_images.numpy())
            allowed = set(range(data.num_classes)) | {data.ignore_index}
            labels_kept += sum(set(np.unique(m)) <= allowed for m in batch_masks.numpy())
    val_changed = sum(
        int(np.sum(a.numpy() != b.numpy()))
        for batch, plain in zip(val, plain_val, strict=True)
        for a, b in zip(batch, plain, strict=True)
    )
    originals = {fingerprint(image) for image in images}
    keras_prints = {fingerprint(view) for epoch in keras_views for view in epoch}
    seglab_prints = {fingerprint(view) for view in seglab_views}
    return {
        "images N": num_images,
        "epochs E": epochs,
        "N x E": num_images * epochs,
        "Keras layers: views seen in training": sum(len(v) for v in keras_views),
        "Keras layers: distinct views": len(keras_prints),
        "Keras layers: views equal to an original image": len(keras_prints & originals),
        "Keras layers, training=False: pixels changed": int(np.sum(at_inference != images)),
        "Keras layers in a model, predict(): pixels changed": int(np.sum(predicted != images)),
        "seglab: training views": len(seglab_views),
        "seglab: distinct training views": len(seglab_prints),
        "seglab: views whose mask holds only labels or ignore": labels_kept,
        "seglab: validation values changed by augmentation": val_changed,
    }


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name:<52} {value}")
