"""TensorFlow's start-up lines, kept out of seglab's output unless ``SEGLAB_VERBOSE=1``.

Importing TensorFlow prints oneDNN and CUDA notices from C++ (``oneDNN custom operations are
on``, ``Could not find cuda drivers``, ``failed call to cuInit``) before its logging can be
configured, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them. The import and the first device query
run with the process's stderr (file descriptor 2) pointed at ``/dev/null``; Python errors are
still raised as usual, after stderr is restored.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and enumerates its devices without their start-up lines; does
    nothing when it is already imported or ``SEGLAB_VERBOSE`` is set."""
    if "tensorflow" in sys.modules or os.environ.get("SEGLAB_VERBOSE"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe (cuInit) prints here
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
