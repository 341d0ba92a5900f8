"""seglab: semantic-segmentation experiments that show what the aggregate loss hides.

Importing the package registers the ``${seglab_root:}`` OmegaConf resolver used by ``conf/`` and
imports TensorFlow without its start-up notices (``SEGLAB_VERBOSE=1`` shows them; see
:mod:`seglab.quiet`).
"""

import os

from seglab.paths import register_resolvers
from seglab.quiet import import_tensorflow_quietly

# MLflow draws a progress bar for every artifact it downloads: noise in reports and notebooks.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
import_tensorflow_quietly()
register_resolvers()

__all__ = ["register_resolvers"]
