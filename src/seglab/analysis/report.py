"""The sweep report as a document: every run, the configurations over their seeds, the rankings,
the evidence for the "lowest loss is not best worst class" sentence and the figures, rendered as
markdown, as aligned terminal text and as one self-contained HTML page (its template,
``report_page.html``, ships with the package)."""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.analysis import runs as stored
from seglab.analysis import story
from seglab.analysis.links import UiLinks
from seglab.analysis.rankings import Mismatch, Rankings, rankings
from seglab.core.formatting import column_decimals, markdown_text, plain_text
from seglab.core.statistics import Interval
from seglab.figures import sweep as sweep_figures

DECIMALS = re.compile(r"\.(\d+)f")  # the decimals of a table's float format, "{:.4f}"
RANKED_DIGITS = {"val_loss": 4, "min_iou": 3, "miou": 3}  # losses can be small: one digit more


@dataclass(frozen=True)
class Table:
    """A table block of a report, and how its floats are shown."""

    frame: pd.DataFrame
    floats: str = "{:.4f}"

    def shown(self) -> pd.DataFrame:
        """The frame with floats formatted and NaN blank, every cell a string."""
        shown = self.frame.copy()
        base = int(DECIMALS.search(self.floats).group(1))  # type: ignore[union-attr]
        for column in shown.columns:
            if pd.api.types.is_float_dtype(shown[column]):
                digits = column_decimals(shown[column], base)
                shown[column] = [("" if pd.isna(v) else f"{v:.{digits}f}") for v in shown[column]]
        return shown.astype(object).where(shown.notna(), "").astype(str)  # <NA> blank too


@dataclass(frozen=True)
class Picture:
    """A figure's place in a report: the figure :attr:`Report.figures` holds under ``name``, and
    its caption, which says what to see."""

    name: str
    caption: str


# A paragraph (a heading when it starts with "# " or "## "), a table or a figure.
Block = str | Table | Picture


@dataclass
class Report:
    """Everything a sweep report holds, and its three renderings: markdown (``report.md``,
    :attr:`text`), aligned terminal text (:meth:`terminal`) and one self-contained HTML page
    (:meth:`html`: tables sortable by their headers, the figures embedded)."""

    history: pd.DataFrame
    summary: pd.DataFrame
    rankings: Rankings | None
    figures: dict[str, Figure]
    blocks: list[Block]
    verdict: list[str] = field(default_factory=list)  # the opening paragraphs, among blocks
    run_pages: dict[str, str] = field(default_factory=dict)  # run name -> its MLflow page

    @property
    def text(self) -> str:
        """The report as GitHub markdown, beside its figures' PNG files (``report.md``)."""
        return self.markdown(pictures=True)

    @property
    def description(self) -> str:
        """The markdown without its title and figures, as a sweep parent's MLflow description:
        the UI shows a description's first lines, which are then the verdict (the figures are
        the parent's artifacts, under ``figures/``)."""
        return self.markdown(pictures=False).split("\n\n", 1)[1]

    def markdown(self, pictures: bool, folder: str = "") -> str:
        """The report as GitHub markdown, the figures as images (``<folder><name>.png``) with
        their captions, or without them."""
        parts = []
        for block, after in zip(self.blocks, [*self.blocks[1:], ""], strict=True):
            if isinstance(block, Table):
                parts.append(markdown_table(block))
            elif isinstance(block, Picture):
                if pictures:
                    image = f"![{block.name}]({folder}{block.name}.png)"
                    parts.append(f"{image}\n\n*{block.caption}*")
            elif pictures or not (isinstance(after, Picture) and block.startswith("## ")):
                parts.append(block)  # (not the heading of figures left out)
        return "\n\n".join(parts) + "\n"

    def terminal(self) -> str:
        """The report for a terminal: headings underlined, tables in aligned columns, each
        figure named by its file."""
        parts = []
        for block in self.blocks:
            if isinstance(block, Table):
                parts.append(block.shown().to_string(index=False))
            elif isinstance(block, Picture):
                parts.append(f"[figure {block.name}.png] {block.caption}")
            elif block.startswith("#"):
                title = block.lstrip("# ")
                parts.append(f"{title}\n{('=' if block.startswith('# ') else '-') * len(title)}")
            else:
                parts.append(story.terminal_text(block))
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        """One self-contained page: the tables sortable by a click on their headers, run names
        linking to their MLflow pages, the figures embedded as PNG with their captions."""
        body = []
        for block in self.blocks:
            if isinstance(block, Table):
                body.append(html_table(block, self.run_pages))
            elif isinstance(block, Picture):
                buffer = io.BytesIO()
                self.figures[block.name].savefig(buffer, format="png", dpi=100, bbox_inches="tight")
                data = base64.b64encode(buffer.getvalue()).decode()
                body.append(
                    f'<figure><img alt="{escape(block.name)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html_paragraph(block.caption)}</figcaption></figure>"
                )
            elif block.startswith("## "):
                body.append(f"<h2>{escape(block[3:])}</h2>")
            elif block.startswith("# "):
                body.append(f"<h1>{escape(block[2:])}</h1>")
            else:
                body.append(f"<p>{html_paragraph(block)}</p>")
        return html_page().replace("{body}", "\n".join(body))

    def write(self, folder: str | Path) -> None:
        """Writes report.md, report.html, history.csv/.parquet, summary.csv and the figures."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.text)
        (folder / schema.SWEEP_REPORT_HTML).write_text(self.html())
        self.history.to_csv(folder / "history.csv", index=False)
        self.history.to_parquet(folder / "history.parquet", index=False)
        self.summary.to_csv(folder / "summary.csv", index=False)
        for name, figure in self.figures.items():
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")


def markdown(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    """A small frame as a GitHub markdown table (no extra dependency)."""
    return markdown_table(Table(frame, floats))


def markdown_table(table: Table) -> str:
    """A table block as GitHub markdown, every cell literal (:func:`markdown_text`)."""
    shown = table.shown()
    header = "| " + " | ".join(markdown_text(c) for c in shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = [
        "| " + " | ".join(markdown_text(cell) for cell in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def html_table(table: Table, run_pages: Mapping[str, str] | None = None) -> str:
    """A table block as an HTML table its page can sort (wrapped so a wide one scrolls); the
    cells of a ``run_name`` column link to the runs' pages in ``run_pages``."""
    shown = table.shown()
    pages = run_pages or {}

    def cell(column: str, value: str) -> str:
        page = pages.get(value) if column == "run_name" else None
        text = escape(value)
        return f'<td><a href="{escape(page)}">{text}</a></td>' if page else f"<td>{text}</td>"

    head = "".join(f"<th>{escape(str(c))}</th>" for c in shown.columns)
    rows = "".join(
        "<tr>" + "".join(cell(c, v) for c, v in zip(shown.columns, row, strict=True)) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    return (
        f'<div class="table"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


BOLD = re.compile(r"\*\*(.+?)\*\*")


def html_text(markdown: str) -> str:
    """Markdown text without bold as HTML: its links links, everything else text."""
    parts = story.LINK.split(markdown)  # text, then link text and url, ...
    html = []
    for i in range(0, len(parts), 3):
        html.append(escape(plain_text(parts[i])))
        if i + 2 < len(parts):
            html.append(f'<a href="{escape(parts[i + 2])}">{escape(plain_text(parts[i + 1]))}</a>')
    return "".join(html)


def html_paragraph(block: str) -> str:
    """A Markdown paragraph of the report as HTML: its bold spans bold, its links links,
    everything else text."""
    parts = [html_text(part) for part in BOLD.split(block)]  # odd parts: the bold
    return "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))


def html_page() -> str:
    """The report page's HTML around ``{body}``: style and the script that sorts tables."""
    return resources.files("seglab.analysis").joinpath("report_page.html").read_text()


def interval_cell(interval: Interval, digits: int = 3) -> str:
    """A table cell: ``mean ± half-width``, blank when there is no mean (never logged), as
    :meth:`Table.shown` blanks a missing float."""
    return "" if math.isnan(interval.mean) else interval.format(digits)


def with_intervals(table: pd.DataFrame, columns: Mapping[str, int]) -> pd.DataFrame:
    """Each of ``columns`` (name -> digits) shown as ``mean ± half-width`` from its
    ``<column>_ci`` partner."""
    shown = table.copy()
    for column, digits in columns.items():
        half = shown.pop(f"{column}_ci")
        shown[column] = [
            interval_cell(Interval(0, m, 0.0, m - h, m + h), digits)
            for m, h in zip(shown[column], half, strict=True)
        ]
    return shown


def seed_tables(
    configurations: pd.DataFrame, classes: Sequence[str] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From :func:`seglab.analysis.runs.configuration_summary`: the whole-split metrics and the
    per-class IoU as ``mean ± half-width`` tables, one row per configuration, the classes in
    ``classes``' order (class index order) when given."""
    cell = configurations.assign(
        shown=[
            interval_cell(Interval(n, m, 0.0, lo, hi))
            for n, m, lo, hi in configurations[["n", "mean", "ci_low", "ci_high"]].itertuples(
                index=False
            )
        ]
    )
    wide = cell.pivot(index="configuration", columns="metric", values="shown")
    order = list(dict.fromkeys(configurations.configuration))
    seeds = configurations.groupby("configuration").n.max()
    rank = {name: i for i, name in enumerate(classes)}
    found = [c for c in wide.columns if "/iou/" in c]
    per_class = sorted(found, key=lambda c: rank.get(c.rsplit("/", 1)[-1], len(rank)))
    whole = [c for c in dict.fromkeys(configurations.metric) if c not in per_class]
    scalar = wide.loc[order, whole].assign(seeds=seeds.loc[order]).reset_index()
    by_class = wide.loc[order, per_class].rename(columns=lambda c: c.rsplit("/", 1)[-1])
    return scalar[["configuration", "seeds", *whole]], by_class.reset_index()


def spearman_sentence(ranked: Rankings) -> str:
    """The rank correlation of the loss with the worst class: across configurations of one loss
    function on the loss; of several, on val CE across all and on each loss within its own."""

    def shown(rho: float) -> str:
        return "n/a (needs 3 and some spread in both)" if rho != rho else f"{rho:+.2f}"

    if ranked.overall_column == "val_ce":
        within = "; ".join(
            f"loss={markdown_text(loss)} {shown(rho)}"
            for loss, rho in ranked.spearman_within_loss.items()
        )
        return (
            "Spearman correlation of val CE with worst-class IoU across configurations (the "
            "losses are of different functions, whose values are not on one scale): "
            f"{shown(ranked.spearman_loss_vs_min_iou)}; of each val loss within its own loss "
            f"function: {within} (a loss that tracked the failing class would be near -1)."
        )
    return (
        "Spearman correlation of val loss with worst-class IoU across configurations: "
        f"{shown(ranked.spearman_loss_vs_min_iou)} (a loss that tracked the failing class "
        "would be near -1)."
    )


def image_evidence(client: MlflowClient, summary: pd.DataFrame, found: Mismatch) -> list[Block]:
    """The paired bootstrap over validation images between one run of each configuration a
    mismatch names (the lowest seed both ran); nothing without per-image counts."""
    done = summary[summary.status == "FINISHED"]
    a = done[done.configuration == found.lowest_loss]
    b = done[done.configuration == found.best_worst_class]
    shared = sorted(set(a.seed.dropna()) & set(b.seed.dropna()))
    seed = shared[0] if shared else None
    run_a = (a[a.seed == seed] if seed is not None else a).iloc[0]
    run_b = (b[b.seed == seed] if seed is not None else b).iloc[0]
    try:
        compared = stored.compare_runs(client, run_a.run_id, run_b.run_id)
    except ValueError:
        return []
    return [
        f"Paired bootstrap over the validation images (2000 resamples): iou_a is "
        f"{markdown_text(run_a.run_name)}, iou_b is {markdown_text(run_b.run_name)}, "
        "difference is iou_b - iou_a with its "
        "95 % interval. The interval says whether the difference holds across these images for "
        "these two trained models, not across seeds.",
        Table(compared, "{:.3f}"),
    ]


RUN_COLUMNS = [
    "run_name",
    "status",
    "seed",
    "epochs",
    "val_loss",
    "best_val_loss",
    "val_ce",
    "miou",
    "min_iou",
    "class_acc",
    "worst_class",
    "hidden_classes",
]


UNFINISHED_COLUMNS = ["run_name", "status", "epochs", "failure_reason"]


def build_report(
    client: MlflowClient, runs: Sequence[Run], links: UiLinks | None = None
) -> Report | None:
    """Tables, rankings, figures and the text blocks for a set of runs (None if empty), the
    verdict first; ``links``: the MLflow UI whose pages the verdict and the run names link
    to."""
    if not runs:
        return None
    history = stored.history(client, runs)
    summary = stored.grouped_summary(history, runs)
    summary = summary.sort_values(["configuration", "seed"], kind="stable", ignore_index=True)
    columns = list(RUN_COLUMNS)
    if summary.test_miou.notna().any():
        columns += ["test_miou", "test_class_acc", "test_pixel_acc"]
    if summary.group.ne("").any():
        columns.insert(1, "group")
    done = int((summary.status == "FINISHED").sum())
    experiments = story.run_experiments(runs)
    finished = summary[summary.status == "FINISHED"]
    verdict = story.runs_verdict(history, finished, runs, links)
    figures: dict[str, Figure] = {}
    pictures: list[Block] = []
    for told in (t for t in stored.loss_stories(finished) if t.hides):
        name = (
            f"{FILE_PART.sub('_', told.loss)}_loss_beside_{FILE_PART.sub('_', told.failing_class)}"
        )
        pair = [told.lowest.run_name, told.best.run_name]
        figures[name] = sweep_figures.loss_beside_class(
            history,
            pair,
            told.failing_class,
            f"loss={told.loss}: the loss beside {told.failing_class}",
        )
        pictures.append(Picture(name, loss_beside_caption(told)))
    blocks: list[Block] = [
        "# seglab sweep report",
        *verdict,
        *pictures,
        f"{len(runs)} runs: {done} finished"
        + ("." if done == len(runs) else f", {len(runs) - done} did not (listed below)."),
        "## Runs",
        Table(summary[columns]),
    ]
    if warning := stored.pooling_warning(runs):
        blocks.insert(1, warning)
    if done < len(runs):
        blocks += [
            "## Runs that did not finish",
            ("No run finished. " if done == 0 else "")
            + f"Each ended with the status and the reason ({schema.TAG_FAILURE_REASON}) shown; "
            "a run that failed before its first epoch has no metrics.",
            Table(summary.loc[summary.status != "FINISHED", UNFINISHED_COLUMNS]),
        ]
    ranked = None
    if done:
        parts = [(g, summary[summary.group == g]) for g in dict.fromkeys(summary.group)]
        ranked_parts = [
            (g, part, rankings(part)) for g, part in parts if (part.status == "FINISHED").any()
        ]
        ranked = ranked_parts[0][2]
        classes = stored.class_order(runs)
        configurations = stored.configuration_summary(summary, history)
        if configurations.n.max() > 1:
            scalar, per_class = seed_tables(configurations, classes)
            blocks += [
                "## Configurations over seeds",
                "Mean ± half-width of the 95 % Student-t interval over each configuration's "
                "seeds (runs that differ only in trainer.seed); no interval with one seed.",
                Table(scalar),
                "Final validation IoU per class:",
                Table(per_class),
            ]
            if summary.test_miou.notna().any():
                test = stored.configuration_summary(summary, history, split="test")
                blocks += [
                    "Test IoU per class (the best checkpoint of each run):",
                    Table(seed_tables(test, classes)[1]),
                ]
        else:
            blocks += [
                "## Final validation IoU per class",
                Table(stored.final_iou_matrix(history, runs).reset_index(), "{:.3f}"),
            ]
        blocks += outline_tables(history, runs)
        for group, part, ranked_part in ranked_parts:  # comparable runs, each group apart
            blocks += [
                "## Ranked by val loss within each loss, beside worst-class IoU and mIoU"
                + (f": {group}" if group else ""),
                Table(with_intervals(ranked_part.table, RANKED_DIGITS)),
                spearman_sentence(ranked_part),
                *(found.text for found in ranked_part.mismatches),
            ]
            if ranked_part.mismatches:
                blocks += image_evidence(client, part, ranked_part.mismatches[0])
        figures |= {
            "final_iou_heatmap": sweep_figures.iou_heatmap(stored.final_iou_matrix(history, runs)),
            "val_loss_vs_min_iou": sweep_figures.loss_vs_worst_iou(finished, classes),
            "class_iou_curves": sweep_figures.class_iou_curves(
                history, classes, list(summary.run_name)
            ),
        }
        blocks += ["## Figures", *(Picture(name, text) for name, text in CAPTIONS.items())]
    pages: dict[str, str] = {}
    if links is not None:
        pages = {
            str(name): links.run(experiments[str(run_id)], str(run_id))
            for name, run_id in zip(summary.run_name, summary.run_id, strict=True)
        }
    return Report(history, summary, ranked, figures, blocks, verdict, pages)


def outline_tables(history: pd.DataFrame, runs: Sequence[Run]) -> list[Block]:
    """Where each class's outline is in every run's final model on val, beside its IoU: the
    boundary IoU and HD95 tables (none for runs that did not score them)."""
    boundary = stored.final_iou_matrix(history, runs, schema.key(schema.VAL, schema.BOUNDARY_IOU))
    if boundary.empty:
        return []
    distance = stored.final_iou_matrix(history, runs, schema.key(schema.VAL, schema.HD95))
    return [
        "## Where the outline is: boundary IoU and HD95",
        "Boundary IoU (the IoU of the two outlines, 2 % of the image diagonal wide) and HD95 "
        "(pixels; inf: the class missed entirely in an image) of each run's final model on "
        "val, per class: a class found at the wrong place has boundary IoU near 0 and a "
        "finite HD95; a class never predicted has an infinite one.",
        Table(boundary.reset_index(), "{:.3f}"),
        Table(distance.reset_index(), "{:.2f}"),
    ]


FILE_PART = re.compile(r"[^A-Za-z0-9_-]")  # what a figure's file name keeps of a name
CAPTIONS = {
    "final_iou_heatmap": "Final validation IoU of every run (rows) and class (columns). A "
    "failing class is a dark column; a remedy that works lightens it without darkening the "
    "others.",
    "val_loss_vs_min_iou": "Each run's final val loss against its worst class's IoU, one panel "
    "per loss function (losses of different functions are not on one scale). A point's colour "
    "is its worst class; a cross marks a hidden failure. If a lower loss meant a better worst "
    "class, the points would run from the top left down to the bottom right.",
    "class_iou_curves": "Every class's validation IoU over the epochs, one panel per run in the "
    "order of the runs table, one colour per class as in every figure; the thick line is the "
    "run's worst class.",
}


def loss_beside_caption(told: stored.LossStory) -> str:
    """What to see in :func:`seglab.figures.sweep.loss_beside_class` of a loss function's
    story."""
    name = markdown_text(told.failing_class)
    return (
        f"loss={markdown_text(told.loss)}: {schema.VAL_LOSS} (left) and the IoU of {name} "
        f"(right) over the epochs of {markdown_text(told.lowest.run_name)}, the lowest val loss "
        f"(grey), and {markdown_text(told.best.run_name)}, the best worst class (blue). The loss "
        f"says which run fits the pixels best; the right panel says which one finds {name}."
    )
