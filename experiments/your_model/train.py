"""Your own model, diagnosed: a small Keras model seglab did not write, trained with plain
``model.fit`` and :class:`seglab.keras.SeglabCallback` on the shapes set.

The model is what a user writes in a few lines: an encoder-decoder of strided and transposed
convolutions, no skip connections, logits out, compiled with Keras' own
``SparseCategoricalCrossentropy``. The callback validates it every epoch and logs the run to
MLflow (experiment ``your_model``), where ``seglab report your_model`` reads it.

    .venv/bin/python experiments/your_model/train.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from seglab.data.datasets.shapes import shapes
from seglab.keras import SeglabCallback


def arrays(stream) -> tuple[np.ndarray, np.ndarray]:
    """An unbatched ``(image, mask)`` stream as two arrays."""
    pairs = list(stream.as_numpy_iterator())
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def users_model(num_classes: int, size: int) -> keras.Model:
    """A plain encoder-decoder, as a user would write one (about 60 k parameters)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(x), name="users_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--tracking-uri", default=None, help="default: seglab's own store")
    args = parser.parse_args()
    data = shapes()
    x_train, y_train = arrays(data.train)
    validation = arrays(data.val)
    for seed in args.seeds:
        keras.utils.set_random_seed(seed)
        model = users_model(data.num_classes, data.image_shape[0])
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        callback = SeglabCallback(
            validation,
            data.class_names,
            ignore_index=data.ignore_index,
            from_logits=True,
            experiment_name="your_model",
            tracking_uri=args.tracking_uri,
            run_name=f"users_model-seed{seed}",
            params={"epochs": args.epochs, "batch_size": 16},
            seed=seed,
        )
        started = time.perf_counter()
        model.fit(
            x_train, y_train, epochs=args.epochs, batch_size=16, callbacks=[callback], verbose=0
        )
        print(f"seed {seed}: {time.perf_counter() - started:.0f} s, run {callback.run_id}\n")


if __name__ == "__main__":
    main()
