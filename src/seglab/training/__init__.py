"""Training with Keras: the U-Net, the shared trainer and its callbacks, seglab's Keras metrics,
checkpoints, prediction passes and where a run computes (seeds, precision, devices).

- :mod:`seglab.training.model`: the U-Net;
- :mod:`seglab.training.normalization`: its batch normalization on TensorFlow's fused kernel;
- :mod:`seglab.training.trainer`: compile, fit, one record per epoch;
- :mod:`seglab.training.keras_metrics`: the streamed confusion matrix and loss shares;
- :mod:`seglab.training.callbacks`: the record of each epoch, stops on NaN or a signal;
- :mod:`seglab.training.checkpoints`: the last and the best checkpoint;
- :mod:`seglab.training.prediction`: labels of a model, per-image counts of a split;
- :mod:`seglab.training.runtime`: seeds, precision, the ``tf.distribute`` strategy.
"""

from seglab.silence import import_tensorflow_quietly

import_tensorflow_quietly()
