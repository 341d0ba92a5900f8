"""MLflow -> tidy pandas frames: the one place that reads seglab's runs back.

``history(client, runs)`` gives one row per run x epoch x metric x class (class empty for
whole-split metrics such as ``val/loss``), read from each run's ``metric_history.parquet`` in one
download where it is current; ``summary`` one row per run, with its configuration
(the runs that differ only in ``trainer.seed`` share one) and seed; ``configuration_summary``
the mean and 95 % interval of each configuration over its seeds; ``compare_runs`` two runs
class by class with a paired bootstrap over images. :mod:`seglab.analysis.rankings` ranks the
configurations; the report and the notebook are thin layers over these functions.
"""

from __future__ import annotations

import ast
import json
import math
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seglab import schema
from seglab.core.formatting import markdown_text
from seglab.core.per_image import PerImageCounts
from seglab.core.statistics import paired_bootstrap, seed_summary

# Params that do not make two runs different configurations.
# (trainer.resume: where runs logged before it was the option resume kept it.)
NOT_CONFIGURATION = ("paths.", "tracking.run_name", "resume", "trainer.resume", schema.SEED_PARAM)
SUMMARY_METRICS = ("val_loss", "val_ce", "miou", "min_iou", "pixel_acc", "class_acc")


def child_runs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """The runs nested under a sweep's parent run, oldest first: all but the unfinished run of
    a search trial that a later trial reran from scratch (it stays in MLflow, tagged
    ``seglab.retried_as_trial``; a rerun that resumed it made it FINISHED)."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{schema.TAG_PARENT}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return [
        r for r in runs if r.info.status == "FINISHED" or schema.TAG_RETRIED_AS not in r.data.tags
    ]


def experiment_runs(client: MlflowClient, experiment_name: str) -> list[Run]:
    """Every training run of an experiment (sweep parents excluded), oldest first."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"no MLflow experiment named {experiment_name!r}")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if r.data.tags.get(schema.TAG_SWEEP) != schema.SWEEP_PARENT]


def display_names(runs: Sequence[Run]) -> dict[str, str]:
    """Run id -> the run's name, told apart by the start of its id where two runs share one
    (``exp1 (3f2a9c1d)``): tables and figures are indexed by these names."""
    counts = Counter(run.info.run_name for run in runs)
    return {
        run.info.run_id: run.info.run_name
        if counts[run.info.run_name] == 1
        else f"{run.info.run_name} ({run.info.run_id[:8]})"
        for run in runs
    }


def infinite(value: float) -> float:
    """A logged value as it was: MLflow keeps an infinite one (an HD95 of a class missed
    entirely) as its largest float."""
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def metric_points(
    client: MlflowClient, run: Run, from_artifact: bool = True
) -> list[tuple[str, int, float]]:
    """Every ``(key, step, value)`` a run logged: from its ``metric_history.parquet`` for the keys
    whose last point there is the run's latest value, from the metric history (one call per
    key) for the others, or for all when it has no such artifact or ``from_artifact`` is off."""
    latest = run.data.metrics
    stored = stored_history(client, run.info.run_id) if from_artifact else None
    points: list[tuple[str, int, float]] = []
    current: set[str] = set()
    if stored is not None:
        last = stored.groupby("key", sort=False).tail(1).set_index("key").value  # by step
        current = {k for k, v in last.items() if k in latest and same_value(v, latest[k])}
        kept = stored[stored.key.isin(current)]
        points = list(zip(kept.key, kept.step.astype(int), kept.value.astype(float), strict=True))
    for key in latest.keys() - current:
        points += [(key, p.step, p.value) for p in client.get_metric_history(run.info.run_id, key)]
    return points


def stored_history(client: MlflowClient, run_id: str) -> pd.DataFrame | None:
    """A run's ``metric_history.parquet`` sorted by step (stable), or ``None`` when it has none."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, schema.HISTORY_FILE, folder)
        except (MlflowException, OSError):  # a run from before it, or another writer's
            return None
        frame = pd.read_parquet(path)
    return frame.sort_values("step", kind="stable", ignore_index=True)


def same_value(a: float, b: float) -> bool:
    """Equal as MLflow keeps them: NaN equal to NaN, an infinity equal to the largest float a
    store may keep in its place (:func:`infinite`)."""
    a, b = infinite(a), infinite(b)
    return bool(a == b or (math.isnan(a) and math.isnan(b)))


def history(client: MlflowClient, runs: Sequence[Run], from_artifact: bool = True) -> pd.DataFrame:
    """Tidy per-epoch history: run_id, run_name (:func:`display_names`), status, the three
    axes, epoch, metric, class, value. ``class`` is the class's name (the key part of a class
    whose name the run did not log). Each run's points come from :func:`metric_points`."""
    rows = []
    shown = display_names(runs)
    for run in runs:
        tags = run.data.tags
        base = {
            "run_id": run.info.run_id,
            "run_name": shown[run.info.run_id],
            "status": run.info.status,
            **{axis: tags.get(schema.axis_tag(axis), "") for axis in schema.AXES},
        }
        names = {schema.class_key(name): name for name in class_order([run])}
        for key, step, value in metric_points(client, run, from_artifact):
            metric, part = schema.split_key(key)
            rows.append(
                {
                    **base,
                    "epoch": step,
                    "metric": metric,
                    "class": names.get(part, part),
                    "value": infinite(value),
                }
            )
    columns = ["run_id", "run_name", "status", *schema.AXES, "epoch", "metric", "class", "value"]
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
        for axis in schema.AXES:
            if key.startswith(f"{axis}.") or (
                axis == "class_weights" and key.startswith(schema.CLASS_WEIGHT_PARAM)
            ):
                return axis
        return None

    axes = [a for a in schema.AXES if any(axis_of(k) == a for k in varying)]
    others = [k for k in varying if axis_of(k) is None]
    labels = {}
    for run in runs:
        params = keys[run.info.run_id]
        parts = [f"{a}={run.data.tags.get(schema.axis_tag(a), '?')}" for a in axes]
        parts += [f"{k}={params.get(k, '')}" for k in others]
        labels[run.info.run_id] = ",".join(parts) or "one configuration"
    return labels


def summary(frame: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run, every run (one that failed before its first epoch too): configuration
    and seed; final and best val loss, val CE, mIoU, min IoU, pixel and class accuracy, worst
    class, the hidden-failure verdict; the test split's scores when the run has them; why it
    failed, when it did."""
    labels = configuration_labels(runs)
    shown = display_names(runs)
    empty = frame.iloc[:0]
    groups = dict(tuple(frame.groupby("run_id", sort=False)))  # one pass, not one per run
    finals = dict(tuple(final_values(frame).groupby("run_id", sort=False)))
    rows = []
    for run in runs:
        run_id, tags = run.info.run_id, run.data.tags
        group = groups.get(run_id, empty)
        last = finals.get(run_id, empty)
        whole = last[last["class"] == ""]
        scalar = dict(zip(whole.metric, whole.value, strict=True))
        ious = last[last.metric == schema.VAL_IOU].set_index("class").value
        val_loss = group[(group.metric == schema.VAL_LOSS) & (group["class"] == "")]
        seed = run.data.params.get(schema.SEED_PARAM)
        rows.append(
            {
                "run_id": run_id,
                "run_name": shown[run_id],
                "status": run.info.status,
                "configuration": labels.get(run_id, shown[run_id]),
                "seed": int(seed) if seed not in (None, "None") else pd.NA,
                **{axis: tags.get(schema.axis_tag(axis), "") for axis in schema.AXES},
                "epochs": int(group.epoch.max()) if len(group) else 0,
                "val_loss": scalar.get(schema.VAL_LOSS, np.nan),
                "best_val_loss": val_loss.value.min() if len(val_loss) else np.nan,
                "val_ce": scalar.get(schema.VAL_CE, np.nan),
                **{
                    name: scalar.get(schema.key(schema.VAL, name), np.nan)
                    for name in schema.SPLIT_SCORES
                },
                # The run's own tag breaks ties by class index, as the run did.
                "worst_class": tags.get(
                    schema.TAG_WORST_CLASS, ious.idxmin() if ious.notna().any() else ""
                ),
                "hidden_failure": tags.get(schema.TAG_HIDDEN_FAILURE, ""),
                "hidden_classes": tags.get(schema.TAG_HIDDEN_CLASSES, ""),
                **{
                    f"test_{name}": scalar.get(schema.key(schema.TEST, name), np.nan)
                    for name in schema.SPLIT_SCORES
                },
                "failure_reason": tags.get(schema.TAG_FAILURE_REASON, ""),
            }
        )
    # Nullable: a run that never logged trainer.seed (failed before its config) has no seed.
    return pd.DataFrame(rows).astype({"seed": "Int64"}) if rows else pd.DataFrame(rows)


def grouped_summary(frame: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """:func:`summary` with each run's ``group`` of comparable runs (:func:`pooling_groups`;
    ``""`` for every run when the runs are comparable)."""
    table = summary(frame, runs)
    return table.assign(group=table.run_id.map(pooling_groups(runs))) if len(table) else table


def unfinished(runs_summary: pd.DataFrame) -> str:
    """The runs that did not finish, each with its status and reason, as one sentence part:
    ``exp1 FAILED (ValueError: ...); exp2 RUNNING``."""
    rows = runs_summary[runs_summary.status != "FINISHED"]
    return "; ".join(
        f"{name} {status}" + (f" ({reason})" if reason else "")
        for name, status, reason in zip(
            rows.run_name, rows.status, rows.failure_reason, strict=True
        )
    )


def finished_runs(runs_summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's finished runs; raises saying that no run finished, and why each ended,
    when there are none."""
    done = runs_summary[runs_summary.status == "FINISHED"]
    if done.empty:
        raise ValueError(f"no run finished: {unfinished(runs_summary) or 'there are no runs'}")
    return done


# What makes two runs' numbers incomparable, as (name, where a run keeps it).
POOLING = (
    ("datasets", ("params", "data._target_")),
    ("dataset folders", ("params", "data.root")),
    ("class sets", ("tags", schema.TAG_CLASS_NAMES)),
    ("epoch counts", ("params", "trainer.epochs")),
)


def differing_keys(runs: Sequence[Run]) -> list[tuple[str, str, str, set[str]]]:
    """The :data:`POOLING` keys on which ``runs`` differ, as ``(name, kind, key, values)``;
    runs that do not record a key (SeglabCallback's have no data.* params) are not counted."""
    found = []
    for name, (kind, key) in POOLING:
        values = {getattr(run.data, kind).get(key) for run in runs} - {None}
        if len(values) > 1:
            found.append((name, kind, key, values))
    return found


def pooling_groups(runs: Sequence[Run]) -> dict[str, str]:
    """Run id -> the label of its group of comparable runs: the values it has of the
    :data:`POOLING` keys on which ``runs`` differ (``data.root=/a, trainer.epochs=20``), ``""``
    for every run when they differ on none. A run that does not record a key is in no group of
    it (its label leaves the key out)."""
    differing = differing_keys(runs)
    return {
        run.info.run_id: ", ".join(
            f"{key}={getattr(run.data, kind)[key]}"
            for _, kind, key, _ in differing
            if key in getattr(run.data, kind)
        )
        for run in runs
    }


def pooling_warning(runs: Sequence[Run]) -> str | None:
    """A Markdown sentence naming what differs between ``runs`` that makes their numbers
    incomparable (their datasets, dataset folders, class sets or epoch counts), or ``None``.
    Runs that do not record one (SeglabCallback's have no data.* params) are not counted."""
    found = [
        f"{len(values)} {name} ({markdown_text(key)}: "
        + ", ".join(markdown_text(str(v)) for v in sorted(values, key=str)[:4])
        + ")"
        for name, _, key, values in differing_keys(runs)
    ]
    if not found:
        return None
    return (
        f"**Runs that are not comparable are pooled here**: {'; '.join(found)}. The verdict and "
        "the rankings below take each group of comparable runs apart; the tables of runs and "
        "the figures show them all (report on each apart for its own figures: one sweep, or "
        "an experiment per dataset)."
    )


def hidden_list(value: str | float) -> list[str]:
    """A summary's ``hidden_classes`` cell (comma-separated class names, blank or NaN) as a
    list."""
    return [name for name in value.split(",") if name] if isinstance(value, str) else []


@dataclass(frozen=True)
class LossStory:
    """One loss function's part of the story: its lowest-``val_loss`` run beside its best
    worst-class run (summary rows). Losses are compared only within one loss function: their
    values are on different scales."""

    loss: str
    lowest: pd.Series
    best: pd.Series
    group: str = ""  # the pooled group of comparable runs (:func:`pooling_groups`), if any

    @property
    def hides(self) -> bool:
        """Whether the lowest loss hides a failing class that another run of the same loss
        function does better on: the lowest-loss run has a hidden failure and is not the best
        worst-class run."""
        return bool(hidden_list(self.lowest.hidden_classes)) and (
            self.best.run_id != self.lowest.run_id
        )

    @property
    def failing_class(self) -> str:
        """The class to chart beside the loss: the lowest-loss run's first hidden class, else
        its worst class."""
        hidden = hidden_list(self.lowest.hidden_classes)
        return hidden[0] if hidden else str(self.lowest.worst_class)


def loss_stories(finished: pd.DataFrame) -> list[LossStory]:
    """:class:`LossStory` of each loss function of the ``finished`` runs' summary, in order of
    appearance, within each ``group`` of comparable runs when the summary has that column
    (runs with no val loss or worst-class IoU are left out)."""
    grouped = finished.assign(group=finished.get("group", ""))
    stories = []
    for (group, loss), runs in grouped.groupby(["group", "loss"], sort=False):
        scored = runs.dropna(subset=["val_loss", "min_iou"])
        if len(scored):
            lowest = scored.iloc[scored.val_loss.to_numpy().argmin()]
            best = scored.iloc[scored.min_iou.to_numpy().argmax()]
            stories.append(LossStory(str(loss), lowest, best, str(group)))
    return stories


def loss_story(finished: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The two runs that show a loss hiding a class: the lowest-``val_loss`` run of a loss
    function that has a hidden failure (of the first such loss function; else the lowest of the
    first loss function), and the best worst-class run of the same loss function."""
    stories = loss_stories(finished)
    hiding = [story for story in stories if hidden_list(story.lowest.hidden_classes)]
    shown = (hiding or stories)[0]
    return shown.lowest, shown.best


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
    ious = final[final.metric == schema.key(split, schema.IOU)].pivot(
        index="run_id", columns="class", values="value"
    )
    ious = ious.add_prefix(schema.key(split, schema.IOU, ""))
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
        local = client.download_artifacts(run_id, schema.per_image_file(split))
    except Exception as error:
        raise ValueError(
            f"run {run_id} has no {schema.per_image_file(split)} (runs from before per-image "
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


def class_order(runs: Sequence[Run]) -> list[str]:
    """Class names in index order: the runs' ``seglab.class_names`` tag, else their
    ``data.class_names`` param when it holds a list (not ``None``: names from a classes file)."""
    names: list[str] = []
    for run in runs:
        tagged = run.data.tags.get(schema.TAG_CLASS_NAMES)
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
    frame: pd.DataFrame,
    runs: Sequence[Run] = (),
    metric: str = schema.VAL_IOU,
    index: str = "run_name",
) -> pd.DataFrame:
    """Run x class matrix of the final ``metric`` (default val IoU: the heatmap's data), rows
    by ``index`` (``run_name`` or ``run_id``), classes in index order when the runs logged
    their class names."""
    final = final_values(frame)
    ious = final[final.metric == metric]
    matrix = ious.pivot(index=index, columns="class", values="value")
    known = [c for c in class_order(runs) if c in matrix.columns]
    return matrix[known + [c for c in matrix.columns if c not in known]]


def latest_sweep(sweeps: Path) -> Path:
    """The newest sweep directory in ``sweeps`` (their names are timestamps); raises saying how
    to make one when there is none."""
    found = sorted(sweeps.glob(f"*/{schema.SWEEP_FILE}"))
    if not found:
        raise ValueError(
            f"no sweep in {sweeps}: run one first (make demo, or seglab train -m ...), or name "
            "one (SEGLAB_SWEEP=<sweep dir> for the notebook, target=<sweep dir|run id|name> for "
            "seglab report)"
        )
    return found[-1].parent


def read_sweep_file(sweep_dir: str | Path) -> dict:
    """The ``sweep.json`` a multirun's callback writes into its sweep directory."""
    path = Path(sweep_dir) / schema.SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"{sweep_dir} is not a seglab sweep directory (no {schema.SWEEP_FILE})")
    return json.loads(path.read_text())
