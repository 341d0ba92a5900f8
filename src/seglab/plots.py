"""Matplotlib figures from plain arrays and frames: no MLflow, no TensorFlow."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

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


def loss_and_class_iou(
    epochs: Sequence[int],
    losses: Mapping[str, Sequence[float]],
    class_iou: Mapping[str, Sequence[float]],
    title: str = "",
) -> Figure:
    """Loss curves above every class's IoU curve, on one shared epoch axis.

    The point of the figure: the loss falls while one class's IoU stays flat near 0.
    """
    fig, (ax_loss, ax_iou) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for name, values in losses.items():
        ax_loss.plot(epochs, values, marker="o", label=name)
    ax_loss.set_ylabel("loss")
    if all(np.min(values) > 0 for values in losses.values()):
        ax_loss.set_yscale("log")  # a loss that can go negative (bce_minus_dice) stays linear
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    colours = palette(len(class_iou))
    final = {name: values[-1] for name, values in class_iou.items()}
    defined = {name: value for name, value in final.items() if not np.isnan(value)}
    worst = min(defined, key=defined.get) if defined else None
    for colour, (name, values) in zip(colours, class_iou.items(), strict=True):
        ax_iou.plot(
            epochs,
            values,
            marker="o",
            color=colour,
            linewidth=3 if name == worst else 1.5,
            label=f"{name} (worst)" if name == worst else name,
        )
    ax_iou.set_ylim(-0.02, 1.02)
    ax_iou.set_ylabel("val IoU")
    ax_iou.set_xlabel("epoch")
    ax_iou.legend(loc="lower right", fontsize="small")
    ax_iou.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix (each row: where that true class's pixels went)."""
    cm = np.asarray(cm, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = cm / cm.sum(axis=1, keepdims=True)
    size = max(4.0, 0.7 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(np.nan_to_num(normalised), vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
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
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for colour in palette(num_classes)]
    fig.legend(handles, class_names, loc="lower center", ncol=min(num_classes, 5), fontsize="small")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


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


def iou_heatmap(matrix: pd.DataFrame) -> Figure:
    """Run x class heatmap of final val IoU (a failing class is a dark column)."""
    fig, ax = plt.subplots(figsize=(1.2 * matrix.shape[1] + 4, 0.45 * matrix.shape[0] + 1.8))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize="small")
    annotate(ax, matrix.to_numpy(dtype=float), "x-small", white_text=lambda v: v < 0.6)
    fig.colorbar(image, ax=ax, fraction=0.046, label="final val IoU")
    ax.set_title("final validation IoU per run and class")
    fig.tight_layout()
    return fig


def loss_vs_worst_iou(
    val_loss: Sequence[float], min_iou: Sequence[float], names: Sequence[str]
) -> Figure:
    """Final val loss against worst-class IoU, one point per run."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(val_loss, min_iou, s=40)
    for x, y, name in zip(val_loss, min_iou, names, strict=True):
        ax.annotate(name, (x, y), fontsize="x-small", xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("final val loss (lower looks better)")
    ax.set_ylabel("final worst-class IoU")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("does a lower loss mean a better worst class?")
    fig.tight_layout()
    return fig


def class_iou_curves(history: pd.DataFrame) -> Figure:
    """Small multiples: per run, every class's val IoU over epochs."""
    ious = history[history.metric == "val/iou"]
    runs = list(dict.fromkeys(ious.run_name))
    classes = list(dict.fromkeys(ious["class"]))
    cols = min(len(runs), 3)
    rows = -(-len(runs) // cols) if runs else 1
    fig, axes = plt.subplots(
        rows, max(cols, 1), figsize=(4 * max(cols, 1), 3 * rows), squeeze=False, sharey=True
    )
    colours = palette(len(classes))
    for ax, run in zip(axes.flat, runs, strict=False):
        for colour, cls in zip(colours, classes, strict=True):
            curve = ious[(ious.run_name == run) & (ious["class"] == cls)].sort_values("epoch")
            ax.plot(curve.epoch, curve.value, marker=".", color=colour, label=cls)
        ax.set_title(run, fontsize="small")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs) :]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize="x-small")
    fig.supxlabel("epoch")
    fig.supylabel("val IoU")
    fig.tight_layout()
    return fig
