"""seglab: semantic-segmentation experiments that show what the aggregate loss hides.

Importing the package registers the ``${seglab_root:}`` OmegaConf resolver used by ``conf/``.
"""

from seglab.paths import register_resolvers

register_resolvers()

__all__ = ["register_resolvers"]
