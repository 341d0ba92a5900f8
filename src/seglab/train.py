"""``python -m seglab.train [overrides]``: compose the config, train one U-Net, log it to MLflow."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files and MLflow, never a window

import hydra
import keras
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seglab import signals
from seglab.analysis import AXES, PARENT_TAG
from seglab.callbacks import EpochRecord
from seglab.checkpoints import Checkpointer, check_metric_names
from seglab.checks import build, check_group_overrides, check_required, check_writable
from seglab.console import epoch_line, print_summary, say
from seglab.data import split_counts
from seglab.evaluation import split_counts_per_image
from seglab.gallery import Gallery
from seglab.losses import build_loss
from seglab.paths import config_dir, project_root
from seglab.prediction import LabelPredictor
from seglab.provenance import provenance_tags
from seglab.quiet import bad_input_in_one_line
from seglab.run_summary import (
    epoch_metric_keys,
    epoch_metrics,
    evaluate_test_split,
    log_augmentation,
    log_best_model,
    log_class_weights,
    log_summary,
)
from seglab.runlock import RunLock
from seglab.runtime import seed_everything, set_precision
from seglab.sweep import end_sweep, job_context, run_name
from seglab.tracking import TAG_CLASS_NAMES, TAG_RESUMED, MlflowTracker, flatten
from seglab.trainer import predict_samples, reject_keras_class_weight
from seglab.verdicts import HiddenFailureRule, hidden_classes


def run(cfg: DictConfig) -> EpochRecord:
    """Trains and logs one run; returns the last epoch's record.

    Everything that can be checked is checked before training: config values, the data's
    labels (every split), the output folder and the tracking store.
    """
    started = time.perf_counter()
    check_required(cfg)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    reject_keras_class_weight(config)
    check_writable(cfg.paths.output_dir, "paths.output_dir")
    rule = HiddenFailureRule(**cfg.metrics.hidden_failure)
    if cfg.metrics.overlays < 1:  # figures/val_overlays.png shows at least one sample
        raise ValueError(f"metrics.overlays must be >= 1, got {cfg.metrics.overlays}")
    keras.backend.clear_session()  # jobs of a multirun share this process: start clean
    trainer = build(cfg.trainer)
    seed_everything(trainer.seed, trainer.deterministic)
    set_precision(trainer.mixed_precision)
    data = build(cfg.data)
    data_key = cast(dict[str, Any], OmegaConf.to_container(cfg.data, resolve=True))
    # Counting every split once per data config validates its labels before any training.
    counts = split_counts(data, "train", data_key, cfg.paths.cache_dir)
    for split in data.splits[1:]:
        split_counts(data, split, data_key, cfg.paths.cache_dir)
    scheme = build(cfg.class_weights)
    weights = scheme(counts, data.class_names)
    augmenter = build(cfg.augment, ignore_index=data.ignore_index)
    with trainer.scope():
        model = build(cfg.model, input_shape=data.image_shape, num_classes=data.num_classes)
    predict = LabelPredictor(model)  # one trace for the gallery and the end-of-run passes
    loss = build_loss(build(cfg.loss), weights, data.ignore_index)
    weighting = scheme.weighting(weights, data.class_names, loss)  # checked here, once
    check_metric_names(
        trainer.checkpoint_monitor,
        trainer.checkpoint_tie_breaker,
        epoch_metric_keys(data.class_names),
    )
    gallery = Gallery(data, cfg.metrics.gallery, cfg.metrics.gallery_pool)
    tracker: MlflowTracker = build(cfg.tracking)  # every option is checked: the store is next
    tracker.check()
    resume_id = tracker.resumable_run(trainer.resume, cfg.paths.checkpoint_dir, flatten(config))
    val_losses: list[float] = []  # the whole run's, for the hidden-failure verdict

    def verdict(record: EpochRecord) -> list[int]:
        return hidden_classes(val_losses, record.scores.iou, record.scores.support, rule)

    def on_epoch(record: EpochRecord) -> None:
        val_losses.append(record.val_loss)
        hidden = verdict(record)
        metrics = epoch_metrics(record, data.class_names, hidden)
        checkpointer.save(model, record.epoch, metrics)  # before logging: see resume below
        lock.heartbeat()
        tracker.log_metrics(metrics, step=record.epoch)
        targets = hidden or [record.scores.worst_class]
        for target, picture in gallery.draw(predict, targets).items():
            tracker.log_gallery(picture, data.class_names[target], record.epoch)
        say(epoch_line(record, trainer.epochs, data.class_names, hidden))

    sweep = job_context()
    if sweep is not None and tracker.run_name is None:
        tracker.run_name = run_name(sweep["overrides"], sweep["swept_keys"])
    tags = {
        **axis_tags(cfg),
        **provenance_tags(project_root()),
        TAG_CLASS_NAMES: json.dumps(list(data.class_names)),
    }
    if sweep is not None:
        tags[PARENT_TAG] = sweep["parent_run_id"]
    lock = RunLock()  # this process trains the run: nobody may resume it meanwhile
    if resume_id is not None:  # claimed before the run is reopened, or a loser would end it
        lock.acquire(Path(cfg.paths.checkpoint_dir) / resume_id, resume_id)
    with lock_released(lock), tracker.start_run(tags=tags, resume_run_id=resume_id):
        if resume_id is None:
            lock.acquire(Path(cfg.paths.checkpoint_dir) / tracker.run_id, tracker.run_id)
        checkpointer = Checkpointer(
            Path(cfg.paths.checkpoint_dir) / tracker.run_id,
            trainer.checkpoint_monitor,
            trainer.checkpoint_mode,
            trainer.checkpoint_tie_breaker,
            trainer.checkpoint_tie_tolerance,
        )
        if resume_id is None:
            tracker.log_config(config, OmegaConf.to_yaml(cfg))
            log_class_weights(tracker, data.class_names, counts, weights, scheme.scheme)
            if not augmenter.is_identity:
                log_augmentation(tracker, augmenter, data, trainer.seed)
        else:
            # A kill between saving a checkpoint and logging its epoch leaves that step
            # unlogged: log it from the checkpoint, so the history has no gap and no duplicate.
            state = checkpointer.read_state()
            if state.epoch not in tracker.logged_steps("val/loss"):
                tracker.log_metrics(state.metrics, step=state.epoch)
            tracker.set_tags({TAG_RESUMED: state.epoch})
            val_losses.extend(tracker.metric_values("val/loss"))
            say(f"resuming run {resume_id} after epoch {state.epoch}")
        training_started = time.perf_counter()
        history = trainer.fit(
            model,
            loss,
            data,
            weighting=weighting,
            augment=augmenter,
            on_epoch=on_epoch,
            resume_from=checkpointer if resume_id else None,
        )
        final = history[-1]
        hidden = verdict(final)  # the run's: its last epoch's
        training_ended = time.perf_counter()
        # The final model: its per-image counts add up to the last epoch's confusion matrix.
        val_counts = split_counts_per_image(predict, data, "val", trainer.batch_size)
        samples = predict_samples(
            predict, data, cfg.metrics.overlays, prefer_class=final.scores.worst_class
        )
        table, tags = log_summary(
            tracker,
            history,
            data.class_names,
            counts.pixel_share,
            weights,
            samples,
            hidden,
            val_counts,
        )
        # From here on the model holds the best checkpoint's weights.
        best_epoch = checkpointer.restore_best(model)
        test = evaluate_test_split(tracker, predict, data, trainer.batch_size, best_epoch)
        if tracker.log_model_enabled:
            log_best_model(tracker, model, data, samples[0][:1], best_epoch, checkpointer.monitor)
        # Where the run's time went: checks, counting and building; the epochs; the summary,
        # the evaluations and the model (what grows with the class count).
        tracker.set_tags(
            {
                "seglab.seconds.setup": f"{training_started - started:.2f}",
                "seglab.seconds.training": f"{training_ended - training_started:.2f}",
                "seglab.seconds.end_of_run": f"{time.perf_counter() - training_ended:.2f}",
            }
        )
    print_summary(final, table, tags, test, best_epoch)
    say(f"MLflow run {tracker.run_id} in experiment '{tracker.experiment_name}' at {tracker.uri}")
    say(f"in the MLflow UI (make ui): {tracker.runs_url()}")
    return final


@contextmanager
def lock_released(lock: RunLock) -> Iterator[None]:
    """Releases ``lock`` when the block ends, however it ends."""
    try:
        yield
    finally:
        lock.release()


def axis_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags ``seglab.loss``, ``seglab.class_weights``, ``seglab.augment``: the chosen options
    (under Hydra) or the class names, so the MLflow UI can group and pivot by them."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    tags = {}
    for axis in AXES:
        fallback = str(cfg[axis].get("scheme") or cfg[axis]._target_.rsplit(".", 1)[-1])
        tags[f"seglab.{axis}"] = str(choices.get(axis) or fallback)
    return tags


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the worst-class IoU (what a sweeper should maximise)."""
    # SIGTERM (a scheduler's kill, `timeout`) ends the run like Ctrl-C: KILLED, checkpoints kept.
    signals.install(signal.SIGINT, signal.SIGTERM)
    signals.install_preemption(signals.preemption_signal())
    try:
        return run_job(cfg)
    except signals.Preempted as preempted:  # the run is KILLED, its checkpoint kept
        signals.hand_over(preempted)  # submitit requeues the job and exits
        raise


def run_job(cfg: DictConfig) -> float:
    """:func:`run` alone (bad input in one line) or as a job of a sweep, which goes on."""
    if job_context() is None:
        with bad_input_in_one_line("seglab.train"):
            return run(cfg).scores.min_iou
    try:  # in a sweep, one failed job must not stop the others
        return run(cfg).scores.min_iou
    except Exception as error:  # the run is already FAILED in MLflow, with this reason
        print(f"[sweep] job failed: {type(error).__name__}: {error}", file=sys.stderr)
        return float("nan")
    except KeyboardInterrupt:  # the sweep stops here: its parent must not stay RUNNING
        signals.acknowledge()
        with signals.deferred():
            end_sweep(Path(HydraConfig.get().sweep.dir), build(cfg.tracking), interrupted=True)
        raise


if __name__ == "__main__":
    with bad_input_in_one_line("seglab.train"):
        check_group_overrides(sys.argv[1:])
    main()
