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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from seglab import analysis, plots
from seglab.paths import project_root

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


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


def build_report(client: MlflowClient, runs: Sequence[Run]) -> Report | None:
    """Tables, rankings, figures and the markdown text for a set of runs (None if empty)."""
    if not runs:
        return None
    history = analysis.history(client, runs)
    summary = analysis.summary(history, runs)
    columns = [
        "run_name",
        "status",
        "epochs",
        "val_loss",
        "best_val_loss",
        "val_ce",
        "miou",
        "min_iou",
        "worst_class",
        "hidden_failure",
    ]
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
        lines += [
            "## Final validation IoU per class",
            "",
            markdown(analysis.final_iou_matrix(history, runs).reset_index(), floats="{:.3f}"),
            "",
            "## Ranked by val loss, beside worst-class IoU and mIoU",
            "",
            markdown(ranked.table),
            "",
            "Spearman correlation of val loss with worst-class IoU across runs: "
            + ("n/a (needs 3 runs and some spread in both)" if rho != rho else f"{rho:+.2f}")
            + " (a loss that tracked the failing class would be near -1).",
            "",
        ]
        for line in ranked.mismatches:
            lines += [f"**Lowest loss is not best worst class.** {line}", ""]
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
