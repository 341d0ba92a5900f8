"""seglab for anyone's Keras model: :class:`SeglabCallback` logs the per-class diagnosis of a
plain ``model.fit`` as a seglab run."""

from seglab.keras.callback import SeglabCallback

__all__ = ["SeglabCallback"]
