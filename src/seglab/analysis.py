"""MLflow -> tidy pandas frames: the one place that reads seglab's runs back.

``history(client, runs)`` gives one row per run x epoch x metric x class (class empty for
whole-split metrics such as ``val/loss``); ``summary`` one row per run; ``rankings`` the runs
ranked by val loss beside their ranks by worst-class IoU and mIoU. The report CLI and the
notebook are thin layers over these functions.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

PARENT_TAG = "mlflow.parentRunId"
SWEEP_FILE = "sweep.json"
AXES = ("loss", "class_weights", "augment")
PER_CLASS = ("val/iou", "val/dice", "val/loss_share")


def child_runs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """The runs nested under a sweep's parent run, oldest first."""
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )


def experiment_runs(client: MlflowClient, experiment_name: str) -> list[Run]:
    """Every training run of an experiment (sweep parents excluded), oldest first."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"no MLflow experiment named {experiment_name!r}")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if r.data.tags.get("seglab.sweep") != "parent"]


def split_key(key: str) -> tuple[str, str]:
    """``val/iou/speck`` -> ``("val/iou", "speck")``; ``val/loss`` -> ``("val/loss", "")``."""
    for prefix in PER_CLASS:
        if key.startswith(prefix + "/"):
            return prefix, key[len(prefix) + 1 :]
    return key, ""


def history(client: MlflowClient, runs: Sequence[Run]) -> pd.DataFrame:
    """Tidy per-epoch history: run_id, run_name, status, the three axes, epoch, metric,
    class, value."""
    rows = []
    for run in runs:
        tags = run.data.tags
        base = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            **{axis: tags.get(f"seglab.{axis}", "") for axis in AXES},
        }
        for key in run.data.metrics:
            metric, cls = split_key(key)
            for point in client.get_metric_history(run.info.run_id, key):
                rows.append(
                    {
                        **base,
                        "epoch": point.step,
                        "metric": metric,
                        "class": cls,
                        "value": point.value,
                    }
                )
    columns = ["run_id", "run_name", "status", *AXES, "epoch", "metric", "class", "value"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["run_id", "metric", "class", "epoch"], ignore_index=True)


def final_values(frame: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's value of every run x metric x class."""
    last = frame.sort_values("epoch").groupby(["run_id", "metric", "class"]).tail(1)
    return last.reset_index(drop=True)


def summary(frame: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: final and best val loss, val CE, mIoU, min IoU, worst class, flag."""
    tags = {r.info.run_id: r.data.tags for r in runs}
    final = final_values(frame)
    rows = []
    for run_id, group in frame.groupby("run_id", sort=False):
        last = final[final.run_id == run_id]
        scalar = dict(
            zip(last[last["class"] == ""].metric, last[last["class"] == ""].value, strict=True)
        )
        ious = last[last.metric == "val/iou"].set_index("class").value
        val_loss = group[(group.metric == "val/loss") & (group["class"] == "")]
        first = group.iloc[0]
        rows.append(
            {
                "run_id": run_id,
                "run_name": first.run_name,
                "status": first.status,
                **{axis: first[axis] for axis in AXES},
                "epochs": int(group.epoch.max()) if len(group) else 0,
                "val_loss": scalar.get("val/loss", np.nan),
                "best_val_loss": val_loss.value.min() if len(val_loss) else np.nan,
                "val_ce": scalar.get("val/ce", np.nan),
                "miou": scalar.get("val/miou", np.nan),
                "min_iou": scalar.get("val/min_iou", np.nan),
                "pixel_acc": scalar.get("val/pixel_acc", np.nan),
                # The run's own tag breaks ties by class index, as the run did.
                "worst_class": tags[run_id].get(
                    "seglab.worst_class", ious.idxmin() if ious.notna().any() else ""
                ),
                "hidden_failure": tags[run_id].get("seglab.hidden_failure", ""),
            }
        )
    return pd.DataFrame(rows)


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman rank correlation (Pearson on average ranks), NaN pairs dropped."""
    pairs = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(pairs) < 3:
        return float("nan")
    return float(pairs.x.rank().corr(pairs.y.rank()))


@dataclass(frozen=True)
class Rankings:
    """Runs ranked three ways, and what that says.

    Attributes:
        table: run_name, val_loss, min_iou, miou and their ranks (1 = best), by val loss.
        spearman_loss_vs_min_iou: Rank correlation of val loss with worst-class IoU across
            runs (negative is what a good loss would show: lower loss, higher worst IoU).
        best_by_loss: Run with the lowest val loss.
        best_by_min_iou: Run with the highest worst-class IoU.
        mismatches: One sentence per comparison where the lowest-loss run is not the best
            worst-class run: over all runs, then within each loss (val losses of different
            losses are not on one scale, so the within-loss comparison is the fair one).
    """

    table: pd.DataFrame
    spearman_loss_vs_min_iou: float
    best_by_loss: str
    best_by_min_iou: str
    mismatches: list[str]


def rankings(runs_summary: pd.DataFrame, loss_column: str = "val_loss") -> Rankings:
    """Ranks finished runs by ``loss_column`` (ascending) beside min IoU and mIoU."""
    done = runs_summary[runs_summary.status == "FINISHED"].copy()
    if done.empty:
        raise ValueError("no finished runs to rank")
    for column, ascending in ((loss_column, True), ("min_iou", False), ("miou", False)):
        name = "rank_by_loss" if column == loss_column else f"rank_by_{column}"
        done[name] = done[column].rank(ascending=ascending, method="min").astype(int)
    table = done.sort_values(loss_column)[
        [
            "run_name",
            loss_column,
            "min_iou",
            "worst_class",
            "miou",
            "rank_by_loss",
            "rank_by_min_iou",
            "rank_by_miou",
        ]
    ].reset_index(drop=True)
    groups = [("all runs", done)]
    if done["loss"].nunique() > 1:
        groups += [
            (f"loss={loss}", group) for loss, group in done.groupby("loss") if len(group) > 1
        ]
    mismatches = [line for label, group in groups if (line := mismatch(group, loss_column, label))]
    return Rankings(
        table=table,
        spearman_loss_vs_min_iou=spearman(done[loss_column], done.min_iou),
        best_by_loss=done.loc[done[loss_column].idxmin()].run_name,
        best_by_min_iou=done.loc[done.min_iou.idxmax()].run_name,
        mismatches=mismatches,
    )


def mismatch(runs: pd.DataFrame, loss_column: str, label: str) -> str:
    """A sentence when the lowest-loss run of ``runs`` is not its best worst-class run."""
    by_loss = runs.loc[runs[loss_column].idxmin()]
    by_min = runs.loc[runs.min_iou.idxmax()]
    if by_loss.run_id == by_min.run_id or by_loss.min_iou == by_min.min_iou:
        return ""
    return (
        f"Among {label}, the lowest {loss_column} ({by_loss.run_name}: "
        f"{by_loss[loss_column]:.4f}) has worst-class IoU {by_loss.min_iou:.3f} "
        f"({by_loss.worst_class}), while {by_min.run_name} reaches {by_min.min_iou:.3f} "
        f"with {loss_column} {by_min[loss_column]:.4f}."
    )


def class_order(runs: Sequence[Run]) -> list[str]:
    """Class names in index order, from the runs' ``data.class_names`` param."""
    names: list[str] = []
    for run in runs:
        logged = run.data.params.get("data.class_names")
        if logged:
            names += [n for n in ast.literal_eval(logged) if n not in names]
    return names


def final_iou_matrix(frame: pd.DataFrame, runs: Sequence[Run] = ()) -> pd.DataFrame:
    """Run name x class matrix of the final val IoU (the heatmap's data), classes in index
    order when the runs logged their class names."""
    final = final_values(frame)
    ious = final[final.metric == "val/iou"]
    matrix = ious.pivot(index="run_name", columns="class", values="value")
    known = [c for c in class_order(runs) if c in matrix.columns]
    return matrix[known + [c for c in matrix.columns if c not in known]]


def read_sweep_file(sweep_dir: str | Path) -> dict:
    """The ``sweep.json`` a multirun's callback writes into its sweep directory."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"{sweep_dir} is not a seglab sweep directory (no {SWEEP_FILE})")
    return json.loads(path.read_text())
