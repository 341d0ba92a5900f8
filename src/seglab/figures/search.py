"""The figures of a search: the Pareto front of two objectives, and one objective's history."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from seglab.figures.sweep import PAIR_COLOURS


def pareto_front(
    done: pd.DataFrame, names: Sequence[str], directions: Sequence[str], by: str | None
) -> Figure:
    """Every complete trial (a row of ``done``, with a boolean column ``front``) at its first
    two objectives; the front of each group (``by``'s values, or all) joined by a line, its
    points labelled with their trial number."""
    x, y = names[0], names[1]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    groups = [("all trials", done)] if by is None else list(done.groupby(by, sort=True))
    for (label, group), colour in zip(
        groups, [*PAIR_COLOURS, *map(plt.get_cmap("tab10"), range(10))], strict=False
    ):
        ax.scatter(group[x], group[y], color=colour, alpha=0.35, label=str(label))
        front = group[group.front].sort_values(x)
        ax.plot(front[x], front[y], "o-", color=colour, drawstyle="steps-post")
        for _, row in front.iterrows():
            ax.annotate(
                f"#{row.trial}",
                (row[x], row[y]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="small",
            )
    ax.set_xlabel(f"{x} ({directions[0]})")
    ax.set_ylabel(f"{y} ({directions[1]})")
    ax.set_title("the search's trials and their Pareto front")
    ax.legend(title=by, fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def objective_history(done: pd.DataFrame, name: str, direction: str) -> Figure:
    """One objective of every complete trial by trial number, and the best so far."""
    ordered = done.sort_values("trial")
    best = ordered[name].cummax() if direction == "maximize" else ordered[name].cummin()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter(ordered.trial, ordered[name], color=PAIR_COLOURS[0], label="trial")
    ax.plot(ordered.trial, best, color=PAIR_COLOURS[1], drawstyle="steps-post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{name} ({direction})")
    ax.set_title(f"{name} by trial")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
