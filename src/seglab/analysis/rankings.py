"""Configurations ranked by their loss beside their worst class, and the sentence that says
whether the seeds separate the lowest loss from the best worst class."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from seglab.core.formatting import markdown_text
from seglab.core.statistics import Interval, paired_difference, t_interval


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman rank correlation (Pearson on average ranks), NaN pairs dropped."""
    pairs = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(pairs) < 3:
        return float("nan")
    return float(pairs.x.rank().corr(pairs.y.rank()))


@dataclass(frozen=True)
class Mismatch:
    """The lowest-loss configuration of a group against its best worst-class configuration.

    Attributes:
        group: Which runs were compared (``all configurations``, ``loss=ce``).
        lowest_loss: The configuration with the lowest mean loss.
        best_worst_class: The configuration with the highest mean worst-class IoU.
        worst_class_gain: Interval of ``best_worst_class``'s worst-class IoU minus
            ``lowest_loss``'s, over seeds (paired by seed when both ran the same seeds).
        loss_gain: Interval of the same difference of the loss.
        separated: Both intervals lie above 0: the seeds tell the two apart.
        text: The sentence the report prints.
    """

    group: str
    lowest_loss: str
    best_worst_class: str
    worst_class_gain: Interval
    loss_gain: Interval
    separated: bool
    text: str


@dataclass(frozen=True)
class Rankings:
    """Configurations ranked three ways, and what that says.

    Attributes:
        table: One row per configuration (the runs that differ only in seed): configuration,
            loss, seeds, the mean of the loss, worst-class IoU and mIoU with the half-width of
            their 95 % intervals (``*_ci``, NaN with one seed), the most frequent worst class,
            and ranks by the means (1 = best; by loss within each loss, since losses of
            different functions are not on one scale), sorted by loss function, then loss.
        overall_column: What configurations of different loss functions are compared on: the
            loss itself when they share one loss function, else ``val_ce`` (the unweighted
            cross-entropy every run logs), since losses of different functions are not on one
            scale.
        spearman_loss_vs_min_iou: Rank correlation of the mean ``overall_column`` with the mean
            worst-class IoU across configurations (negative is what a good loss would show).
        spearman_within_loss: The same correlation of the loss itself within each loss
            function, when there are several (NaN below 3 configurations).
        best_by_loss: Configuration with the lowest mean ``overall_column``.
        best_by_min_iou: Configuration with the highest mean worst-class IoU.
        mismatches: Where the lowest-loss configuration is not the best worst-class one: over
            all configurations (by ``val_ce`` when they use different loss functions, whose
            values are not on one scale), then within each loss by its own value.
    """

    table: pd.DataFrame
    overall_column: str
    spearman_loss_vs_min_iou: float
    spearman_within_loss: dict[str, float]
    best_by_loss: str
    best_by_min_iou: str
    mismatches: list[Mismatch]


def rankings(runs_summary: pd.DataFrame, loss_column: str = "val_loss") -> Rankings:
    """Ranks the configurations of the finished runs by mean ``loss_column`` (ascending)
    beside their mean worst-class IoU and mIoU. Without ``configuration`` and ``seed`` columns
    every run is its own configuration."""
    done = runs_summary[runs_summary.status == "FINISHED"].copy()
    if done.empty:
        raise ValueError("no finished runs to rank")
    if "configuration" not in done:
        done["configuration"] = done.run_name
    if "seed" not in done:
        done["seed"] = pd.NA
    rows = []
    for configuration, group in done.groupby("configuration", sort=False):
        row = {"configuration": configuration, "loss": group["loss"].iloc[0], "seeds": len(group)}
        for column in (loss_column, "min_iou", "miou"):
            interval = t_interval(group[column].tolist())
            row[column], row[f"{column}_ci"] = interval.mean, interval.half_width
        row["worst_class"] = group.worst_class.mode().iloc[0]
        rows.append(row)
    table = pd.DataFrame(rows)
    # Losses of different functions are not on one scale: rank by loss within each loss only.
    # Nullable integers: a finished run that never logged a metric has no rank in it.
    ranks = table.groupby("loss")[loss_column].rank(method="min")
    table["rank_by_loss"] = ranks.astype("Int64")
    for column in ("min_iou", "miou"):
        ranks = table[column].rank(ascending=False, method="min")
        table[f"rank_by_{column}"] = ranks.astype("Int64")
    table = table.sort_values(["loss", loss_column], kind="stable").reset_index(drop=True)
    # Across loss functions the losses are not on one scale: compare the unweighted CE every
    # run logs instead, then each loss on its own terms.
    several = done["loss"].nunique() > 1
    overall = "val_ce" if several and "val_ce" in done else loss_column
    groups = [("all configurations", done, overall)]
    if several:
        groups += [
            (f"loss={loss}", g, loss_column)
            for loss, g in done.groupby("loss")
            if g.configuration.nunique() > 1
        ]
    found = [m for label, g, column in groups if (m := mismatch(g, column, label)) is not None]
    means = done.groupby("configuration", sort=False)[[overall, "min_iou"]].mean()
    within = {
        str(loss): spearman(group[loss_column], group.min_iou)
        for loss, group in table.groupby("loss", sort=False)
    }
    return Rankings(
        table=table,
        overall_column=overall,
        spearman_loss_vs_min_iou=spearman(means[overall], means.min_iou),
        spearman_within_loss=within if several else {},
        best_by_loss=str(means[overall].idxmin()),
        best_by_min_iou=str(table.configuration[table.min_iou.argmax()]),
        mismatches=found,
    )


def mismatch(runs: pd.DataFrame, loss_column: str, label: str) -> Mismatch | None:
    """The lowest-loss configuration of ``runs`` against its best worst-class configuration,
    or ``None`` when they are the same (or tie on worst-class IoU).

    The sentence says "lowest loss is not best worst class" only when the seeds separate them:
    the 95 % intervals of both differences (worst-class IoU and loss, paired by seed) lie above
    0. When only the worst-class difference is separated, it says that the loss cannot tell
    the two apart while the worst class can (the loss does not see the failing class).
    Otherwise it says, with the numbers, that the seeds cannot tell them apart.
    """
    means = runs.groupby("configuration", sort=False)[[loss_column, "min_iou"]].mean()
    lowest, best = str(means[loss_column].idxmin()), str(means.min_iou.idxmax())
    if lowest == best or means.min_iou[lowest] == means.min_iou[best]:
        return None
    a = runs[runs.configuration == lowest].set_index("seed")
    b = runs[runs.configuration == best].set_index("seed")
    iou_gain = paired_difference(a.min_iou, b.min_iou)
    loss_gain = paired_difference(a[loss_column], b[loss_column])
    separated = iou_gain.low > 0 and loss_gain.low > 0
    seeds = min(len(a), len(b))
    worst = a.worst_class.mode().iloc[0]
    base = (  # Markdown: the names come from the store, escaped
        f"Among {markdown_text(label)}, the lowest {loss_column} ({markdown_text(lowest)}: "
        f"{t_interval(a[loss_column].tolist()).format(4)}) has worst-class IoU "
        f"{t_interval(a.min_iou.tolist()).format()} ({markdown_text(worst)}), while "
        f"{markdown_text(best)} reaches "
        f"{t_interval(b.min_iou.tolist()).format()} with {loss_column} "
        f"{t_interval(b[loss_column].tolist()).format(4)}"
    )
    gains = (
        f"worst-class IoU {iou_gain.mean:+.3f} (95 % CI [{iou_gain.low:+.3f}, "
        f"{iou_gain.high:+.3f}]), {loss_column} {loss_gain.mean:+.4f} (95 % CI "
        f"[{loss_gain.low:+.4f}, {loss_gain.high:+.4f}])"
    )
    if separated:
        text = (
            f"**Lowest loss is not best worst class.** {base}. Over {seeds} seeds the "
            f"differences are {gains}: the seeds separate them."
        )
    elif seeds >= 2 and iou_gain.low > 0:
        text = (
            f"**The loss cannot tell them apart; the worst class can.** {base}. Over {seeds} "
            f"seeds the differences are {gains}: the {loss_column} interval includes 0, the "
            "worst-class one does not."
        )
    elif seeds < 2:
        text = (
            f"**Not separated: one seed.** {base}; one seed per configuration gives no "
            "interval, so this may be seed noise (sweep trainer.seed=0,1,2 to tell)."
        )
    else:
        text = (
            f"**Not separated.** {base}; {seeds} seeds cannot tell them apart: {gains}, "
            "an interval includes 0."
        )
    return Mismatch(label, lowest, best, iou_gain, loss_gain, separated, text)
