"""A run's record, one object: what a seglab run logs to MLflow and prints, and when.

:class:`RunLog` owns one training run's record from start (or resume) to end: the run's params
and tags, each epoch's metrics and hidden-failure verdict, the checkpoints (last, and best by the
worst class), the failure gallery, the end-of-run tables and figures, the test split's scores
and the best checkpoint as the run's MLflow model. Whatever trains the model drives it: seglab's
shared trainer (:func:`seglab.train.run`) calls :meth:`RunLog.epoch` after every epoch and
:meth:`RunLog.finish` at the end::

    log = RunLog(tracker, class_names, checkpoint_dir, epochs=8)
    with log.open(tags, config, config_yaml, resume=False, fingerprint=fingerprint):
        history = trainer.fit(..., on_epoch=lambda record: log.epoch(record, model))
        log.finish(history, model, data, batch_size=16)

and so does the Keras callback of any ``model.fit`` (:class:`seglab.keras.SeglabCallback`),
with no checkpoint folder (the best epoch's weights stay in memory) and :meth:`RunLog.summarize`
for the end of the run, from the evidence of its own validation pass.

Keys, tags and artifact paths are :mod:`seglab.schema`'s.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from seglab import schema
from seglab.core.class_weights import ClassCounts
from seglab.core.per_image import PerImageCounts, split_metrics
from seglab.core.records import EpochRecord
from seglab.core.scores import Scores, per_class_table
from seglab.core.verdicts import HiddenFailureRule, hidden_classes
from seglab.figures import run as figures
from seglab.figures.gallery import Gallery
from seglab.figures.style import palette
from seglab.paths import project_root
from seglab.tracking import console
from seglab.tracking.models import log_model
from seglab.tracking.provenance import provenance_tags
from seglab.tracking.resume import resumable_run
from seglab.tracking.runlock import RunLock
from seglab.tracking.tracker import MlflowTracker, flatten
from seglab.training.checkpoints import Checkpointer, check_metric_names, check_selection
from seglab.training.prediction import (
    Predictor,
    SplitScores,
    label_predictor,
    predict_samples,
    score_split,
)

if TYPE_CHECKING:
    import keras

    from seglab.data.augment import Augmenter
    from seglab.data.dataset import SegmentationData


def epoch_metrics(
    record: EpochRecord, class_names: Sequence[str], hidden: Sequence[int] = ()
) -> dict[str, float]:
    """The metric dict logged for one epoch, keyed by metric path; ``hidden`` are the indices
    of the classes whose failure the loss hides so far
    (:func:`seglab.core.verdicts.hidden_classes`)."""
    scores = record.scores
    metrics = {
        schema.TRAIN_LOSS: record.train_loss,
        schema.VAL_LOSS: record.val_loss,
        schema.VAL_CE: record.val_ce,
        schema.key(schema.VAL, schema.HIDDEN_COUNT): float(len(hidden)),
    }
    for score in schema.EPOCH_SCORES[:-1]:  # all but the hidden count: attributes of Scores
        metrics[schema.key(schema.VAL, score)] = float(getattr(scores, score))
    per_class: dict[str, Sequence[float] | np.ndarray] = {
        schema.IOU: scores.iou,
        schema.DICE: scores.dice,
        schema.RECALL: scores.recall,
        schema.PREDICTED_SHARE: scores.predicted_share,
        schema.LOSS_SHARE: record.loss_share,
        schema.HIDDEN: [float(c in hidden) for c in range(len(class_names))],
    }
    for kind in schema.EPOCH_KINDS:
        for c, name in enumerate(class_names):
            metrics[schema.per_class(schema.VAL, kind, name)] = float(per_class[kind][c])
    return metrics


def verdict_line(final: EpochRecord, tags: Mapping[str, str]) -> str:
    """One line a person reads first: the loss, the worst class, the hidden failures."""
    hidden = tags[schema.TAG_HIDDEN_CLASSES]
    return (
        f"{schema.VAL_LOSS} {final.val_loss:.4g}, mIoU {final.scores.miou:.3f}, worst class "
        f"{tags[schema.TAG_WORST_CLASS]} (IoU {final.scores.min_iou:.3f}); "
        + (f"hidden failures: {hidden}" if hidden else "no hidden failure")
    )


def model_metadata(data: SegmentationData, epoch: int) -> dict[str, object]:
    """What the logged model needs besides its weights to be used: :mod:`seglab.predict`
    reads the class names and colours from here."""
    colors = data.colors or (palette(data.num_classes) * 255).round().astype(int).tolist()
    return {
        "class_names": list(data.class_names),
        "colors": [list(map(int, c)) for c in colors],
        "ignore_index": data.ignore_index,
        "image_shape": list(data.image_shape),
        "checkpoint_epoch": epoch,
    }


@dataclass(frozen=True)
class RunSummary:
    """What the end of a run printed and tagged.

    Attributes:
        final: The last epoch's record.
        table: The per-class table (``per_class.csv``).
        tags: The verdict tags (worst class, hidden failures, the note).
        test: The test split's scores of the best checkpoint, if the data has a test split.
        best_epoch: The epoch of the best checkpoint.
    """

    final: EpochRecord
    table: pd.DataFrame
    tags: dict[str, str]
    test: Scores | None
    best_epoch: int


class RunLog:
    """One training run's record in MLflow, its checkpoints and what it prints.

    Args:
        tracker: The store and experiment to log into (its run name and ``log_model`` option).
        class_names: One name per class index.
        checkpoint_dir: Where runs keep their checkpoints: this run's are in
            ``<checkpoint_dir>/<run id>`` (``None``: none on disk, so no resume; the best
            epoch's weights are kept in memory).
        epochs: The epochs the run trains (the epoch lines print ``epoch 3/8``).
        rule: Thresholds of the hidden-failure verdict.
        monitor: Metric that selects the best checkpoint (default: the worst class's IoU).
        mode: ``max`` or ``min`` for ``monitor``.
        tie_breaker: Metric that decides between epochs whose monitor ties.
        tie_tolerance: Monitor values this close tie.
        gallery: The failure gallery drawn every epoch (``None``: none).
        train_counts: The training split's class counts (the per-class table's pixel shares,
            ``class_weights.csv``); ``None``: not counted.
        class_weights: The class weights the loss uses (``None``: none).
        weight_scheme: The name of the scheme that made them.
        started: ``time.perf_counter()`` when the run's setup began (the setup's seconds are
            tagged from it; default: now).
        predictor: Makes the one label predictor of a model that the gallery and the end of
            the run share (default: a traced TensorFlow
            :class:`~seglab.training.prediction.LabelPredictor`).
        job_log: The log file of the job that runs this (its folder is the run's folder), which
            the end of the run names (``None``: none).

    Raises:
        ValueError: On a checkpoint option that names no logged metric or is out of range.
    """

    def __init__(
        self,
        tracker: MlflowTracker,
        class_names: Sequence[str],
        checkpoint_dir: str | Path | None,
        *,
        epochs: int,
        rule: HiddenFailureRule | None = None,
        monitor: str = schema.VAL_MIN_IOU,
        mode: str = "max",
        tie_breaker: str = schema.VAL_MIOU,
        tie_tolerance: float = 0.01,
        gallery: Gallery | None = None,
        train_counts: ClassCounts | None = None,
        class_weights: np.ndarray | None = None,
        weight_scheme: str = "none",
        started: float | None = None,
        predictor: Callable[[keras.Model], Predictor] = label_predictor,
        job_log: str | Path | None = None,
    ) -> None:
        check_selection(mode, tie_tolerance)
        check_metric_names(monitor, tie_breaker, schema.epoch_metric_keys(class_names))
        self.tracker = tracker
        self.class_names = list(class_names)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.epochs = epochs
        self.rule = rule or HiddenFailureRule()
        self.selection = (monitor, mode, tie_breaker, tie_tolerance)
        self.gallery = gallery
        self.train_counts = train_counts
        self.class_weights = class_weights
        self.weight_scheme = weight_scheme
        self.started = time.perf_counter() if started is None else started
        self.job_log = None if job_log is None else Path(job_log)
        self.resumed_at: int | None = None  # the epoch a resumed run continues after
        self.val_losses: list[float] = []  # the whole run's, for the hidden-failure verdict
        self._checkpoints: Checkpointer | None = None
        self._lock: RunLock | None = None
        self._make_predictor = predictor
        self._predictor: Predictor | None = None
        self._training_started = self._training_ended = 0.0
        self._boundary_seconds = 0.0  # of the end of the run, in the boundary scores
        self._summary: RunSummary | None = None

    @property
    def checkpoints(self) -> Checkpointer:
        """The open run's checkpoints."""
        if self._checkpoints is None:
            raise RuntimeError("no run is open: RunLog.open() first")
        return self._checkpoints

    @property
    def resumed(self) -> bool:
        """Whether the open run continues an earlier one (its checkpoint restores the model)."""
        return self.resumed_at is not None

    @contextmanager
    def open(
        self,
        tags: Mapping[str, str],
        config: Mapping[str, Any],
        config_yaml: str,
        resume: bool | str = False,
        fingerprint: Mapping[str, str] | None = None,
        attach_run_id: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Iterator[RunLog]:
        """Checks the store, starts the run or reopens the one ``resume`` names (see
        :func:`seglab.tracking.resume.resumable_run`), claims it for this process and ends it
        FINISHED, FAILED or KILLED with the block; prints the run's summary after it finished.

        A new run gets ``tags`` (plus the class names, the data's ``fingerprint`` and the
        provenance tags), the resolved ``config`` and ``params`` as params and ``config.yaml``,
        and the class weights (:meth:`log_class_weights`). ``attach_run_id`` names a run
        someone else opened and ends (an active MLflow run): it gets the same, and a failure's
        reason, but keeps its status.
        """
        self.tracker.check()
        fingerprint = dict(fingerprint or {})
        flat = flatten(config)
        folder = self.checkpoint_dir
        if folder is None or attach_run_id is not None:
            if resume:
                raise ValueError("a run without a checkpoint folder, or attached, cannot resume")
            resume_id = None
        else:
            resume_id = resumable_run(self.tracker, resume, folder, flat, fingerprint)
        tags = {
            **tags,
            **provenance_tags(project_root()),
            schema.TAG_CLASS_NAMES: json.dumps(self.class_names),
            schema.TAG_DATA_FINGERPRINT: json.dumps(fingerprint),
        }
        lock = RunLock()  # this process trains the run: nobody may resume it meanwhile
        try:
            if folder is not None and resume_id is not None:  # claimed before the run reopens
                lock.acquire(folder / resume_id, resume_id)
                # A damaged checkpoint is named while the run's status is still its own.
                Checkpointer(folder / resume_id, *self.selection).verify()
            with self.tracker.start_run(tags, resume_id, attach_run_id) as tracker:
                run_dir = None if folder is None else folder / tracker.run_id
                if run_dir is not None and resume_id is None:
                    lock.acquire(run_dir, tracker.run_id)
                    self._lock = lock
                self._checkpoints = Checkpointer(run_dir, *self.selection)
                if resume_id is None:
                    tracker.log_config(config, config_yaml)
                    tracker.log_params(params or {})
                    self.log_class_weights()
                else:
                    self._reopen()
                self._training_started = time.perf_counter()
                yield self
        finally:
            lock.release()
        if self._summary is not None:
            self._print_summary(self._summary)

    def _reopen(self) -> None:
        """A resumed run's bookkeeping: the epoch it continues after, its loss history, and the
        epoch a kill between saving a checkpoint and logging it left unlogged."""
        state = self.checkpoints.read_state()
        if state.epoch not in self.tracker.logged_steps(schema.VAL_LOSS):
            self.tracker.log_metrics(state.metrics, step=state.epoch)
        self.tracker.set_tags({schema.TAG_RESUMED: state.epoch})
        self.val_losses.extend(self.tracker.metric_values(schema.VAL_LOSS))
        self.resumed_at = state.epoch
        console.say(f"resuming run {self.tracker.run_id} after epoch {state.epoch}")

    def log_class_weights(self) -> None:
        """Params ``class_weight/<class>`` (the scheme name when there are no dataset weights)
        and ``class_weights.csv`` with the training counts they came from."""
        names, weights, counts = self.class_names, self.class_weights, self.train_counts
        scheme = self.weight_scheme
        shown = [scheme] * len(names) if weights is None else [f"{w:.6g}" for w in weights]
        self.tracker.log_params(
            {
                f"{schema.CLASS_WEIGHT_PARAM}{schema.class_key(n)}": w
                for n, w in zip(names, shown, strict=True)
            }
        )
        if counts is None:
            return
        table = pd.DataFrame(
            {
                "class": names,
                "train_pixels": counts.pixels,
                "train_pixel_share": counts.pixel_share,
                "train_images": counts.images,
                "weight": np.nan if weights is None else weights,
            }
        )
        self.tracker.log_table(table, schema.CLASS_WEIGHTS_FILE)

    def log_augmentation(self, augmenter: Augmenter, data: SegmentationData, seed: int) -> None:
        """``figures/augmented_samples.png``: training samples as three epochs draw them."""
        from seglab.data.augment import preview

        images, masks = preview(augmenter, data.train, seed=seed)
        title = f"augment strength {augmenter.strength:g}"
        figure = figures.augmentation_grid(images, masks, self.class_names, title)
        self.tracker.log_figure(figure, schema.FIGURE_AUGMENTED)

    def verdict(self, record: EpochRecord) -> list[int]:
        """The classes whose failure the loss hides, by the run's losses up to ``record``."""
        return hidden_classes(self.val_losses, record.scores.iou, record.scores.support, self.rule)

    def epoch(self, record: EpochRecord, model: keras.Model) -> dict[str, float]:
        """Logs one epoch: its metrics and verdict, the checkpoints (saved first: a kill between
        the two leaves a checkpoint :meth:`open` logs on resume, never a logged epoch without
        one), the failure gallery and the epoch line. Returns the metrics logged."""
        self.val_losses.append(record.val_loss)
        hidden = self.verdict(record)
        metrics = epoch_metrics(record, self.class_names, hidden)
        self.checkpoints.save(model, record.epoch, metrics)
        if self._lock is not None:
            self._lock.heartbeat()
        self.tracker.log_metrics(metrics, step=record.epoch)
        if self.gallery is not None:
            targets = hidden or [record.scores.worst_class]
            for target, picture in self.gallery.draw(self.predictor(model), targets).items():
                name = schema.gallery_file(self.class_names[target], record.epoch)
                self.tracker.log_image(picture, name)
        console.say(console.epoch_line(record, self.epochs, self.class_names, hidden))
        return metrics

    def predictor(self, model: keras.Model) -> Predictor:
        """The run's one predictor of ``model`` (one trace for every pass)."""
        if self._predictor is None or self._predictor.model is not model:
            self._predictor = self._make_predictor(model)
        return self._predictor

    def finish(
        self,
        history: Sequence[EpochRecord],
        model: keras.Model,
        data: SegmentationData,
        batch_size: int,
        overlays: int = 6,
        boundary: bool = True,
    ) -> RunSummary:
        """The end of the run: the per-image counts of the final model on the validation split,
        the figures, tables and verdict tags, the best checkpoint restored into ``model`` and
        scored on the test split, logged as the run's MLflow model; the seconds each part took.
        ``boundary``: also where each class's outline is, on both splits
        (:class:`~seglab.core.boundary.SurfaceScores`).
        """
        self._training_ended = time.perf_counter()
        final = history[-1]
        predict = self.predictor(model)
        # The final model: its per-image counts add up to the last epoch's confusion matrix.
        val = self._scored_split(predict, data, schema.VAL, batch_size, boundary)
        samples = predict_samples(predict, data, overlays, prefer_class=final.scores.worst_class)
        table, tags = self.summarize(history, val.counts, samples, val)
        # From here on the model holds the best checkpoint's weights.
        best_epoch = self.checkpoints.restore_best(model)
        test = self._score_test_split(predict, data, batch_size, best_epoch, boundary)
        if self.tracker.log_model_enabled:
            self._log_best_model(model, data, samples[0][:1], best_epoch)
        # Where the run's time went: checks, counting and building; the epochs; the summary,
        # the evaluations and the model (what grows with the class count).
        self.tracker.set_tags(
            {
                schema.SECONDS_SETUP: f"{self._training_started - self.started:.2f}",
                schema.SECONDS_TRAINING: f"{self._training_ended - self._training_started:.2f}",
                schema.SECONDS_END_OF_RUN: f"{time.perf_counter() - self._training_ended:.2f}",
                schema.SECONDS_BOUNDARY: f"{self._boundary_seconds:.2f}",
            }
        )
        self._summary = RunSummary(final, table, tags, test, best_epoch)
        return self._summary

    def summarize(
        self,
        history: Sequence[EpochRecord],
        val_counts: PerImageCounts,
        samples: tuple[np.ndarray, np.ndarray, np.ndarray],
        val: SplitScores | None = None,
    ) -> tuple[pd.DataFrame, dict[str, str]]:
        """End-of-run artifacts and tags from the run's ``history``, the last epoch's per-image
        counts of the validation split, (image, truth, prediction) ``samples`` for the overlays
        and, when given, the rest of the same pass (its calibration and boundary scores);
        returns the per-class table and the tags, which the run prints when it ends.

        Artifacts: ``figures/loss_vs_class_iou.png`` (the mismatch at a glance),
        ``figures/confusion_matrix.png`` and ``confusion_matrix.csv``,
        ``figures/val_overlays.png``, ``per_class.csv``, ``per_image/val.parquet`` (and
        ``calibration/val.csv``). Metrics: ``val/missed/<class>`` (and
        ``val/boundary_iou|hd95|nsd|ece/<class>``) at the last epoch.
        Tags: the worst class and the hidden failures of the last epoch, and the verdict line as
        the run's description.
        """
        tracker, names = self.tracker, self.class_names
        final = history[-1]
        hidden = self.verdict(final)
        epochs = [r.epoch for r in history]
        losses = {
            schema.TRAIN_LOSS: [r.train_loss for r in history],
            schema.VAL_LOSS: [r.val_loss for r in history],
        }
        ious = {name: [r.scores.iou[c] for r in history] for c, name in enumerate(names)}
        hidden_names = [names[c] for c in hidden]
        name = tracker.client.get_run(tracker.run_id).info.run_name
        verdict = f"hidden failures: {', '.join(hidden_names)}" if hidden else "no hidden failure"
        tracker.log_figure(
            figures.loss_and_class_iou(epochs, losses, ious, f"{name}: {verdict}", hidden_names),
            schema.FIGURE_LOSS_VS_IOU,
        )
        tracker.log_figure(
            figures.confusion_matrix(final.confusion, names), schema.FIGURE_CONFUSION
        )
        tracker.log_table(
            pd.DataFrame(final.confusion, index=names, columns=names)
            .rename_axis("true\\predicted")
            .reset_index(),
            schema.CONFUSION_FILE,
        )
        tracker.log_figure(figures.overlays(*samples, names), schema.FIGURE_OVERLAYS)
        missed = val_counts.missed()
        tracker.log_metrics(
            {
                schema.per_class(schema.VAL, schema.MISSED, n): float(m)
                for n, m in zip(names, missed, strict=True)
            }
            | ({} if val is None else val.beyond_region(names, schema.VAL)),
            step=final.epoch,
        )
        tracker.log_parquet(val_counts.frame(names, schema.VAL), schema.per_image_file(schema.VAL))
        if val is not None:
            log_reliability(tracker, val, names, schema.VAL)
        counts = self.train_counts
        share = np.full(len(names), np.nan) if counts is None else counts.pixel_share
        table = per_class_table(
            final.scores,
            names,
            share,
            final.loss_share,
            self.class_weights,
            hidden,
            missed,
        )
        surface = None if val is None else val.surface
        if surface is not None:  # where each class's outline is, beside its IoU
            table = table.assign(val_boundary_iou=surface.boundary_iou(), val_hd95=surface.hd95())
        tracker.log_table(table, schema.PER_CLASS_FILE)
        worst = final.scores.worst_class
        tags = {
            schema.TAG_WORST_CLASS: names[worst] if worst >= 0 else "none",
            schema.TAG_HIDDEN_FAILURE: str(bool(hidden)).lower(),
            schema.TAG_HIDDEN_CLASSES: ",".join(hidden_names),
        }
        tags[schema.NOTE] = verdict_line(final, tags)
        tracker.set_tags(tags)
        self._summary = RunSummary(final, table, tags, None, self.checkpoints.best_epoch)
        return table, tags

    def _scored_split(
        self,
        predict: Predictor,
        data: SegmentationData,
        split: str,
        batch_size: int,
        boundary: bool,
    ) -> SplitScores:
        """One prediction pass over ``split``: its per-image counts, its calibration and, with
        ``boundary``, where each class's outline is."""
        scores = score_split(predict, data, split, batch_size, boundary)
        self._boundary_seconds += 0.0 if scores.surface is None else scores.surface.seconds
        return scores

    def _score_test_split(
        self,
        predict: Predictor,
        data: SegmentationData,
        batch_size: int,
        epoch: int,
        boundary: bool = True,
    ) -> Scores | None:
        """Scores the model (the best checkpoint) on the data's test split, when there is one,
        and logs it at step ``epoch`` (:func:`log_split_scores`)."""
        if data.test is None:
            return None
        scores = self._scored_split(predict, data, schema.TEST, batch_size, boundary)
        log_split_scores(self.tracker, scores, self.class_names, schema.TEST, epoch)
        return scores.counts.scores()

    def _log_best_model(
        self, model: keras.Model, data: SegmentationData, example: np.ndarray, epoch: int
    ) -> None:
        """Logs ``model`` (holding the best checkpoint, of ``epoch``) as the run's MLflow model.

        A failure here (a custom loss Keras cannot serialize, say) does not fail the run, whose
        metrics and checkpoints are complete: it is printed and tagged ``seglab.model_error``.
        """
        try:
            uri = log_model(self.tracker, model, example, epoch, model_metadata(data, epoch))
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            self.tracker.set_tags({schema.TAG_MODEL_ERROR: reason})
            print(f"the model was not logged ({schema.TAG_MODEL_ERROR}): {reason}", file=sys.stderr)
        else:
            console.say(f"model (epoch {epoch}, best {self.checkpoints.monitor}): {uri}")

    def _print_summary(self, summary: RunSummary) -> None:
        console.print_summary(
            summary.final, summary.table, summary.tags, summary.test, summary.best_epoch
        )
        tracker = self.tracker
        console.say(
            f"MLflow run {tracker.run_id} in experiment '{tracker.experiment_name}' at "
            f"{tracker.uri}"
        )
        if self.job_log is not None:
            console.say(f"run folder: {self.job_log.parent}  log: {self.job_log}")
        if self.checkpoint_dir is not None:
            console.say(f"checkpoints: {self.checkpoints.folder}")
        page = tracker.links.run(tracker.experiment_id(), tracker.run_id)
        console.say(f"in the MLflow UI (make ui): {page}")


def log_split_scores(
    tracker: MlflowTracker,
    scores: SplitScores,
    class_names: Sequence[str],
    prefix: str,
    epoch: int,
) -> None:
    """A split's scores into the tracker's run: ``<prefix>/...`` at step ``epoch`` (the region
    scores, the boundary ones when scored and ``<prefix>/ece/<class>``),
    ``per_image/<prefix>.parquet`` and the reliability data ``calibration/<prefix>.csv``."""
    metrics = split_metrics(scores.counts, class_names, prefix)
    tracker.log_metrics(metrics | scores.beyond_region(class_names, prefix), step=epoch)
    tracker.log_parquet(scores.counts.frame(class_names, prefix), schema.per_image_file(prefix))
    log_reliability(tracker, scores, class_names, prefix)


def log_reliability(
    tracker: MlflowTracker, scores: SplitScores, class_names: Sequence[str], prefix: str
) -> None:
    """A split's reliability-diagram data, ``calibration/<prefix>.csv``."""
    reliability = scores.calibration.reliability(list(class_names))
    tracker.log_table(reliability, schema.reliability_file(prefix))
