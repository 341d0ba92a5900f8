"""Hydra multirun -> one MLflow parent run with every job nested under it.

``conf/hydra/callbacks/mlflow_sweep.yaml`` registers :class:`MlflowSweepCallback`. At
``on_multirun_start`` it opens the parent run and writes ``sweep.json`` (parent run id, job
count, start time) into the sweep directory; every job, in whatever process or host the launcher
puts it, reads that file and tags its run ``mlflow.parentRunId``. At ``on_multirun_end`` the
parent gets the sweep table and figures (see :mod:`seglab.report`) and ends FINISHED, or FAILED
when any job failed or made no run; then the process exits 1, so a script or CI step running the
sweep sees the failure (every other job has still run and been logged). Ctrl-C or SIGTERM during
an in-process sweep ends the parent KILLED, with the report of the jobs that finished and the
list of those that ran (:func:`end_sweep`, called by the interrupted job).

A search (``hydra/sweeper=optuna``) opens its parent itself, once its space is checked, and a
resumed search reopens its study's parent (:func:`start_sweep`); its report adds the study's
Pareto front, parameter importances and best trials (:mod:`seglab.analysis.search`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from mlflow.entities import RunStatus
from omegaconf import DictConfig

from seglab import schema
from seglab.analysis.runs import child_runs, read_sweep_file
from seglab.analysis.story import terminal_text
from seglab.tracking.study import is_search, load_study
from seglab.tracking.tracker import MlflowTracker

if TYPE_CHECKING:
    from mlflow.entities import Run

    from seglab.analysis.report import Report  # matplotlib, pandas: at the end only


def swept(overrides: list[str], params: dict[str, str] | None = None) -> dict[str, int]:
    """The keys a basic sweep varies and how many values each takes, from the command-line
    ``overrides`` and the config's ``hydra.sweeper.params`` (the command line wins)."""
    parser = OverridesParser.create()
    given = [f"{k}={v}" for k, v in (params or {}).items()]
    by_key = {o.key_or_group: o for o in parser.parse_overrides(given)}
    by_key.update({o.key_or_group: o for o in parser.parse_overrides(overrides)})
    return {
        key: len(list(o.sweep_string_iterator()))
        for key, o in by_key.items()
        if o.is_sweep_override()
    }


def count_jobs(overrides: list[str], params: dict[str, str] | None = None) -> int:
    """Jobs a basic sweep launches: the product of the swept keys' value counts."""
    return math.prod(swept(overrides, params).values())


def run_name(job_overrides: list[str], swept_keys: list[str]) -> str:
    """A child run's name: the job's values of the swept keys, short enough for the MLflow
    UI's name column: ``dice,median_frequency``; a number keeps the last part of its key
    (``dice,seed=2``), or it would say nothing, and a sampled one three digits
    (``gamma=2.41``)."""
    parts = []
    for override in job_overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in swept_keys:
            try:
                shown = value if value.lstrip("-").isdigit() else f"{float(value):.3g}"
            except ValueError:
                parts.append(value)
                continue
            parts.append(f"{key.lstrip('+~').rsplit('.', 1)[-1]}={shown}")
    return ",".join(parts)


# Colours the MLflow UI draws a sweep's runs in, by job number (matplotlib's tab10: the UI's own
# choice gives neighbouring runs shades of one hue).
RUN_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def run_colour(job_num: int) -> str:
    """The MLflow UI colour of a sweep's job ``job_num`` (``mlflow.runColor``)."""
    return RUN_COLOURS[job_num % len(RUN_COLOURS)]


def job_context() -> dict[str, Any] | None:
    """Inside a multirun job: its sweep file plus the job's number and overrides, else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    sweep = read_sweep_file(hydra.sweep.dir)
    return {**sweep, "job_num": hydra.job.num, "overrides": list(hydra.overrides.task)}


def stopped_alone(launcher: str) -> str | None:
    """How the signal that stopped a sweep job reached it alone, or ``None`` when it stopped
    the whole sweep. A SLURM job (``scancel``) and a Ray task (a signal to its worker's process)
    run in processes of their own: the sweep's other jobs go on. A job of Hydra's basic
    ``launcher`` (its ``_target_``) runs in the sweep's process, whose signal it is, even inside
    a SLURM allocation (``srun --pty bash``, where ``SLURM_JOB_ID`` is set too)."""
    if launcher.endswith(".BasicLauncher"):
        return None
    if os.environ.get("SLURM_JOB_ID"):
        return "scancel of its SLURM job"
    ray = sys.modules.get("ray")  # imported by Hydra's Ray launcher, in its workers too
    if ray is not None and ray.is_initialized() and ray.get_runtime_context().get_task_id():
        return "a signal to its Ray worker"
    return None


def job_store(explicit: str | None) -> str | None:
    """The store a run logs to: ``explicit`` (``tracking.tracking_uri``), else in a sweep job its
    sweep's, where the parent run is, whatever the job's environment says (a Ray worker does not
    inherit the submitting shell's ``MLFLOW_TRACKING_URI``); else ``None`` (the usual order)."""
    sweep = None if explicit else job_context()
    return sweep["tracking_uri"] if sweep is not None else explicit


def start_sweep(
    config: DictConfig,
    total: int,
    swept_keys: list[str],
    search: dict[str, str] | None = None,
    parent_id: str | None = None,
) -> MlflowTracker:
    """Opens a sweep's parent run (or reopens ``parent_id``, a resumed search's) and writes
    ``sweep.json`` for its jobs: the parent, ``total`` jobs, the ``swept_keys`` that name
    them and, for a search, where its study is (``search``). Returns the tracker, its run the
    parent."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tracker = instantiate(config.tracking)
    tracker.check()
    overrides = list(config.hydra.overrides.task)
    tags = {
        schema.TAG_SWEEP: schema.SWEEP_PARENT,
        schema.TAG_SWEEP_DIR: str(sweep_dir),
        schema.TAG_SWEEP_OVERRIDES: " ".join(overrides),
    }
    if parent_id is None:
        parent_id = tracker.open_run(tags, f"sweep {sweep_dir.name}")
    else:
        tracker.reopen(parent_id, tags)
    info = {
        "parent_run_id": parent_id,
        "tracking_uri": tracker.uri,
        "experiment_name": tracker.experiment_name,
        "total_jobs": total,
        "swept_keys": swept_keys,
        "start_time": time.time(),
        **(search or {}),
    }
    (sweep_dir / schema.SWEEP_FILE).write_text(json.dumps(info, indent=2))
    print(f"[sweep] {total} jobs; parent MLflow run {parent_id}; {sweep_dir}", flush=True)
    return tracker


class MlflowSweepCallback(Callback):
    """Parent/child MLflow runs and a progress line for every Hydra multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_search(config.hydra.sweeper):
            return  # the search opens its parent once its space is checked (seglab.search)
        params = config.hydra.sweeper.get("params") or {}
        overrides = list(config.hydra.overrides.task)
        axes = swept(overrides, {str(k): str(v) for k, v in params.items()})
        start_sweep(config, math.prod(axes.values()), list(axes))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        context = job_context()
        if context is not None:
            elapsed = time.time() - context["start_time"]
            print(
                f"[sweep] job {context['job_num'] + 1}/{context['total_jobs']} started at "
                f"+{elapsed:.0f}s: {','.join(context['overrides'])}",
                flush=True,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tracker = instantiate(config.tracking)
        if not end_sweep(Path(config.hydra.sweep.dir), tracker):
            # Hydra turns a callback's Exception into a warning; SystemExit is not an Exception.
            raise SystemExit(1)


def add_study(report: Report, info: dict[str, Any], runs: list[Run]) -> None:
    """A search's section in the report of its sweep (``info``: its ``sweep.json``), if it is
    one."""
    if "study" in info:
        from seglab.analysis.search import add_search  # optuna: only for a search

        add_search(report, load_study(info["study"], info["storage"]), runs)


def end_sweep(sweep_dir: Path, tracker: MlflowTracker, interrupted: bool = False) -> bool:
    """Ends a sweep's parent run: the report of its finished jobs, tags ``seglab.jobs``,
    ``seglab.failed_jobs`` and ``seglab.jobs_run`` (the names of the jobs that made a run),
    and its status: FINISHED, FAILED (a job failed or made no run, or the report failed) or
    KILLED (``interrupted``: Ctrl-C or SIGTERM stopped the sweep). Returns whether it
    FINISHED."""
    info = read_sweep_file(sweep_dir)
    tracker.run_id = info["parent_run_id"]
    children = child_runs(tracker.client, tracker.run_id)
    failed = [r.info.run_name for r in children if r.info.status != "FINISHED"]
    report_error, report, written = None, None, None
    try:
        from seglab.analysis.report import build_report  # matplotlib, pandas: at the end only

        report = build_report(tracker.client, children, tracker.links)
        if report is not None:
            add_study(report, info, children)
            report.write(sweep_dir / "report")
            written = sweep_dir / "report"
            print(report.terminal(), flush=True)
            tracker.log_text(report.markdown(True, schema.FIGURES), schema.SWEEP_REPORT_FILE)
            tracker.log_text(report.html(), schema.SWEEP_REPORT_HTML)
            tracker.log_table(report.summary, schema.SWEEP_SUMMARY_FILE)
            tracker.log_table(report.history, schema.SWEEP_HISTORY_FILE)
            for name, figure in report.figures.items():
                tracker.log_figure(figure, f"{schema.FIGURES}{name}.png")
    except Exception as error:  # the parent must still end, with the reason
        report_error = f"{type(error).__name__}: {error}"
        print(f"[sweep] the report failed: {report_error}", file=sys.stderr, flush=True)
    tags: dict[str, object] = {
        schema.TAG_JOBS: len(children),
        schema.TAG_FAILED_JOBS: len(failed),
        schema.TAG_JOBS_RUN: ", ".join(f"{r.info.run_name} ({r.info.status})" for r in children),
    }
    if report_error:
        tags[schema.TAG_REPORT_ERROR] = report_error
    if report is not None:
        tags[schema.NOTE] = report.description
    if interrupted:
        tags[schema.TAG_FAILURE_REASON] = (
            f"interrupted (Ctrl-C or SIGTERM) after {len(children)} of {info['total_jobs']} jobs"
        )
    tracker.set_tags(tags)
    missing = info["total_jobs"] - len(children)  # jobs that never made a run
    if interrupted:
        status = RunStatus.KILLED
    elif failed or missing > 0 or report_error:
        status = RunStatus.FAILED
    else:
        status = RunStatus.FINISHED
    tracker.end(status)
    elapsed = time.time() - info["start_time"]
    where = f"report in {written}" if written else "no report"
    experiment = tracker.experiment_id()
    print(
        f"[sweep] {len(children)} jobs in {elapsed:.0f}s; parent run {tracker.run_id} "
        f"{RunStatus.to_string(status)}; {where}",
        *(f"[sweep] {terminal_text(line)}" for line in (report.verdict if report else [])),
        f"[sweep] in the MLflow UI (make ui): {tracker.links.run(experiment, tracker.run_id)}",
        sep="\n",
        flush=True,
    )
    if (failed or missing > 0) and not interrupted:
        none = "no run finished; " if len(failed) == len(children) else ""
        reasons = [
            f"[sweep]   {r.info.run_name}: {r.data.tags.get(schema.TAG_FAILURE_REASON, '')}"
            for r in children
            if r.info.status != "FINISHED"
        ]
        print(
            f"[sweep] {none}{len(failed)} of {info['total_jobs']} jobs FAILED: {failed}; each "
            f"is FAILED in MLflow with its reason in the tag {schema.TAG_FAILURE_REASON}"
            + (f"; {missing} jobs made no MLflow run (see their logs)" if missing > 0 else ""),
            *reasons,
            sep="\n",
            file=sys.stderr,
            flush=True,
        )
    return status == RunStatus.FINISHED
