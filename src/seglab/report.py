"""``python -m seglab.report [sweep dir | parent run id | experiment name]``: the sweep report.

Reads the runs from MLflow (no re-training) and builds the report (:func:`build_report`):
every run, the configurations over their seeds, the rankings, the evidence for the "lowest
loss is not best worst class" sentence, and the figures; prints it as aligned text and writes
``report.md``, ``report.html``, the tidy history and the figures into ``--out`` (default:
``<sweep dir>/report`` or ``outputs/reports/<name>``).
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os

os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files, never a window
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from seglab import analysis, plots
from seglab.checks import check_writable
from seglab.paths import project_root
from seglab.statistics import Interval, unhidden
from seglab.tracking import check_existing_store, resolve_uri

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RANKED_DIGITS = {"val_loss": 4, "min_iou": 3, "miou": 3}  # losses can be small: one digit more


@dataclass(frozen=True)
class Table:
    """A table block of a report, and how its floats are shown."""

    frame: pd.DataFrame
    floats: str = "{:.4f}"

    def shown(self) -> pd.DataFrame:
        """The frame with floats formatted and NaN blank, every cell a string."""
        shown = self.frame.copy()
        for column in shown.columns:
            if pd.api.types.is_float_dtype(shown[column]):
                shown[column] = shown[column].map(
                    lambda v: "" if pd.isna(v) else unhidden(v, self.floats.format(v))
                )
        return shown.astype(object).where(shown.notna(), "").astype(str)  # <NA> blank too


Block = str | Table  # a paragraph (a heading when it starts with "# " or "## "), or a table


@dataclass
class Report:
    """Everything a sweep report holds, and its three renderings: markdown (``report.md``,
    :attr:`text`), aligned terminal text (:meth:`terminal`) and one self-contained HTML page
    (:meth:`html`: tables sortable by their headers, the figures embedded)."""

    history: pd.DataFrame
    summary: pd.DataFrame
    rankings: analysis.Rankings | None
    figures: dict[str, Figure]
    blocks: list[Block]

    @property
    def text(self) -> str:
        """The report as GitHub markdown."""
        parts = [markdown_table(b) if isinstance(b, Table) else b for b in self.blocks]
        return "\n\n".join(parts) + "\n"

    def terminal(self) -> str:
        """The report for a terminal: headings underlined, tables in aligned columns."""
        parts = []
        for block in self.blocks:
            if isinstance(block, Table):
                parts.append(block.shown().to_string(index=False))
            elif block.startswith("#"):
                title = block.lstrip("# ")
                parts.append(f"{title}\n{('=' if block.startswith('# ') else '-') * len(title)}")
            else:
                parts.append(block.replace("**", ""))
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        """One self-contained page: the tables sortable by a click on their headers, the
        figures embedded as PNG."""
        body = []
        for block in self.blocks:
            if isinstance(block, Table):
                body.append(html_table(block))
            elif block.startswith("## "):
                body.append(f"<h2>{escape(block[3:])}</h2>")
            elif block.startswith("# "):
                body.append(f"<h1>{escape(block[2:])}</h1>")
            else:
                body.append("<p>" + BOLD.sub(r"<strong>\1</strong>", escape(block)) + "</p>")
        for name, figure in self.figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            data = base64.b64encode(buffer.getvalue()).decode()
            body.append(f"<h2>{escape(name.replace('_', ' '))}</h2>")
            body.append(f'<img alt="{escape(name)}" src="data:image/png;base64,{data}">')
        return HTML_PAGE.replace("{body}", "\n".join(body))

    def write(self, folder: str | Path) -> None:
        """Writes report.md, report.html, history.csv/.parquet, summary.csv and the figures."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.text)
        (folder / "report.html").write_text(self.html())
        self.history.to_csv(folder / "history.csv", index=False)
        self.history.to_parquet(folder / "history.parquet", index=False)
        self.summary.to_csv(folder / "summary.csv", index=False)
        for name, figure in self.figures.items():
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")


def markdown(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    """A small frame as a GitHub markdown table (no extra dependency)."""
    return markdown_table(Table(frame, floats))


def markdown_table(table: Table) -> str:
    """A table block as GitHub markdown."""
    shown = table.shown()
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def html_table(table: Table) -> str:
    """A table block as an HTML table its page can sort."""
    shown = table.shown()
    head = "".join(f"<th>{escape(str(c))}</th>" for c in shown.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


BOLD = re.compile(r"\*\*(.+?)\*\*")
HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>seglab sweep report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; cursor: pointer; }
th:hover { background: #e0e0ff; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
strong { color: #a00; }
</style></head><body>
{body}
<script>
// Click a header to sort its table by that column (numbers as numbers); again to reverse.
document.querySelectorAll("table.sortable th").forEach((th, column) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const ascending = th.dataset.order !== "asc";
    th.dataset.order = ascending ? "asc" : "desc";
    const key = (row) => {
      const text = row.cells[column].textContent.trim();
      const number = parseFloat(text);
      return isNaN(number) ? text : number;
    };
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      const order = typeof x === typeof y
        ? (x < y ? -1 : x > y ? 1 : 0)
        : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  });
});
</script>
</body></html>
"""


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
    """From :func:`seglab.analysis.configuration_summary`: the whole-split metrics and the
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


def image_evidence(
    client: MlflowClient, summary: pd.DataFrame, found: analysis.Mismatch
) -> list[Block]:
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
        compared = analysis.compare_runs(client, run_a.run_id, run_b.run_id)
    except ValueError:
        return []
    return [
        f"Paired bootstrap over the validation images (2000 resamples): iou_a is "
        f"{run_a.run_name}, iou_b is {run_b.run_name}, difference is iou_b - iou_a with its "
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


def build_report(client: MlflowClient, runs: Sequence[Run]) -> Report | None:
    """Tables, rankings, figures and the text blocks for a set of runs (None if empty)."""
    if not runs:
        return None
    history = analysis.history(client, runs)
    summary = analysis.summary(history, runs)
    summary = summary.sort_values(["configuration", "seed"], kind="stable", ignore_index=True)
    columns = list(RUN_COLUMNS)
    if summary.test_miou.notna().any():
        columns += ["test_miou", "test_class_acc", "test_pixel_acc"]
    blocks: list[Block] = [
        "# seglab sweep report",
        f"{len(runs)} runs.",
        "## Runs",
        Table(summary[columns]),
    ]
    ranked = None
    figures: dict[str, Figure] = {}
    if (summary.status == "FINISHED").any():
        ranked = analysis.rankings(summary)
        rho = ranked.spearman_loss_vs_min_iou
        configurations = analysis.configuration_summary(summary, history)
        if configurations.n.max() > 1:
            classes = analysis.class_order(runs)
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
                test = analysis.configuration_summary(summary, history, split="test")
                blocks += [
                    "Test IoU per class (the best checkpoint of each run):",
                    Table(seed_tables(test, classes)[1]),
                ]
        else:
            blocks += [
                "## Final validation IoU per class",
                Table(analysis.final_iou_matrix(history, runs).reset_index(), "{:.3f}"),
            ]
        blocks += [
            "## Ranked by val loss within each loss, beside worst-class IoU and mIoU",
            Table(with_intervals(ranked.table, RANKED_DIGITS)),
            "Spearman correlation of val loss with worst-class IoU across configurations: "
            + ("n/a (needs 3 and some spread in both)" if rho != rho else f"{rho:+.2f}")
            + " (a loss that tracked the failing class would be near -1).",
        ]
        blocks += [found.text for found in ranked.mismatches]
        if ranked.mismatches:
            blocks += image_evidence(client, summary, ranked.mismatches[0])
        finished = summary[summary.status == "FINISHED"]
        figures = {
            "final_iou_heatmap": plots.iou_heatmap(analysis.final_iou_matrix(history, runs)),
            "val_loss_vs_min_iou": plots.loss_vs_worst_iou(finished),
            "class_iou_curves": plots.class_iou_curves(history, analysis.class_order(runs)),
        }
    return Report(history, summary, ranked, figures, blocks)


def resolve(target: str, client: MlflowClient) -> tuple[list[Run], Path]:
    """Runs and default output folder for a sweep dir, a parent run id or an experiment."""
    path = Path(target)
    if path.is_dir():
        info = analysis.read_sweep_file(path)
        return analysis.child_runs(client, info["parent_run_id"]), path / "report"
    if RUN_ID.match(target):
        return analysis.child_runs(client, target), project_root() / "outputs/reports" / target
    return (
        analysis.experiment_runs(client, target),
        project_root() / "outputs/reports" / target,
    )


HELP = """Report on a sweep (or any set of runs) from MLflow, without re-training: every run,
the configurations over their seeds with 95 % intervals, the rankings by val loss within each
loss beside worst-class IoU and mIoU, and whether the lowest loss is the best worst class.
Prints it and writes report.md, report.html (sortable tables, figures), the tidy history
(history.csv, history.parquet), summary.csv and the figures.

target: a sweep directory (default: the latest under outputs/sweeps), a parent run id, or an
experiment name (every run in it)."""


def latest_sweep() -> Path | None:
    """The newest sweep directory under ``outputs/sweeps`` (their names are timestamps)."""
    sweeps = sorted((project_root() / "outputs" / "sweeps").glob("*/sweep.json"))
    return sweeps[-1].parent if sweeps else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seglab.report",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", help="sweep directory, parent run id or experiment")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: the sweep's, else $MLFLOW_TRACKING_URI, "
        "else outputs/mlflow.db)",
    )
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument(
        "--markdown", action="store_true", help="print markdown instead of aligned text"
    )
    args = parser.parse_args(argv)
    target = args.target or latest_sweep()
    if target is None:
        print("seglab.report: no sweep under outputs/sweeps; give a target", file=sys.stderr)
        return 2
    target = str(target)
    uri = args.tracking_uri
    if uri is None and Path(target).is_dir():
        try:
            uri = analysis.read_sweep_file(target)["tracking_uri"]
        except ValueError as error:
            print(f"seglab.report: {error}", file=sys.stderr)
            return 2
    uri, source = resolve_uri(uri, f"sqlite:///{project_root() / 'outputs' / 'mlflow.db'}")
    try:
        explicit = "--tracking-uri" if args.tracking_uri else "tracking_uri in sweep.json"
        check_existing_store(uri, explicit if source == "tracking.tracking_uri" else source)
        client = MlflowClient(uri)  # after the check: opening a sqlite path creates a store
        runs, default_out = resolve(target, client)
        out = Path(args.out) if args.out else default_out
        check_writable(str(out), "--out")
    except ValueError as error:
        print(f"seglab.report: {error}", file=sys.stderr)
        return 2
    report = build_report(client, runs)
    if report is None:
        print(
            f"seglab.report: no runs found for {target!r} at {uri}: give a sweep directory, a "
            "sweep's parent run id or an experiment name",
            file=sys.stderr,
        )
        return 2
    report.write(out)
    for figure in report.figures.values():
        plt.close(figure)
    print(report.text if args.markdown else report.terminal())
    print(f"written to {out} (report.html: open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
