"""The figures of a sweep, from the tidy frames :mod:`seglab.analysis.runs` reads back: the final
IoU heatmap, the loss against the worst class, and every class's IoU curves."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from seglab import schema
from seglab.core.statistics import t_interval
from seglab.figures.style import MAX_ANNOTATED, MAX_CURVES, MAX_LABELLED, annotate, palette

# Two runs side by side: neither is a class, so neither takes a class's palette colour.
PAIR_COLOURS = ("#444444", "#1f77b4", "#ff7f0e", "#9467bd")


def iou_heatmap(matrix: pd.DataFrame) -> Figure:
    """Run x class heatmap of final val IoU (a failing class is a dark column)."""
    width = min(1.2 * matrix.shape[1] + 4, 24.0)
    fig, ax = plt.subplots(figsize=(width, 0.45 * matrix.shape[0] + 1.8))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    if matrix.shape[1] <= MAX_LABELLED:
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize="small")
    if matrix.shape[1] <= MAX_ANNOTATED:
        size = "medium" if matrix.shape[1] <= 10 else "x-small"
        annotate(ax, matrix.to_numpy(dtype=float), size, white_text=lambda v: v < 0.6)
    fig.colorbar(image, ax=ax, fraction=0.046, label="final val IoU")
    ax.set_title("final validation IoU per run and class")
    fig.tight_layout()
    return fig


def loss_vs_worst_iou(runs: pd.DataFrame, classes: Sequence[str] = ()) -> Figure:
    """Final val loss against worst-class IoU, one point per run, one panel per loss function
    (values of different losses are not on one scale). A point's colour is its worst class's
    (the palette colour of its class index, as in every figure); a run with a hidden failure is
    a cross, the others are dots: the verdict is read from the shape, not the colour. With a
    ``configuration`` column that repeats (several seeds), each configuration is labelled once,
    at its mean, with its 95 % t-intervals as error bars; the label leaves out the panel's own
    ``loss=...``.

    Args:
        runs: One row per run: ``loss``, ``val_loss``, ``min_iou``, ``run_name``,
            ``hidden_classes`` (empty when none), optionally ``worst_class`` and
            ``configuration``.
        classes: The class names in class index order (the colours); default: the worst
            classes in order of appearance.
    """
    families = list(dict.fromkeys(runs["loss"]))
    seeded = "configuration" in runs and bool(runs["configuration"].duplicated().any())
    worst = runs["worst_class"].astype(str) if "worst_class" in runs else pd.Series("", runs.index)
    order = [*classes, *(c for c in dict.fromkeys(worst) if c not in classes)]
    colours = dict(zip(order, palette(len(order)), strict=True))
    fig, axes = plt.subplots(
        1, len(families), figsize=(5.2 * len(families), 4.5), squeeze=False, sharey=True
    )
    for ax, family in zip(axes.flat, families, strict=True):
        group = runs[runs["loss"] == family]
        hidden = group.hidden_classes.fillna("").astype(str) != ""
        for marked, marker, size in ((False, "o", 45), (True, "X", 90)):
            members = group[hidden == marked]
            ax.scatter(
                members.val_loss,
                members.min_iou,
                s=size,
                marker=marker,
                c=[colours[c] for c in worst[members.index]],
                edgecolors="0.2",  # a light class colour (yellow) stays visible on white
                linewidths=0.7,
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
    shapes = [
        Line2D([], [], marker="o", linestyle="", color="0.4", label="no hidden failure"),
        Line2D([], [], marker="X", linestyle="", color="0.4", markersize=9, label="hidden failure"),
    ]
    swatches = [
        Line2D([], [], marker="s", linestyle="", color=colours[c], label=f"worst: {c}")
        for c in order
        if c in set(worst)
    ]
    axes.flat[-1].legend(
        handles=shapes + swatches, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small"
    )
    fig.suptitle("does a lower loss mean a better worst class?", fontsize="medium")
    fig.tight_layout()
    return fig


def class_iou_curves(
    history: pd.DataFrame, classes: Sequence[str] = (), runs: Sequence[str] = ()
) -> Figure:
    """Small multiples: per run, every class's val IoU over epochs, in the palette colour of
    its class index (``classes`` in class order; else the order the history has them), the
    run's worst class thick (named in the panel's title), one legend for all panels. Panels in
    the order of ``runs`` (run names, as the report's tables list them; default: the
    history's). Past :data:`MAX_CURVES` classes the others are grey."""
    ious = history[history.metric == schema.VAL_IOU]
    found_runs = list(dict.fromkeys(ious.run_name))
    runs = [r for r in runs if r in found_runs] + [r for r in found_runs if r not in runs]
    found = list(dict.fromkeys(ious["class"]))
    order = [c for c in classes if c in found] + [c for c in found if c not in classes]
    colours = dict(zip(order, palette(len(order)), strict=True))
    cols = min(max(math.ceil(math.sqrt(len(runs))), 1), 4)
    rows = -(-len(runs) // cols) if runs else 1
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols + 2, 3 * rows), squeeze=False, sharey=True
    )
    shown: set[str] = set()
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
            ax.plot(
                curve.epoch,
                curve.value,
                marker=".",
                color=colours[cls],
                linewidth=3 if cls == worst else 1.2,
            )
            shown.add(cls)
        ax.set_title(f"{run}\nworst: {worst}", fontsize="small")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs) :]:
        ax.set_axis_off()
    names = [c for c in order if c in shown]
    handles = [Line2D([], [], color=colours[c], marker=".", linewidth=1.5) for c in names]
    fig.legend(
        handles=handles,
        labels=names,
        loc="center right",
        fontsize="x-small",
        title="thick: the run's\nworst class",
        title_fontsize="x-small",
    )
    fig.supxlabel("epoch")
    fig.supylabel("val IoU")
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return fig


def loss_beside_class(history: pd.DataFrame, runs: Sequence[str], cls: str, title: str) -> Figure:
    """Two panels over the epochs for ``runs`` (run names): ``val/loss`` on the left,
    ``val/iou/<cls>`` on the right, each run one colour and one marker in both: whether a loss
    that falls alike leaves the class behind in one run."""
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    whole = history[(history["class"] == "") & (history.metric == schema.VAL_LOSS)]
    ious = history[(history["class"] == cls) & (history.metric == schema.VAL_IOU)]
    for i, (run, marker) in enumerate(zip(runs, "os^D", strict=False)):
        for ax, frame in ((ax_loss, whole), (ax_iou, ious)):
            curve = frame[frame.run_name == run].sort_values("epoch")
            ax.plot(curve.epoch, curve.value, marker=marker, color=PAIR_COLOURS[i], label=run)
    ax_loss.set_title(schema.VAL_LOSS, fontsize="medium")
    ax_iou.set_title(f"{schema.VAL_IOU}/{cls}", fontsize="medium")
    ax_iou.set_ylim(-0.02, 1.02)
    for ax in (ax_loss, ax_iou):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_iou.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig
