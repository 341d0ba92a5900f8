"""The figures of a sweep, from the tidy frames :mod:`seglab.analysis.runs` reads back: the final
IoU heatmap, the loss against the worst class, and every class's IoU curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from seglab import schema
from seglab.core.statistics import t_interval
from seglab.figures.style import MAX_ANNOTATED, MAX_CURVES, MAX_LABELLED, annotate, palette


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
    ious = history[history.metric == schema.VAL_IOU]
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
