"""The verdict of a set of runs in a few Markdown lines, for where a user looks first: the top of
the report, the sweep parent's description in the MLflow UI, the end of a sweep and ``make ui``.

For each loss function (losses are compared only within one): does its lowest val loss hide a
failing class, how far does its best worst-class run get on that class, and a link that charts
``val/loss`` beside ``val/iou/<class>`` of both runs against the epoch in the MLflow UI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pandas as pd
from mlflow.entities import Run

from seglab import schema
from seglab.analysis.links import UiLinks
from seglab.analysis.runs import LossStory, final_iou_matrix, hidden_list, loss_stories
from seglab.core.formatting import markdown_text, plain_text

LINK = re.compile(r"(?<!\\)\[([^\]\\]+)\]\(([^)\s]+)\)")  # [text](url), not an escaped \[


def chart_link(story: LossStory, links: UiLinks | None, experiments: Mapping[str, str]) -> str:
    """`` [Chart val/loss beside val/iou/<class>](<url>)``: the story's two runs (one when the
    lowest loss is also the best worst class) on the MLflow UI's metric page, against the
    epoch; blank without ``links``."""
    if links is None:
        return ""
    runs = list(dict.fromkeys([story.lowest.run_id, story.best.run_id]))
    iou = schema.per_class(schema.VAL, schema.IOU, story.failing_class)
    url = links.metrics([experiments[r] for r in runs], runs, [schema.VAL_LOSS, iou])
    return f" [Chart {schema.VAL_LOSS} beside {markdown_text(iou)}]({url})"


def label(story: LossStory) -> str:
    """``loss=ce``, and the group of comparable runs when runs are pooled
    (``loss=ce, data.root=/a``), as Markdown."""
    group = f", {markdown_text(story.group)}" if story.group else ""
    return f"loss={markdown_text(story.loss)}{group}"


def story_line(
    story: LossStory,
    ious: pd.DataFrame,
    links: UiLinks | None = None,
    experiments: Mapping[str, str] | None = None,
) -> str:
    """One loss function's sentence. ``ious``: the final val IoU, run id x class."""
    name = story.failing_class
    low, best = story.lowest, story.best
    lowest_iou, best_iou = (
        float(ious.loc[run, name]) if run in ious.index and name in ious else float("nan")
        for run in (low.run_id, best.run_id)
    )
    link = chart_link(story, links, experiments or {})
    loss, val_loss = label(story), schema.VAL_LOSS
    if story.hides:
        return (
            f"**{loss}: the lowest val loss hides {markdown_text(name)}.** "
            f"{markdown_text(low.run_name)} has the lowest {val_loss} ({low.val_loss:.4f}) and "
            f"{markdown_text(name)} IoU {lowest_iou:.3f}; {markdown_text(best.run_name)} "
            f"reaches {best_iou:.3f} at {val_loss} {best.val_loss:.4f}.{link}"
        )
    if hidden_list(low.hidden_classes):
        return (
            f"**{loss}: the lowest val loss hides {markdown_text(name)}**, and no run of this "
            f"loss function does better on its worst class: {markdown_text(low.run_name)} "
            f"({val_loss} {low.val_loss:.4f}, {markdown_text(name)} IoU {lowest_iou:.3f}).{link}"
        )
    return (
        f"{loss}: the lowest val loss hides no class: {markdown_text(low.run_name)} "
        f"({val_loss} {low.val_loss:.4f}), whose worst class is {markdown_text(name)} at IoU "
        f"{lowest_iou:.3f}.{link}"
    )


def verdict(
    finished: pd.DataFrame,
    ious: pd.DataFrame,
    links: UiLinks | None = None,
    experiments: Mapping[str, str] | None = None,
) -> list[str]:
    """The verdict paragraphs of the ``finished`` runs' summary: one opening sentence, then
    :func:`story_line` per loss function. ``ious``: the final val IoU, run id x class;
    ``experiments``: run id -> experiment id (for the links)."""
    stories = loss_stories(finished)
    if not stories:
        return []
    hiding = [label(story).removeprefix("loss=") for story in stories if story.hides]
    several = len(stories) > 1
    where = f" in {len(hiding)} of {len(stories)} loss functions" if several else ""
    if hiding:
        names = f" ({'; '.join(hiding)})" if several else ""
        opening = (
            f"**The lowest val loss hides a failing class{where}**{names}: a lower loss did not "
            "mean a better worst class."
        )
    else:
        opening = "The lowest val loss hides no failing class" + (
            f" in any of the {len(stories)} loss functions." if several else "."
        )
    return [opening, *(story_line(s, ious, links, experiments) for s in stories)]


def runs_verdict(
    history: pd.DataFrame,
    finished: pd.DataFrame,
    runs: Sequence[Run],
    links: UiLinks | None = None,
) -> list[str]:
    """:func:`verdict` of MLflow ``runs`` read back: ``finished`` the finished rows of their
    (grouped) summary, the final IoU from their ``history``, the links to their experiments."""
    ious = final_iou_matrix(history, runs, index="run_id")
    return verdict(finished, ious, links, run_experiments(runs))


def terminal_text(markdown: str) -> str:
    """A verdict paragraph for a terminal: bold dropped, each link as ``text: url``."""
    return plain_text(LINK.sub(r"\1: \2", markdown).replace("**", ""))


def run_experiments(runs: Sequence[Run]) -> dict[str, str]:
    """Run id -> experiment id of MLflow ``runs``."""
    return {run.info.run_id: run.info.experiment_id for run in runs}


def comparison_verdict(table: pd.DataFrame) -> str:
    """The verdict of :func:`seglab.analysis.runs.compare_runs`'s table: the classes on which
    each run is better, where the 95 % interval of the difference (b - a) excludes 0."""

    def named(rows: pd.DataFrame) -> str:
        return ", ".join(
            f"{row['class']} ({row.difference:+.3f}, {row.ci_low:+.3f} to {row.ci_high:+.3f})"
            for _, row in rows.iterrows()
        )

    better_b = table[table.ci_low > 0]
    better_a = table[table.ci_high < 0]
    tied = table[(table.ci_low <= 0) & (table.ci_high >= 0)]
    parts = [
        f"b is better on {named(better_b)}" if len(better_b) else "b is better on no class",
        f"a is better on {named(better_a)}" if len(better_a) else "a is better on no class",
    ]
    if len(tied):
        parts.append(f"not separated on {', '.join(map(str, tied['class']))}")
    if table.ci_low.isna().any():
        absent = table[table.ci_low.isna()]
        parts.append(f"no interval on {', '.join(map(str, absent['class']))} (in no image)")
    return (
        "Verdict: " + "; ".join(parts) + ". The intervals say whether a difference holds across "
        "these images for these two trained models, not across seeds."
    )
