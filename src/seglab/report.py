"""``seglab report [target=]<sweep dir | parent run id | experiment name> [key=value ...]``.

Reads the runs from MLflow (no re-training) and builds the report
(:func:`seglab.analysis.report.build_report`): every run, the configurations over their seeds,
the rankings, the evidence for the "lowest loss is not best worst class" sentence, and the
figures; prints it as aligned text and writes ``report.md``, ``report.html``, the tidy history
and the figures into ``out`` (default: ``<sweep dir>/report`` or ``outputs/reports/<name>``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files, never a window

import matplotlib.pyplot as plt
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.analysis.links import UiLinks, ui_address
from seglab.analysis.report import build_report
from seglab.analysis.runs import child_runs, experiment_runs, latest_sweep, read_sweep_file
from seglab.cli import bad_input, read_options
from seglab.paths import check_writable, project_root
from seglab.tracking.store import check_existing_store, resolve_uri
from seglab.tracking.sweep import add_study

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
HELP = f"""seglab report [target=]<sweep dir | parent run id | experiment name> [key=value ...]

Report on a sweep (or any set of runs) from MLflow, without re-training: every run, the
configurations over their seeds with 95 % intervals, the rankings by val loss within each loss
beside worst-class IoU and mIoU, and whether the lowest loss is the best worst class. Prints it
and writes report.md, {schema.SWEEP_REPORT_HTML} (sortable tables, figures), the tidy
history (history.csv, history.parquet), summary.csv and the figures."""
# The flags this command took before it took key=value options, and what to write instead.
FORMER_FLAGS = {
    "--out": "out=<folder>",
    "--tracking-uri": "tracking_uri=<uri>",
    "--markdown": ("markdown=true"),
}


def resolve(target: str, client: MlflowClient) -> tuple[list[Run], Path, dict[str, Any]]:
    """Runs, default output folder and ``sweep.json`` (empty but for a sweep dir) for a sweep
    dir, a parent run id or an experiment."""
    path = Path(target)
    if path.is_dir():
        info = read_sweep_file(path)
        return child_runs(client, info["parent_run_id"]), path / "report", info
    if RUN_ID.match(target):
        return child_runs(client, target), project_root() / "outputs/reports" / target, {}
    return experiment_runs(client, target), project_root() / "outputs/reports" / target, {}


def options(words: Sequence[str]) -> list[str]:
    """The command's words as ``key=value`` options: one bare word is the target."""
    for word in words:
        if word in FORMER_FLAGS:
            raise ValueError(f"{word} is written {FORMER_FLAGS[word]} now")
    bare = [w for w in words if "=" not in w and not w.startswith("-")]
    if len(bare) > 1:
        raise ValueError(f"give one target, got {bare}: a sweep dir, a run id or an experiment")
    return [f"target={w}" if w in bare else w for w in words]


def main(argv: Sequence[str] | None = None) -> int:
    """Builds, writes and prints the report; returns the exit status."""
    try:
        cfg = read_options("report", HELP, argv, options)
        if cfg is None:
            return 0
        target = str(cfg.target or latest_sweep(project_root() / "outputs" / "sweeps"))
        uri = cfg.tracking_uri
        if uri is None and Path(target).is_dir():
            uri = read_sweep_file(target)["tracking_uri"]
        uri, source = resolve_uri(uri)
        explicit = "tracking_uri" if cfg.tracking_uri else f"tracking_uri in {schema.SWEEP_FILE}"
        check_existing_store(uri, explicit if source == "tracking.tracking_uri" else source)
        client = MlflowClient(uri)  # after the check: opening a sqlite path creates a store
        runs, default_out, info = resolve(target, client)
        out = Path(cfg.out) if cfg.out else default_out
        check_writable(out, f"out={str(out)!r}")
        report = build_report(client, runs, UiLinks(ui_address(uri)))
        if report is None:
            raise ValueError(
                f"no runs found for {target!r} at {uri}: give a sweep directory, a sweep's "
                "parent run id or an experiment name"
            )
        add_study(report, info, runs)
    except ValueError as error:
        return bad_input("seglab report", error)
    report.write(out)
    for figure in report.figures.values():
        plt.close(figure)
    print(report.text if cfg.markdown else report.terminal())
    print(f"written to {out} ({schema.SWEEP_REPORT_HTML}: open it in a browser)")
    return 0


def cli() -> None:
    """``seglab report``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
