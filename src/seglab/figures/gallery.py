"""A gallery of failures: every epoch, the validation images where a failing class is missed
most, as image | truth | prediction, logged as an MLflow image with the epoch as its step (the
UI's step slider then walks through training).

The candidates are the first ``pool`` validation images, read once; each epoch they are
predicted (one small batch), and for each target class (the classes whose failure the loss
hides, else the worst class) the ``count`` images with the most missed pixels of it are shown.
In the prediction column the missed pixels of the target class are drawn in magenta.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from seglab.figures.style import colourize, displayable

MISSED = np.array([1.0, 0.0, 1.0])  # magenta: true pixels of the target class predicted otherwise
MAX_CLASSES = 3  # target classes per epoch
SEPARATOR = 2  # pixels of white between panels
MIN_ROW = 96  # smaller images are enlarged (nearest neighbour) to about this height


def check_gallery(count: int, pool: int) -> None:
    """Raises naming the options unless ``count >= 0`` and ``pool >= 1``."""
    if count < 0 or pool < 1:
        raise ValueError(
            f"metrics.gallery must be >= 0 and metrics.gallery_pool >= 1, got {count} and {pool}"
        )


class Gallery:
    """Draws the failure galleries of one run.

    Args:
        images: The candidate validation images, ``(N, H, W, 3)`` as the model takes them
            (shown as :func:`~seglab.figures.style.displayable` makes them).
        truths: Their true labels, ``(N, H, W)``.
        num_classes: Number of classes (the palette's size).
        count: Images per gallery (0: no gallery).
    """

    def __init__(
        self, images: np.ndarray, truths: np.ndarray, num_classes: int, count: int = 4
    ) -> None:
        check_gallery(count, max(len(images), 1))
        self.count = count
        self.num_classes = num_classes
        self.images = images
        self.truths = truths

    def draw(
        self, predict: Callable[[np.ndarray], np.ndarray], classes: Sequence[int]
    ) -> dict[int, np.ndarray]:
        """One gallery per target class (at most :data:`MAX_CLASSES`) that some candidate image
        contains: ``uint8 (rows * H, 3 * W, 3)``, the images that miss it most first.

        ``predict`` maps the images to their labels (a
        :class:`~seglab.training.prediction.LabelPredictor`)."""
        if not self.count or not len(self.images):
            return {}
        predictions = np.asarray(predict(self.images))
        galleries = {}
        for target in list(classes)[:MAX_CLASSES]:
            true = self.truths == target
            missed = (true & (predictions != target)).sum(axis=(1, 2))
            present = np.flatnonzero(true.any(axis=(1, 2)))
            if not len(present):
                continue
            chosen = present[np.argsort(-missed[present], kind="stable")][: self.count]
            galleries[target] = self._compose(chosen, predictions, target)
        return galleries

    def _compose(self, chosen: np.ndarray, predictions: np.ndarray, target: int) -> np.ndarray:
        rows = []
        for index in chosen:
            truth, prediction = self.truths[index], predictions[index]
            shown = colourize(prediction, self.num_classes)
            shown[(truth == target) & (prediction != target)] = MISSED
            image = displayable(self.images[index : index + 1])[0]
            panels = [image, colourize(truth, self.num_classes), shown]
            rows.append(join(panels, axis=1))
        picture = join(rows, axis=0)
        scale = max(1, MIN_ROW // self.truths.shape[1])  # small images: enlarge, nearest
        picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
        return (picture * 255).round().astype(np.uint8)


def join(panels: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Panels side by side (``axis=1``) or stacked (``axis=0``), white lines between them."""
    shape = list(panels[0].shape)
    shape[axis] = SEPARATOR
    gap = np.ones(shape)
    parts = [part for panel in panels for part in (panel, gap)][:-1]
    return np.concatenate(parts, axis=axis)
