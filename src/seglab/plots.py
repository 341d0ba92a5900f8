"""Matplotlib figures from plain arrays and frames: no MLflow, no TensorFlow."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from seglab.statistics import t_interval

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


def iou_heatmap(matrix: pd.DataFrame) -> Figure:
    """Run x class heatmap of final val IoU (a failing class is a dark column)."""
    width = min(1.2 * matrix.shape[1] + 4, 24.0)
    fig, ax = plt.subplots(figsize=(width, 0.45 * matrix.shape[0] + 1.8))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    if matrix.shape[1] <= MAX_LABELLED:
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize="small")
    if matrix.shape[1] <= MAX_ANNOTATED:
        annotate(ax, matrix.to_numpy(dtype=float), "x-small", white_text=lambda v: v < 0.6)
    fig.colorbar(image, ax=ax, fraction=0.046, label="final val IoU")
    ax.set_title("final validation IoU per run and class")
    fig.tight_layout()
    return fig


def loss_vs_worst_iou(runs: pd.DataFrame) -> Figure:
    """Final val loss against worst-class IoU, one point per run, one panel per loss function
    (values of different losses are not on one scale). Runs with a hidden failure are red
    crosses. With a ``configuration`` column that repeats (several seeds), each configuration
    is labelled once, at its mean, with its 95 % t-intervals as error bars; the label leaves
    out the panel's own ``loss=...``.

    Args:
        runs: One row per run: ``loss``, ``val_loss``, ``min_iou``, ``run_name``,
            ``hidden_classes`` (empty when none) and optionally ``configuration``.
    """
    families = list(dict.fromkeys(runs["loss"]))
    seeded = "configuration" in runs and bool(runs["configuration"].duplicated().any())
    fig, axes = plt.subplots(
        1, len(families), figsize=(5.2 * len(families), 4.5), squeeze=False, sharey=True
    )
    for ax, family in zip(axes.flat, families, strict=True):
        group = runs[runs["loss"] == family]
        hidden = group.hidden_classes.fillna("").astype(str) != ""
        ax.scatter(group.val_loss[~hidden], group.min_iou[~hidden], s=40, label="no hidden failure")
        ax.scatter(
            group.val_loss[hidden],
            group.min_iou[hidden],
            s=60,
            marker="x",
            color="red",
            label="hidden failure",
        )
        by = "configuration" if seeded else "run_name"
        for name, members in group.groupby(by, sort=False):
            x, y = members.val_loss.mean(), members.min_iou.mean()
            if len(members) > 1:
                ax.errorbar(
                    x,
                    y,
                    xerr=t_interval(members.val_loss).half_width,
                    yerr=t_interval(members.min_iou).half_width,
                    fmt="none",
                    ecolor="grey",
                    capsize=3,
                    linewidth=1,
                )
            label = ",".join(p for p in str(name).split(",") if p != f"loss={family}")
            ax.annotate(
                label or str(name),
                (x, y),
                fontsize="x-small",
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set_title(f"loss={family}", fontsize="medium")
        ax.set_xlabel("final val loss (lower looks better)")
        ax.margins(x=0.25)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("final worst-class IoU")
    axes.flat[0].set_ylim(-0.05, 1.05)
    axes.flat[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.suptitle("does a lower loss mean a better worst class?", fontsize="medium")
    fig.tight_layout()
    return fig


def class_iou_curves(history: pd.DataFrame, classes: Sequence[str] = ()) -> Figure:
    """Small multiples: per run, every class's val IoU over epochs, in the palette colour of
    its class index (``classes`` in class order; else the order the history has them), the
    run's worst class thick, one legend for all panels. Past :data:`MAX_CURVES` classes the
    others are grey."""
    ious = history[history.metric == "val/iou"]
    runs = list(dict.fromkeys(ious.run_name))
    found = list(dict.fromkeys(ious["class"]))
    order = [c for c in classes if c in found] + [c for c in found if c not in classes]
    colours = dict(zip(order, palette(len(order)), strict=True))
    cols = min(len(runs), 3) or 1
    rows = -(-len(runs) // cols) if runs else 1
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols + 2, 3 * rows), squeeze=False, sharey=True
    )
    handles: dict[str, Any] = {}
    for ax, run in zip(axes.flat, runs, strict=False):
        mine = ious[ious.run_name == run]
        final = mine.sort_values("epoch").groupby("class").value.last().dropna()
        worst = final.idxmin() if len(final) else None
        singled = set(final.sort_values().index[:MAX_CURVES])
        for cls in order:
            curve = mine[mine["class"] == cls].sort_values("epoch")
            if len(order) > MAX_CURVES and cls not in singled:
                ax.plot(curve.epoch, curve.value, color="0.8", linewidth=0.8)
                continue
            (line,) = ax.plot(
                curve.epoch,
                curve.value,
                marker=".",
                color=colours[cls],
                linewidth=3 if cls == worst else 1.2,
            )
            handles.setdefault(cls, line)
        ax.set_title(f"{run}\nworst: {worst}", fontsize="small")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs) :]:
        ax.set_axis_off()
    names = [c for c in order if c in handles]
    fig.legend(
        handles=[handles[c] for c in names], labels=names, loc="center right", fontsize="x-small"
    )
    fig.supxlabel("epoch")
    fig.supylabel("val IoU")
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return fig
