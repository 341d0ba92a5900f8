"""The writer of one MLflow run: its lifecycle (FINISHED, FAILED or KILLED with the reason),
params, tags, metrics and artifacts. Which keys and paths it writes is :mod:`seglab.schema`'s;
what a seglab run writes, and when, is :class:`seglab.tracking.run_log.RunLog`'s."""

from __future__ import annotations

import io
import logging
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus, RunTag

from seglab import schema, signals
from seglab.tracking.store import TrackingStore

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MAX_PARAM_LENGTH = 6000
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-. ]{0,199}")
# The failure reason of a run the scheduler stopped, after what stopped it.
REQUEUED = "a job the scheduler requeues continues this run with resume=auto"

log = logging.getLogger(__name__)


def default_run_name(tags: Mapping[str, str]) -> str:
    """``<loss>-<class weights>-<6 hex>``: what the run is, and a suffix from the OS's
    randomness (MLflow's own names come from Python's ``random``, which ``trainer.seed`` seeds:
    every seed-0 run would be called the same)."""
    parts = [tags.get(schema.axis_tag(axis)) for axis in ("loss", "class_weights")]
    return "-".join([*(p for p in parts if p), secrets.token_hex(3)])


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` with values as strings (MLflow params)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{path}."))
        else:
            flat[path] = str(value)
    return flat


class MlflowTracker(TrackingStore):
    """Opens one MLflow run and writes into it.

    Args:
        experiment_name: MLflow experiment to log into (created if missing).
        tracking_uri: Explicit tracking URI; ``None`` defers to ``MLFLOW_TRACKING_URI``, then to
            ``default_uri``.
        default_uri: URI used when neither of the above is set (``None``: the project's
            ``outputs/mlflow.db``).
        artifact_root: Artifact location for experiments this tracker creates in a local
            (sqlite) store; ignored for a server, which decides its own.
        run_name: Name shown in the MLflow UI (``None``: the run's loss and class-weight tags and
            a random suffix, drawn apart from the seeded random generators, so runs of the same
            seed do not share a name).
        log_model: Log the best checkpoint as the run's MLflow model ``model`` (1.4 MB and
            0.3-1.5 s per run at the default size).
    """

    def __init__(
        self,
        experiment_name: str = "seglab",
        tracking_uri: str | None = None,
        default_uri: str | None = None,
        artifact_root: str | None = None,
        run_name: str | None = None,
        log_model: bool = True,
    ) -> None:
        if not EXPERIMENT_NAME.fullmatch(experiment_name):
            raise ValueError(
                f"tracking.experiment_name={experiment_name!r}: use letters, digits and "
                "'_-. ' only, not starting with '.' (it names a folder under the artifact root)"
            )
        super().__init__(experiment_name, tracking_uri, default_uri, artifact_root)
        self.log_model_enabled = log_model
        self.run_name = run_name
        self._run_id: str | None = None
        self._history: list[tuple[str, int, float]] = []  # every point of _history_run
        self._history_run: str | None = None

    @property
    def run_id(self) -> str:
        """The open run's id; raises when no run is open."""
        if self._run_id is None:
            raise RuntimeError("no MLflow run is open: start_run() first, or set run_id")
        return self._run_id

    @run_id.setter
    def run_id(self, value: str) -> None:
        self._run_id = value

    @contextmanager
    def start_run(
        self,
        tags: Mapping[str, str] | None = None,
        resume_run_id: str | None = None,
        attach_run_id: str | None = None,
    ) -> Iterator[MlflowTracker]:
        """Opens a run (or reopens ``resume_run_id``); it ends FINISHED, FAILED (reason tagged)
        or KILLED (Ctrl-C/SIGTERM, or preempted by the scheduler).

        ``attach_run_id`` names an open run whose owner ends it (an active MLflow run): it gets
        ``tags``, and the reason when the block fails, but this block leaves its status alone.
        """
        if attach_run_id is not None:
            self.run_id = attach_run_id
            self.set_tags(tags or {})
            try:
                yield self
            except BaseException as error:
                self.set_tags({schema.TAG_FAILURE_REASON: f"{type(error).__name__}: {error}"})
                raise
            return
        if resume_run_id is None:
            tags = dict(tags or {})
            name = self.run_name or default_run_name(tags)
            run = self.client.create_run(self.experiment_id(), run_name=name, tags=tags)
            self.run_id = run.info.run_id
            self._history, self._history_run = [], self.run_id  # a new run has no points
        else:
            self.reopen(resume_run_id, tags or {})
        log.info(
            "MLflow run %s in experiment %r at %s", self.run_id, self.experiment_name, self.uri
        )
        try:
            yield self
        except KeyboardInterrupt:
            signals.acknowledge()  # or ending the run would raise it again
            self.end(RunStatus.KILLED, "interrupted (Ctrl-C or SIGTERM)")
            raise
        except signals.Preempted as preempted:
            signals.acknowledge()
            self.end(RunStatus.KILLED, f"{preempted}: {REQUEUED}")
            raise
        except BaseException as error:
            self.end(RunStatus.FAILED, f"{type(error).__name__}: {error}")
            raise
        else:
            self.end(RunStatus.FINISHED)

    def reopen(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Makes ``run_id`` this tracker's run again, RUNNING, with ``tags`` (this job's: its
        sweep's parent, its trial), renamed when :attr:`run_name` is set (a search's rerun of a
        trial is named by its own number), and without the reason it ended."""
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING", name=self.run_name)
        if schema.TAG_FAILURE_REASON in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, schema.TAG_FAILURE_REASON)
        self.set_tags(tags)

    def end(self, status: int, reason: str | None = None) -> None:
        """Ends this tracker's run with ``status`` (a ``RunStatus``), tagging ``reason``."""
        if reason:
            self.set_tags({schema.TAG_FAILURE_REASON: reason})
        self.client.set_terminated(self.run_id, RunStatus.to_string(status))

    def logged_steps(self, key: str) -> list[int]:
        """Steps at which ``key`` was logged in this run."""
        return sorted(m.step for m in self.client.get_metric_history(self.run_id, key))

    def metric_values(self, key: str) -> list[float]:
        """The values of ``key`` logged in this run, in step order."""
        history = self.client.get_metric_history(self.run_id, key)
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """All metrics of one step in one batched call, then the run's whole metric history as
        the artifact ``metric_history.parquet`` (:data:`seglab.schema.HISTORY_FILE`): a reader gets
        every point in one download instead of one call per metric key."""
        if self._history_run != self.run_id:  # a run reopened or attached: its points so far
            self._history = [
                (key, point.step, point.value)
                for key in self.client.get_run(self.run_id).data.metrics
                for point in self.client.get_metric_history(self.run_id, key)
            ]
            self._history_run = self.run_id
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)
        self._history += [(m.key, step, m.value) for m in batch]
        frame = pd.DataFrame(self._history, columns=list(schema.HISTORY_COLUMNS))
        self.log_parquet(frame, schema.HISTORY_FILE)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_config(self, config: Mapping[str, Any], yaml_text: str) -> None:
        """The resolved config, flattened into params and whole as ``config.yaml``."""
        self.log_params(flatten(config))
        self.log_text(yaml_text, schema.CONFIG_FILE)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags as strings, cut to MLflow's length limit (a failure reason can be long)."""
        items = [RunTag(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in tags.items()]
        self.client.log_batch(self.run_id, tags=items)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        """Logs a figure as an image artifact and closes it."""
        self.client.log_figure(self.run_id, figure, artifact_file)
        plt.close(figure)

    def log_table(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """A data frame as CSV (lossless) under ``artifact_file``."""
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        self.log_text(buffer.getvalue(), artifact_file)

    def log_image(self, picture: np.ndarray, artifact_file: str) -> None:
        """An image (an ``uint8`` array) as the PNG artifact ``artifact_file``."""
        self.client.log_image(self.run_id, picture, artifact_file=artifact_file)

    def log_parquet(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """A data frame as Parquet (typed, compact) under ``artifact_file``."""
        self.log_written(lambda local: frame.to_parquet(local, index=False), artifact_file)

    def log_written(self, write: Callable[[Path], object], artifact_file: str) -> None:
        """Logs what ``write(path)`` writes to a temporary file as ``artifact_file`` (a
        writer that takes a path only, such as ``model.save_weights``)."""
        path = Path(artifact_file)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / path.name
            write(local)
            self.client.log_artifact(
                self.run_id, str(local), str(path.parent) if path.parent != Path(".") else None
            )

    def open_run(self, tags: Mapping[str, str], run_name: str) -> str:
        """Creates a run that outlives this process's block (a sweep's parent); returns its id
        and makes it this tracker's run. :meth:`end` ends it."""
        run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        return self.run_id
