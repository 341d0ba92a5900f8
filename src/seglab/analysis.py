"""MLflow -> tidy pandas frames: the one place that reads seglab's runs back.

``history(client, runs)`` gives one row per run x epoch x metric x class (class empty for
whole-split metrics such as ``val/loss``); ``summary`` one row per run, with its configuration
(the runs that differ only in ``trainer.seed`` share one) and seed; ``seed_summary`` the mean
and 95 % interval of each configuration over its seeds; ``rankings`` the runs (or
configurations) ranked by val loss beside their ranks by worst-class IoU and mIoU;
``compare_runs`` two runs class by class with a paired bootstrap over images. The report CLI
and the notebook are thin layers over these functions.
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

from seglab.evaluation import PerImageCounts
from seglab.statistics import (
    Interval,
    paired_bootstrap,
    paired_difference,
    seed_summary,
    t_interval,
)

PARENT_TAG = "mlflow.parentRunId"
SWEEP_FILE = "sweep.json"
AXES = ("loss", "class_weights", "augment")
PER_CLASS_KINDS = ("iou", "dice", "recall", "predicted_share", "loss_share", "hidden", "missed")
PER_CLASS = tuple(f"{split}/{kind}" for split in ("val", "test") for kind in PER_CLASS_KINDS)
SEED_PARAM = "trainer.seed"
# Params that do not make two runs different configurations.
NOT_CONFIGURATION = ("paths.", "tracking.run_name", "trainer.resume", SEED_PARAM)
SUMMARY_METRICS = ("val_loss", "val_ce", "miou", "min_iou", "pixel_acc", "class_acc")


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


def configuration_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run id -> its configuration's label: the values that set it apart from the other runs'
    configurations (``loss=dice,class_weights=enet``). Runs whose params differ only in
    ``trainer.seed`` (or output paths) share a label; the three axes are named by their option
    (tags ``seglab.<axis>``), other params by key."""
    keys = {
        run.info.run_id: {
            k: v for k, v in run.data.params.items() if not k.startswith(NOT_CONFIGURATION)
        }
        for run in runs
    }
    names = sorted({k for params in keys.values() for k in params})
    varying = [k for k in names if len({params.get(k) for params in keys.values()}) > 1]

    def axis_of(key: str) -> str | None:
        for axis in AXES:
            if key.startswith(f"{axis}.") or (
                axis == "class_weights" and key.startswith("class_weight/")
            ):
                return axis
        return None

    axes = [a for a in AXES if any(axis_of(k) == a for k in varying)]
    others = [k for k in varying if axis_of(k) is None]
    labels = {}
    for run in runs:
        params = keys[run.info.run_id]
        parts = [f"{a}={run.data.tags.get(f'seglab.{a}', '?')}" for a in axes]
        parts += [f"{k}={params.get(k, '')}" for k in others]
        labels[run.info.run_id] = ",".join(parts) or "one configuration"
    return labels


def summary(frame: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: configuration and seed; final and best val loss, val CE, mIoU, min IoU,
    pixel and class accuracy, worst class, the hidden-failure verdict; the test split's scores
    when the run has them."""
    tags = {r.info.run_id: r.data.tags for r in runs}
    params = {r.info.run_id: r.data.params for r in runs}
    labels = configuration_labels(runs)
    final = final_values(frame)
    rows = []
    for key, group in frame.groupby("run_id", sort=False):
        run_id = str(key)
        last = final[final.run_id == run_id]
        whole = last[last["class"] == ""]
        scalar = dict(zip(whole.metric, whole.value, strict=True))
        ious = last[last.metric == "val/iou"].set_index("class").value
        val_loss = group[(group.metric == "val/loss") & (group["class"] == "")]
        first = group.iloc[0]
        seed = params[run_id].get(SEED_PARAM)
        rows.append(
            {
                "run_id": run_id,
                "run_name": first.run_name,
                "status": first.status,
                "configuration": labels.get(run_id, first.run_name),
                "seed": int(seed) if seed not in (None, "None") else pd.NA,
                **{axis: first[axis] for axis in AXES},
                "epochs": int(group.epoch.max()) if len(group) else 0,
                "val_loss": scalar.get("val/loss", np.nan),
                "best_val_loss": val_loss.value.min() if len(val_loss) else np.nan,
                "val_ce": scalar.get("val/ce", np.nan),
                "miou": scalar.get("val/miou", np.nan),
                "min_iou": scalar.get("val/min_iou", np.nan),
                "pixel_acc": scalar.get("val/pixel_acc", np.nan),
                "class_acc": scalar.get("val/class_acc", np.nan),
                # The run's own tag breaks ties by class index, as the run did.
                "worst_class": tags[run_id].get(
                    "seglab.worst_class", ious.idxmin() if ious.notna().any() else ""
                ),
                "hidden_failure": tags[run_id].get("seglab.hidden_failure", ""),
                "hidden_classes": tags[run_id].get("seglab.hidden_failure_classes", ""),
                **{
                    f"test_{name}": scalar.get(f"test/{name}", np.nan)
                    for name in ("miou", "min_iou", "pixel_acc", "class_acc")
                },
            }
        )
    # Nullable: a run that never logged trainer.seed (failed before its config) has no seed.
    return pd.DataFrame(rows).astype({"seed": "Int64"}) if rows else pd.DataFrame(rows)


def configuration_summary(
    runs_summary: pd.DataFrame, frame: pd.DataFrame, split: str = "val"
) -> pd.DataFrame:
    """:func:`seglab.statistics.seed_summary` of the finished runs: per configuration and
    metric (the summary's metrics, the test split's, and ``<split>/iou/<class>`` of every
    class), n, mean, sd and the 95 % Student-t interval over seeds."""
    done = runs_summary[runs_summary.status == "FINISHED"]
    if done.empty:
        return seed_summary(done, [])
    final = final_values(frame)
    ious = final[final.metric == f"{split}/iou"].pivot(
        index="run_id", columns="class", values="value"
    )
    ious = ious.add_prefix(f"{split}/iou/")
    wide = done.set_index("run_id").join(ious)
    metrics = [
        *SUMMARY_METRICS,
        *(c for c in wide.columns if c.startswith("test_") and wide[c].notna().any()),
        *ious.columns,
    ]
    return seed_summary(wide.reset_index(), metrics)


def per_image(client: MlflowClient, run_id: str, split: str = "val") -> PerImageCounts:
    """A run's per-image counts of ``split`` (its ``per_image/<split>.parquet`` artifact)."""
    run = client.get_run(run_id)
    names = class_order([run])
    try:
        local = client.download_artifacts(run_id, f"per_image/{split}.parquet")
    except Exception as error:
        raise ValueError(
            f"run {run_id} has no per_image/{split}.parquet (runs from before per-image "
            f"evidence, or a split it was not scored on): {error}"
        ) from error
    return PerImageCounts.from_frame(pd.read_parquet(local), names)


def compare_runs(
    client: MlflowClient,
    run_a: str,
    run_b: str,
    split: str = "val",
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-class IoU of two runs on the same split and the 95 % paired-bootstrap interval over
    images of ``iou_b - iou_a`` (see :func:`seglab.statistics.paired_bootstrap`)."""
    a, b = per_image(client, run_a, split), per_image(client, run_b, split)
    names = class_order([client.get_run(run_a)])
    return paired_bootstrap(a, b, names, resamples, seed)


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
        spearman_loss_vs_min_iou: Rank correlation of the mean loss with the mean worst-class
            IoU across configurations (negative is what a good loss would show).
        best_by_loss: Configuration with the lowest mean loss.
        best_by_min_iou: Configuration with the highest mean worst-class IoU.
        mismatches: Where the lowest-loss configuration is not the best worst-class one: over
            all configurations (by ``val_ce`` when they use different loss functions, whose
            values are not on one scale), then within each loss by its own value.
    """

    table: pd.DataFrame
    spearman_loss_vs_min_iou: float
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
    return Rankings(
        table=table,
        spearman_loss_vs_min_iou=spearman(table[loss_column], table.min_iou),
        best_by_loss=str(table.configuration[table[loss_column].argmin()]),
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
    base = (
        f"Among {label}, the lowest {loss_column} ({lowest}: "
        f"{t_interval(a[loss_column].tolist()).format(4)}) has worst-class IoU "
        f"{t_interval(a.min_iou.tolist()).format()} ({worst}), while {best} reaches "
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


def class_order(runs: Sequence[Run]) -> list[str]:
    """Class names in index order: the runs' ``seglab.class_names`` tag, else their
    ``data.class_names`` param when it holds a list (not ``None``: names from a classes file)."""
    names: list[str] = []
    for run in runs:
        tagged = run.data.tags.get("seglab.class_names")
        logged = (
            json.loads(tagged) if tagged else literal_list(run.data.params.get("data.class_names"))
        )
        names += [n for n in logged if n not in names]
    return names


def literal_list(text: str | None) -> list[str]:
    """A logged list param as a list; ``[]`` for ``None``, ``"None"`` or anything else."""
    try:
        value = ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def final_iou_matrix(
    frame: pd.DataFrame, runs: Sequence[Run] = (), metric: str = "val/iou"
) -> pd.DataFrame:
    """Run name x class matrix of the final ``metric`` (default val IoU: the heatmap's data),
    classes in index order when the runs logged their class names."""
    final = final_values(frame)
    ious = final[final.metric == metric]
    matrix = ious.pivot(index="run_name", columns="class", values="value")
    known = [c for c in class_order(runs) if c in matrix.columns]
    return matrix[known + [c for c in matrix.columns if c not in known]]


def read_sweep_file(sweep_dir: str | Path) -> dict:
    """The ``sweep.json`` a multirun's callback writes into its sweep directory."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"{sweep_dir} is not a seglab sweep directory (no {SWEEP_FILE})")
    return json.loads(path.read_text())
