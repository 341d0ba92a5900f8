"""Run as a script, twice (tests/test_strategy.py): one worker of a two-worker
``MultiWorkerMirroredStrategy`` cluster on localhost fitting a tiny plain Keras model, as in
TensorFlow's multi-worker tutorial. Prints ``fit ok`` or the error's first line."""

import json
import os
import sys

index, ports = int(sys.argv[1]), sys.argv[2:]
os.environ["TF_CONFIG"] = json.dumps(
    {
        "cluster": {"worker": [f"localhost:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    }
)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TensorFlow op

import keras  # noqa: E402

with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
data = tf.data.Dataset.from_tensor_slices((np.ones((16, 4)), np.ones((16, 2)))).batch(4)
try:
    model.fit(data, epochs=1, verbose=0)
    print("fit ok")
except Exception as error:
    print(f"{type(error).__name__}: {str(error).splitlines()[0]}")
