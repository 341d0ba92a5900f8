"""Colours and shared drawing helpers of every seglab figure."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np

PALETTE = np.array(
    [
        [0.15, 0.15, 0.15],
        [0.90, 0.30, 0.25],
        [0.30, 0.75, 0.35],
        [0.25, 0.45, 0.95],
        [1.00, 0.85, 0.10],
        [0.70, 0.35, 0.85],
        [0.10, 0.80, 0.80],
        [0.95, 0.55, 0.10],
        [0.60, 0.60, 0.60],
        [0.55, 0.30, 0.15],
    ]
)
IGNORE_COLOUR = np.array([1.0, 1.0, 1.0])
MAX_CURVES = 10  # classes singled out in per-class curves; the rest are grey
MAX_ANNOTATED = 25  # cells written in a matrix figure up to this many classes
MAX_LABELLED = 60  # class names as ticks up to this many classes
MAX_LEGEND = 20  # class swatches under the overlays; past that, the classes shown most


def palette(num_classes: int) -> np.ndarray:
    """``num_classes`` distinct RGB colours, class 0 (usually background) dark."""
    if num_classes <= len(PALETTE):
        return PALETTE[:num_classes]
    extra = plt.get_cmap("tab20")(np.linspace(0, 1, num_classes - len(PALETTE)))[:, :3]
    return np.vstack([PALETTE, extra])


def annotate(
    ax: plt.Axes, values: np.ndarray, fontsize: str, white_text: Callable[[float], bool]
) -> None:
    """Writes each non-NaN cell's value on an ``imshow`` grid; ``white_text(value)`` says
    where the cell is dark enough to need white text."""
    for (row, col), value in np.ndenumerate(values):
        if not np.isnan(value):
            colour = "white" if white_text(value) else "black"
            ax.text(
                col, row, f"{value:.2f}", ha="center", va="center", fontsize=fontsize, color=colour
            )


def colourize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """RGB image of an index mask; labels outside ``[0, num_classes)`` (ignore) are white."""
    colours = np.vstack([palette(num_classes), IGNORE_COLOUR])
    index = np.where((mask >= 0) & (mask < num_classes), mask, num_classes)
    return colours[index]


def displayable(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` images in ``[0, 1]`` for figures: as they are when they already are,
    else each scaled from its own minimum to its maximum (a model's inputs may be 0-255, or
    normalised around 0)."""
    images = np.asarray(images, dtype=np.float32)
    if images.min() >= 0.0 and images.max() <= 1.0:
        return images
    low = images.min(axis=(1, 2, 3), keepdims=True)
    span = images.max(axis=(1, 2, 3), keepdims=True) - low
    return (images - low) / np.where(span > 0, span, 1.0)
