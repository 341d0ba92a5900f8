"""Data as ``tf.data`` streams: decoding files, the datasets, counting classes, the training
pipeline and augmentation.

- :mod:`seglab.data.dataset`: :class:`~seglab.data.dataset.SegmentationData`, what every
  dataset returns;
- :mod:`seglab.data.decode`: image and mask files to arrays (Pillow), headers first;
- :mod:`seglab.data.colors`: colour tables and the colours a set of masks holds;
- :mod:`seglab.data.errors`: the one-sentence error of a data file;
- :mod:`seglab.data.datasets`: the datasets of the ``data`` config group;
- :mod:`seglab.data.counting`: the class-count pass that validates every split's labels;
- :mod:`seglab.data.pipeline`: shuffle, image boost, augmentation, pixel weights, batching;
- :mod:`seglab.data.augment`: the augmentation-strength knob.
"""

from seglab.silence import import_tensorflow_quietly

import_tensorflow_quietly()
