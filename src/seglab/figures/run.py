"""The figures of one run, from plain arrays: the loss beside every class's IoU, the confusion
matrix, validation overlays and the augmentation preview. No MLflow, no TensorFlow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from seglab.figures.style import (
    IGNORE_COLOUR,
    MAX_ANNOTATED,
    MAX_CURVES,
    MAX_LABELLED,
    MAX_LEGEND,
    annotate,
    colourize,
    palette,
)


def loss_and_class_iou(
    epochs: Sequence[int],
    losses: Mapping[str, Sequence[float]],
    class_iou: Mapping[str, Sequence[float]],
    title: str = "",
    hidden: Sequence[str] = (),
) -> Figure:
    """Loss curves above every class's IoU curve, on one shared epoch axis.

    The point of the figure: the loss falls while a class's IoU stays flat near 0. Classes keep
    their palette colour by class index (``class_iou`` in class order); the worst class is drawn
    thick and the hidden failures dashed and named in the legend. Past
    :data:`MAX_CURVES` classes only the worst of them, and the hidden ones, get a colour and a
    legend entry; the others are thin grey lines. The last loss values are written at the end
    of their curves, so they can be read off a log axis.
    """
    fig, (ax_loss, ax_iou) = plt.subplots(2, 1, figsize=(8.5, 6.5), sharex=True)
    for name, values in losses.items():
        (line,) = ax_loss.plot(epochs, values, marker="o", label=name)
        ax_loss.annotate(
            f"{values[-1]:.4g}",
            (epochs[-1], values[-1]),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
            color=line.get_color(),
        )
    ax_loss.set_ylabel("loss")
    if all(np.min(values) > 0 for values in losses.values()):
        ax_loss.set_yscale("log")  # a loss that can go negative (bce_minus_dice) stays linear
        ax_loss.yaxis.set_minor_formatter(plt.FormatStrFormatter("%.3g"))
        ax_loss.tick_params(axis="y", which="minor", labelsize="x-small")
    ax_loss.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax_loss.grid(alpha=0.3, which="both")
    colours = palette(len(class_iou))
    final = {name: values[-1] for name, values in class_iou.items()}
    defined = {name: value for name, value in final.items() if not np.isnan(value)}
    worst = min(defined, key=lambda name: defined[name]) if defined else None
    singled = set(sorted(defined, key=lambda name: defined[name])[:MAX_CURVES]) | set(hidden)
    if len(class_iou) > MAX_CURVES:
        singled = singled & set(class_iou)
        # The others as one grey collection: one artist, not one per class (150 classes).
        grey = [np.column_stack([epochs, v]) for n, v in class_iou.items() if n not in singled]
        ax_iou.add_collection(LineCollection(grey, colors="0.8", linewidths=0.8))
    for colour, (name, values) in zip(colours, class_iou.items(), strict=True):
        if len(class_iou) > MAX_CURVES and name not in singled:
            continue
        marks = [m for m, on in (("worst", name == worst), ("hidden", name in hidden)) if on]
        ax_iou.plot(
            epochs,
            values,
            marker="o",
            color=colour,
            linewidth=3 if name == worst else 1.5,
            linestyle="--" if name in hidden else "-",
            label=f"{name} ({', '.join(marks)})" if marks else name,
        )
    ax_iou.set_ylim(-0.02, 1.02)
    ax_iou.set_ylabel("val IoU")
    ax_iou.set_xlabel("epoch")
    ax_iou.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax_iou.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix (each row: where that true class's pixels went)."""
    cm = np.asarray(cm, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = cm / cm.sum(axis=1, keepdims=True)
    classes = len(class_names)
    # Names as ticks need room; past MAX_LABELLED a smaller figure (faster to encode) shows the
    # same pattern of cells.
    size = min(max(4.0, 0.7 * classes + 2), 14.0 if classes <= MAX_LABELLED else 10.0)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    # Cells as sharp squares: no resampling of the matrix to the figure's pixels.
    image = ax.imshow(
        np.nan_to_num(normalised), vmin=0, vmax=1, cmap="Blues", interpolation="nearest"
    )
    if classes <= MAX_LABELLED:
        ax.set_xticks(range(classes), class_names, rotation=45, ha="right")
        ax.set_yticks(range(classes), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if classes <= MAX_ANNOTATED:  # past that, cells are too small to read: the CSV has them
        annotate(ax, normalised, "small", white_text=lambda v: v > 0.5)  # Blues: dark when high
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("validation confusion matrix (row-normalised)")
    fig.tight_layout()
    return fig


def overlays(
    images: np.ndarray, truths: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]
) -> Figure:
    """One row per sample: image, true mask, predicted mask."""
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
    num_classes = len(class_names)
    for row, (image, truth, pred) in enumerate(zip(images, truths, predictions, strict=True)):
        for ax, panel, title in zip(
            axes[row],
            (image, colourize(truth, num_classes), colourize(pred, num_classes)),
            ("image", "truth", "prediction"),
            strict=True,
        ):
            ax.imshow(np.clip(panel, 0, 1), interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    listed = legend_classes(truths, predictions, num_classes)
    colours = palette(num_classes)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in listed]
    legend_title = None
    if len(listed) < num_classes:
        legend_title = f"the {len(listed)} classes with most pixels shown, of {num_classes}"
    columns = min(len(listed), 5)
    legend_rows = -(-len(listed) // columns) + (legend_title is not None)
    fig.legend(
        handles,
        [class_names[c] for c in listed],
        loc="lower center",
        ncol=columns,
        fontsize="small",
        title=legend_title,
        title_fontsize="small",
    )
    # Room for the legend under the panels: about 0.2 inch per legend row.
    fig.tight_layout(rect=(0, min(0.5, 0.2 * (legend_rows + 0.5) / (2 * rows)), 1, 1))
    return fig


def legend_classes(truths: np.ndarray, predictions: np.ndarray, num_classes: int) -> list[int]:
    """The classes the overlays' legend lists, in class order: every class up to
    :data:`MAX_LEGEND` classes; past that, the :data:`MAX_LEGEND` classes with the most pixels
    in the shown truths and predictions."""
    if num_classes <= MAX_LEGEND:
        return list(range(num_classes))
    labels = np.concatenate([np.ravel(truths), np.ravel(predictions)])
    labels = labels[(labels >= 0) & (labels < num_classes)]
    pixels = np.bincount(labels, minlength=num_classes)
    shown = np.flatnonzero(pixels)
    most = shown[np.argsort(-pixels[shown], kind="stable")[:MAX_LEGEND]]
    return sorted(int(c) for c in most)


def augmentation_grid(
    images: Sequence[Sequence[np.ndarray]],
    masks: Sequence[Sequence[np.ndarray]],
    class_names: Sequence[str],
    title: str = "",
) -> Figure:
    """Rows of samples, columns of draws: each image with its (moved) mask blended on top.

    Ignored pixels (filled in from outside the image) show white.
    """
    rows, cols = len(images), len(images[0])
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)
    for row in range(rows):
        for col in range(cols):
            mask = masks[row][col]
            blend = 0.55 * np.clip(images[row][col], 0, 1) + 0.45 * colourize(
                mask, len(class_names)
            )
            blend[mask >= len(class_names)] = IGNORE_COLOUR
            axes[row][col].imshow(blend, interpolation="nearest")
            axes[row][col].set_axis_off()
            if row == 0:
                axes[row][col].set_title("original" if col == 0 else f"epoch {col}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
