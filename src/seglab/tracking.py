"""The only writer to MLflow: run lifecycle, metric keys, params, artifacts and tags.

Tracking URI, first match wins: ``tracking.tracking_uri`` set in the config, then the
``MLFLOW_TRACKING_URI`` environment variable (so a team points every run at an ``mlflow server``
unchanged), then ``sqlite:///<project root>/outputs/mlflow.db``.

Metric keys are paths, logged with ``step = epoch`` (1-based: step 3 is the state after the third
epoch): ``train/loss``, ``val/loss``, ``val/ce``, ``val/iou/<class>``, ``val/dice/<class>``,
``val/loss_share/<class>``, ``val/miou``, ``val/min_iou``, ``val/pixel_acc``.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seglab import plots
from seglab.augment import Augmenter, preview
from seglab.class_weights import ClassCounts
from seglab.data import SegmentationData
from seglab.metrics import hidden_failure, per_class_table
from seglab.trainer import EpochRecord

TAG_FAILURE_REASON = "seglab.failure_reason"
TAG_WORST_CLASS = "seglab.worst_class"
TAG_HIDDEN_FAILURE = "seglab.hidden_failure"
MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MAX_PARAM_LENGTH = 6000

log = logging.getLogger(__name__)


def epoch_metrics(record: EpochRecord, class_names: Sequence[str]) -> dict[str, float]:
    """The metric dict logged for one epoch, keyed by metric path."""
    scores = record.scores
    metrics = {
        "train/loss": record.train_loss,
        "val/loss": record.val_loss,
        "val/ce": record.val_ce,
        "val/miou": scores.miou,
        "val/min_iou": scores.min_iou,
        "val/pixel_acc": scores.pixel_acc,
    }
    for c, name in enumerate(class_names):
        metrics[f"val/iou/{name}"] = float(scores.iou[c])
        metrics[f"val/dice/{name}"] = float(scores.dice[c])
        metrics[f"val/loss_share/{name}"] = float(record.loss_share[c])
    return metrics


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


class MlflowTracker:
    """Opens one MLflow run and writes everything seglab logs into it.

    Args:
        experiment_name: MLflow experiment to log into (created if missing).
        tracking_uri: Explicit tracking URI; ``None`` defers to ``MLFLOW_TRACKING_URI``, then to
            ``default_uri``.
        default_uri: URI used when neither of the above is set.
        artifact_root: Artifact location for experiments this tracker creates in a local
            (sqlite or file) store; ignored for a server, which decides its own.
        run_name: Name shown in the MLflow UI (``None``: MLflow picks one).
    """

    def __init__(
        self,
        experiment_name: str = "seglab",
        tracking_uri: str | None = None,
        default_uri: str = "sqlite:///outputs/mlflow.db",
        artifact_root: str | None = None,
        run_name: str | None = None,
    ) -> None:
        self.experiment_name = experiment_name
        self.uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri
        self.artifact_root = artifact_root
        self.run_name = run_name
        self.run_id: str | None = None
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            if self.uri.startswith("sqlite:///"):
                Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            for name in ("alembic", "mlflow.store.db.utils"):  # schema-migration chatter
                logging.getLogger(name).setLevel(logging.WARNING)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self) -> str:
        """Id of the experiment, creating it (race-safe) on first use."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.artifact_root and not self.uri.startswith(("http://", "https://", "databricks")):
            location = Path(self.artifact_root, self.experiment_name).resolve().as_uri()
        try:
            return self.client.create_experiment(self.experiment_name, location)
        except MlflowException:  # created meanwhile by a parallel job
            return self.client.get_experiment_by_name(self.experiment_name).experiment_id

    @contextmanager
    def start_run(self, tags: Mapping[str, str] | None = None) -> Iterator[MlflowTracker]:
        """Opens a run; it ends FINISHED, FAILED (reason tagged) or KILLED (Ctrl-C/SIGTERM)."""
        run = self.client.create_run(
            self.experiment_id(), run_name=self.run_name, tags=dict(tags or {})
        )
        self.run_id = run.info.run_id
        log.info(
            "MLflow run %s in experiment %r at %s", self.run_id, self.experiment_name, self.uri
        )
        try:
            yield self
        except KeyboardInterrupt:
            self._end(RunStatus.KILLED, "interrupted (Ctrl-C or SIGTERM)")
            raise
        except BaseException as error:
            self._end(RunStatus.FAILED, f"{type(error).__name__}: {error}")
            raise
        else:
            self._end(RunStatus.FINISHED)

    def _end(self, status: int, reason: str | None = None) -> None:
        if reason:
            self.client.set_tag(self.run_id, TAG_FAILURE_REASON, reason[:MAX_PARAM_LENGTH])
        self.client.set_terminated(self.run_id, RunStatus.to_string(status))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """All metrics of one step in one batched call."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_config(self, config: Mapping[str, Any], yaml_text: str) -> None:
        """The resolved config, flattened into params and whole as ``config.yaml``."""
        self.log_params(flatten(config))
        self.log_text(yaml_text, "config.yaml")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

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

    def log_class_weights(
        self,
        class_names: Sequence[str],
        counts: ClassCounts,
        weights: np.ndarray | None,
        scheme: str,
    ) -> None:
        """Params ``class_weight/<class>`` (the scheme name when there are no dataset weights)
        and ``class_weights.csv`` with the training counts they came from."""
        shown = [scheme] * len(class_names) if weights is None else [f"{w:.6g}" for w in weights]
        self.log_params({f"class_weight/{n}": w for n, w in zip(class_names, shown, strict=True)})
        table = pd.DataFrame(
            {
                "class": list(class_names),
                "train_pixels": counts.pixels,
                "train_pixel_share": counts.pixel_share,
                "train_images": counts.images,
                "weight": np.nan if weights is None else weights,
            }
        )
        self.log_table(table, "class_weights.csv")

    def log_augmentation(self, augmenter: Augmenter, data: SegmentationData, seed: int) -> None:
        """``figures/augmented_samples.png``: training samples as three epochs draw them."""
        images, masks = preview(augmenter, data.train, seed=seed)
        title = f"augment strength {augmenter.strength:g}"
        figure = plots.augmentation_grid(images, masks, data.class_names, title)
        self.log_figure(figure, "figures/augmented_samples.png")

    def log_summary(
        self,
        history: Sequence[EpochRecord],
        class_names: Sequence[str],
        train_pixel_share: np.ndarray,
        class_weights: np.ndarray | None,
        samples: tuple[np.ndarray, np.ndarray, np.ndarray],
        rule: Mapping[str, float],
    ) -> tuple[pd.DataFrame, dict[str, str]]:
        """End-of-run artifacts and tags; returns the per-class table and the tags.

        Artifacts: ``figures/loss_vs_class_iou.png`` (the mismatch at a glance),
        ``figures/confusion_matrix.png`` and ``confusion_matrix.csv``,
        ``figures/val_overlays.png``, ``per_class.csv``. Tags: ``seglab.worst_class`` and
        ``seglab.hidden_failure`` (see :func:`seglab.metrics.hidden_failure`, thresholds from
        ``rule``), both from the last epoch.
        """
        final = history[-1]
        epochs = [r.epoch for r in history]
        losses = {
            "train/loss": [r.train_loss for r in history],
            "val/loss": [r.val_loss for r in history],
        }
        ious = {name: [r.scores.iou[c] for r in history] for c, name in enumerate(class_names)}
        self.log_figure(
            plots.loss_and_class_iou(epochs, losses, ious), "figures/loss_vs_class_iou.png"
        )
        self.log_figure(
            plots.confusion_matrix(final.confusion, class_names), "figures/confusion_matrix.png"
        )
        self.log_table(
            pd.DataFrame(final.confusion, index=class_names, columns=class_names)
            .rename_axis("true\\predicted")
            .reset_index(),
            "confusion_matrix.csv",
        )
        self.log_figure(plots.overlays(*samples, class_names), "figures/val_overlays.png")
        table = per_class_table(
            final.scores, class_names, train_pixel_share, final.loss_share, class_weights
        )
        self.log_table(table, "per_class.csv")
        worst = final.scores.worst_class
        tags = {
            TAG_WORST_CLASS: class_names[worst] if worst >= 0 else "none",
            TAG_HIDDEN_FAILURE: str(hidden_failure(final.scores, **rule)).lower(),
        }
        self.set_tags(tags)
        return table, tags
