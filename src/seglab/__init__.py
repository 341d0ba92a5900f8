"""seglab: semantic-segmentation experiments that show what the aggregate loss hides.

Importing the package is light (no TensorFlow, no MLflow): the subpackages that need TensorFlow
import it themselves, without its start-up notices (:mod:`seglab.silence`). The layers, bottom
up: :mod:`seglab.core` (NumPy), :mod:`seglab.losses` and :mod:`seglab.data`,
:mod:`seglab.training`, :mod:`seglab.tracking`, :mod:`seglab.analysis` and
:mod:`seglab.figures`; the commands on top (``seglab train|evaluate|predict|report|stats``).
"""

import os

# MLflow draws a progress bar for every artifact it downloads: noise in reports and notebooks.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from seglab.paths import register_resolvers

register_resolvers()  # ${seglab_root:} in conf/, for every command and test that composes it
