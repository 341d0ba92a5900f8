"""``seglab train [overrides]``: compose the config, train one U-Net, log it to MLflow."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files and MLflow, never a window

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seglab import schema, signals
from seglab.cli import bad_input_in_one_line
from seglab.config import build, check_overrides, check_required, reject_keras_class_weight
from seglab.core.records import EpochRecord
from seglab.core.verdicts import HiddenFailureRule
from seglab.data.counting import count_splits, data_fingerprint
from seglab.data.dataset import take_samples
from seglab.figures.gallery import Gallery, check_gallery
from seglab.losses import build_loss
from seglab.paths import check_writable, config_dir
from seglab.search.trial import TrialReporter
from seglab.tracking import console
from seglab.tracking.run_log import RunLog
from seglab.tracking.sweep import (
    end_sweep,
    job_context,
    job_store,
    run_colour,
    run_name,
    stopped_alone,
)


def run(cfg: DictConfig) -> EpochRecord:
    """Trains and logs one run; returns the last epoch's record.

    Everything that can be checked is checked before training: config values, the data's
    labels (every split), the output folder and the tracking store.
    """
    started = time.perf_counter()
    config = checked_config(cfg)
    trainer = build(cfg.trainer)
    trainer.prepare()
    console.say(
        f"precision: {trainer.precision.name} ({trainer.precision.reason}); "
        f"{trainer.threads} TensorFlow threads"
    )
    data = build(cfg.data)
    counts = count_splits(data, config["data"], cfg.paths.cache_dir)  # validates every label
    scheme = build(cfg.class_weights)
    weights = scheme(counts["train"], data.class_names)
    augmenter = build(cfg.augment, ignore_index=data.ignore_index)
    with trainer.building():
        model = build(cfg.model, input_shape=data.image_shape, num_classes=data.num_classes)
    loss = build_loss(build(cfg.loss), weights, data.ignore_index)
    weighting = scheme.weighting(weights, data.class_names, loss)  # checked here, once
    tracker = run_tracker(cfg)
    trial = search_trial(cfg.trial, data.class_names)
    log = RunLog(  # every option is checked here: the store is next, when the run opens
        tracker,
        data.class_names,
        cfg.paths.checkpoint_dir,
        epochs=trainer.epochs,
        rule=HiddenFailureRule(**cfg.metrics.hidden_failure),
        **cfg.checkpoint,
        gallery=gallery(cfg, data),
        train_counts=counts["train"],
        class_weights=weights,
        weight_scheme=scheme.scheme,
        started=started,
        job_log=job_log(),
    )
    with log.open(
        run_tags(cfg, tracker),
        config,
        OmegaConf.to_yaml(cfg),
        resume=cfg.resume,
        fingerprint=data_fingerprint(data, counts),
        params={schema.PRECISION_PARAM: trainer.precision.name},
    ):
        if not log.resumed and not augmenter.is_identity:
            log.log_augmentation(augmenter, data, trainer.seed)

        def on_epoch(record: EpochRecord) -> None:
            metrics = log.epoch(record, model)
            if trial is not None and trial.should_stop(record.epoch, metrics):
                console.say(f"the search's pruner stops trial {cfg.trial} after this epoch")
                log.tracker.set_tags({schema.TAG_PRUNED: record.epoch})
                model.stop_training = True

        history = trainer.fit(
            model,
            loss,
            data,
            weighting=weighting,
            augment=augmenter,
            on_epoch=on_epoch,
            resume_from=log.checkpoints if log.resumed else None,
        )
        log.finish(
            history, model, data, trainer.batch_size, cfg.metrics.overlays, cfg.metrics.boundary
        )
    return history[-1]


def search_trial(number: int | None, class_names: list[str]) -> TrialReporter | None:
    """The search trial this job is (``trial=<number>``, set by ``hydra/sweeper=optuna``)."""
    sweeper = HydraConfig.get().sweeper if HydraConfig.initialized() else {}
    return TrialReporter.of_job(number, sweeper, job_context(), class_names)


def job_log() -> Path | None:
    """The Hydra job's log file (``<job folder>/<job name>.log``), outside Hydra ``None``."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return Path(hydra.runtime.output_dir) / f"{hydra.job.name}.log"


def checked_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config, once every option that can be checked without data is."""
    check_required(cfg)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    reject_keras_class_weight(config)
    check_writable(cfg.paths.output_dir, f"paths.output_dir={cfg.paths.output_dir!r}")
    if cfg.metrics.overlays < 1:  # figures/val_overlays.png shows at least one sample
        raise ValueError(f"metrics.overlays must be >= 1, got {cfg.metrics.overlays}")
    check_gallery(cfg.metrics.gallery, cfg.metrics.gallery_pool)
    if not isinstance(cfg.metrics.boundary, bool):
        raise ValueError(f"metrics.boundary={cfg.metrics.boundary!r} is not one of [true, false]")
    return config


def run_tracker(cfg: DictConfig) -> Any:
    """The run's tracker: in a sweep job on its sweep's store (:func:`job_store`)."""
    return build(cfg.tracking, tracking_uri=job_store(cfg.tracking.tracking_uri))


def gallery(cfg: DictConfig, data: Any) -> Gallery | None:
    """The run's failure gallery: ``metrics.gallery`` images per class, chosen among the first
    ``metrics.gallery_pool`` validation images (``None`` when ``metrics.gallery=0``)."""
    if not cfg.metrics.gallery:
        return None
    images, truths = take_samples(data.val, cfg.metrics.gallery_pool)
    return Gallery(images, truths, data.num_classes, cfg.metrics.gallery)


def run_tags(cfg: DictConfig, tracker: Any) -> dict[str, str]:
    """The tags only a run of this command has: the chosen option of each axis
    (``seglab.loss``...) so the MLflow UI can group and pivot by them, and in a sweep the parent
    run; a sweep job's run is named by its swept values."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    tags = {}
    for axis in schema.AXES:
        fallback = str(cfg[axis].get("scheme") or cfg[axis]._target_.rsplit(".", 1)[-1])
        tags[schema.axis_tag(axis)] = str(choices.get(axis) or fallback)
    if cfg.trial is not None:
        tags[schema.TAG_TRIAL] = str(cfg.trial)
    sweep = job_context()
    if sweep is not None:
        tags[schema.TAG_PARENT] = sweep["parent_run_id"]
        tags[schema.RUN_COLOR] = run_colour(sweep["job_num"])
        if tracker.run_name is None:
            name = run_name(sweep["overrides"], sweep["swept_keys"])
            tracker.run_name = name if cfg.trial is None else f"#{cfg.trial} {name}"
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
        with bad_input_in_one_line("seglab train"):
            return run(cfg).scores.min_iou
    try:  # in a sweep, one failed job must not stop the others
        return run(cfg).scores.min_iou
    except Exception as error:  # the run is already FAILED in MLflow, with this reason
        print(f"[sweep] job failed: {type(error).__name__}: {error}", file=sys.stderr)
        return float("nan")
    except KeyboardInterrupt:
        signals.acknowledge()
        launcher = str(HydraConfig.get().launcher._target_)
        if (how := stopped_alone(launcher)) is not None:  # the sweep's other jobs go on
            print(f"[sweep] job stopped alone ({how}): its run ended KILLED", file=sys.stderr)
            return float("nan")
        with signals.deferred():  # the sweep stops here: its parent must not stay RUNNING
            end_sweep(Path(HydraConfig.get().sweep.dir), run_tracker(cfg), interrupted=True)
        raise


def cli() -> None:
    """``seglab train``: unknown group options named in one line before Hydra composes."""
    with bad_input_in_one_line("seglab train"):
        check_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
