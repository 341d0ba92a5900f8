"""``python -m seglab.report <sweep dir | parent run id | experiment name>``.

Reads the runs from MLflow (no re-training), prints the per-run table and the rankings by val
loss, worst-class IoU and mIoU, and writes ``report.md``, the tidy history (CSV and Parquet)
and the figures into ``--out`` (default: ``<sweep dir>/report`` or
``outputs/reports/<name>``).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files, never a window
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from seglab import analysis, plots
from seglab.paths import project_root
from seglab.statistics import Interval

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RANKED_DIGITS = {"val_loss": 4, "min_iou": 3, "miou": 3}  # losses can be small: one digit more


@dataclass
class Report:
    """Everything a sweep report holds."""

    history: pd.DataFrame
    summary: pd.DataFrame
    rankings: analysis.Rankings | None
    figures: dict[str, Figure]
    text: str

    def write(self, folder: str | Path) -> None:
        """Writes report.md, history.csv/.parquet, summary.csv and the figures as PNGs."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.text)
        self.history.to_csv(folder / "history.csv", index=False)
        self.history.to_parquet(folder / "history.parquet", index=False)
        self.summary.to_csv(folder / "summary.csv", index=False)
        for name, figure in self.figures.items():
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")


def markdown(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    """A small frame as a GitHub markdown table (no extra dependency)."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else floats.format(v))
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def with_intervals(table: pd.DataFrame, columns: Mapping[str, int]) -> pd.DataFrame:
    """Each of ``columns`` (name -> digits) shown as ``mean ± half-width`` from its
    ``<column>_ci`` partner."""
    shown = table.copy()
    for column, digits in columns.items():
        half = shown.pop(f"{column}_ci")
        shown[column] = [
            Interval(0, m, 0.0, m - h, m + h).format(digits) if h == h else f"{m:.{digits}f}"
            for m, h in zip(shown[column], half, strict=True)
        ]
    return shown


def seed_tables(configurations: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From :func:`seglab.analysis.configuration_summary`: the whole-split metrics and the
    per-class IoU as ``mean ± half-width`` tables, one row per configuration."""
    cell = configurations.assign(
        shown=[
            Interval(n, m, 0.0, lo, hi).format()
            for n, m, lo, hi in configurations[["n", "mean", "ci_low", "ci_high"]].itertuples(
                index=False
            )
        ]
    )
    wide = cell.pivot(index="configuration", columns="metric", values="shown")
    order = list(dict.fromkeys(configurations.configuration))
    seeds = configurations.groupby("configuration").n.max()
    per_class = [c for c in wide.columns if "/iou/" in c]
    whole = [c for c in dict.fromkeys(configurations.metric) if c not in per_class]
    scalar = wide.loc[order, whole].assign(seeds=seeds.loc[order]).reset_index()
    classes = wide.loc[order, per_class].rename(columns=lambda c: c.rsplit("/", 1)[-1])
    return scalar[["configuration", "seeds", *whole]], classes.reset_index()


def image_evidence(client: MlflowClient, summary: pd.DataFrame, found: analysis.Mismatch) -> str:
    """The paired bootstrap over validation images between one run of each configuration a
    mismatch names (the lowest seed both ran), as markdown; empty without per-image counts."""
    done = summary[summary.status == "FINISHED"]
    a = done[done.configuration == found.lowest_loss]
    b = done[done.configuration == found.best_worst_class]
    shared = sorted(set(a.seed) & set(b.seed))
    seed = shared[0] if shared else None
    run_a = (a[a.seed == seed] if seed is not None else a).iloc[0]
    run_b = (b[b.seed == seed] if seed is not None else b).iloc[0]
    try:
        compared = analysis.compare_runs(client, run_a.run_id, run_b.run_id)
    except ValueError:
        return ""
    return "\n".join(
        [
            f"Paired bootstrap over the validation images (2000 resamples), {run_b.run_name} "
            f"minus {run_a.run_name}: the interval says whether the difference holds across "
            "these images for these two trained models, not across seeds.",
            "",
            markdown(compared, floats="{:.3f}"),
            "",
        ]
    )


def build_report(client: MlflowClient, runs: Sequence[Run]) -> Report | None:
    """Tables, rankings, figures and the markdown text for a set of runs (None if empty)."""
    if not runs:
        return None
    history = analysis.history(client, runs)
    summary = analysis.summary(history, runs)
    columns = [
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
    if summary.test_miou.notna().any():
        columns += ["test_miou", "test_class_acc", "test_pixel_acc"]
    lines = [
        "# seglab sweep report",
        "",
        f"{len(runs)} runs.",
        "",
        "## Runs",
        "",
        markdown(summary[columns]),
        "",
    ]
    ranked = None
    figures: dict[str, Figure] = {}
    if (summary.status == "FINISHED").any():
        ranked = analysis.rankings(summary)
        rho = ranked.spearman_loss_vs_min_iou
        configurations = analysis.configuration_summary(summary, history)
        if configurations.n.max() > 1:
            scalar, per_class = seed_tables(configurations)
            lines += [
                "## Configurations over seeds",
                "",
                "Mean ± half-width of the 95 % Student-t interval over each configuration's "
                "seeds (runs that differ only in trainer.seed); no interval with one seed.",
                "",
                markdown(scalar),
                "",
                "Final validation IoU per class:",
                "",
                markdown(per_class),
                "",
            ]
        else:
            lines += [
                "## Final validation IoU per class",
                "",
                markdown(analysis.final_iou_matrix(history, runs).reset_index(), floats="{:.3f}"),
                "",
            ]
        lines += [
            "## Ranked by val loss within each loss, beside worst-class IoU and mIoU",
            "",
            markdown(with_intervals(ranked.table, RANKED_DIGITS)),
            "",
            "Spearman correlation of val loss with worst-class IoU across configurations: "
            + ("n/a (needs 3 and some spread in both)" if rho != rho else f"{rho:+.2f}")
            + " (a loss that tracked the failing class would be near -1).",
            "",
        ]
        for found in ranked.mismatches:
            lines += [found.text, ""]
        if ranked.mismatches:
            lines += [image_evidence(client, summary, ranked.mismatches[0])]
        finished = summary[summary.status == "FINISHED"]
        figures = {
            "final_iou_heatmap": plots.iou_heatmap(analysis.final_iou_matrix(history, runs)),
            "val_loss_vs_min_iou": plots.loss_vs_worst_iou(
                finished.val_loss, finished.min_iou, finished.run_name
            ),
            "class_iou_curves": plots.class_iou_curves(history),
        }
    return Report(history, summary, ranked, figures, "\n".join(lines))


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seglab.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", help="sweep directory, parent run id, or experiment name")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: the sweep's, else $MLFLOW_TRACKING_URI, "
        "else outputs/mlflow.db)",
    )
    parser.add_argument("--out", default=None, help="output folder")
    args = parser.parse_args(argv)
    uri = args.tracking_uri
    if uri is None and Path(args.target).is_dir():
        uri = analysis.read_sweep_file(args.target)["tracking_uri"]
    uri = (
        uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or (f"sqlite:///{project_root() / 'outputs' / 'mlflow.db'}")
    )
    client = MlflowClient(uri)
    try:
        runs, default_out = resolve(args.target, client)
    except ValueError as error:
        print(f"seglab.report: {error}", file=sys.stderr)
        return 2
    report = build_report(client, runs)
    if report is None:
        print(f"seglab.report: no runs found for {args.target!r} at {uri}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out
    report.write(out)
    for figure in report.figures.values():
        plt.close(figure)
    print(report.text)
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
