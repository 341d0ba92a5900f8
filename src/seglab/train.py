"""``python -m seglab.train [overrides]``: compose the config, train one U-Net, log it to MLflow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

import hydra
import keras
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seglab.data import cached_class_counts
from seglab.losses import build_loss
from seglab.paths import config_dir
from seglab.tracking import MlflowTracker, epoch_metrics
from seglab.trainer import EpochRecord, predict_samples, reject_keras_class_weight


def run(cfg: DictConfig) -> EpochRecord:
    """Trains and logs one run; returns the last epoch's record."""
    reject_keras_class_weight(OmegaConf.to_container(cfg))
    keras.utils.set_random_seed(cfg.trainer.seed)
    data = instantiate(cfg.data)
    data_key = OmegaConf.to_container(cfg.data, resolve=True)
    cache = cfg.paths.cache_dir
    counts = cached_class_counts(
        data.train, data.num_classes, data.ignore_index, {"split": "train", **data_key}, cache
    )
    # Counting val once per data config validates its labels before any training.
    cached_class_counts(
        data.val, data.num_classes, data.ignore_index, {"split": "val", **data_key}, cache
    )
    scheme = instantiate(cfg.class_weights)
    weights = scheme(counts, data.class_names)
    augmenter = instantiate(cfg.augment, ignore_index=data.ignore_index)
    model = instantiate(cfg.model, input_shape=data.image_shape, num_classes=data.num_classes)
    loss = build_loss(instantiate(cfg.loss), weights, data.ignore_index)
    trainer = instantiate(cfg.trainer)
    tracker: MlflowTracker = instantiate(cfg.tracking)

    def on_epoch(record: EpochRecord) -> None:
        tracker.log_metrics(epoch_metrics(record, data.class_names), step=record.epoch)
        worst = data.class_names[record.scores.worst_class]
        print(
            f"epoch {record.epoch}/{trainer.epochs}  train/loss {record.train_loss:.4f}  "
            f"val/loss {record.val_loss:.4f}  val/ce {record.val_ce:.4f}  "
            f"val/pixel_acc {record.scores.pixel_acc:.3f}  val/miou {record.scores.miou:.3f}  "
            f"val/min_iou {record.scores.min_iou:.3f} ({worst})  {record.seconds:.1f}s",
            flush=True,
        )

    with tracker.start_run():
        tracker.log_config(OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_yaml(cfg))
        tracker.log_class_weights(data.class_names, counts, weights, scheme.scheme)
        if not augmenter.is_identity:
            tracker.log_augmentation(augmenter, data, cfg.trainer.seed)
        history = trainer.fit(
            model,
            loss,
            data,
            class_weights=weights,
            per_batch=scheme.per_batch,
            image_boost=scheme.boost(data.class_names),
            augment=augmenter,
            on_epoch=on_epoch,
        )
        final = history[-1]
        samples = predict_samples(
            model, data, cfg.metrics.overlays, prefer_class=final.scores.worst_class
        )
        table, tags = tracker.log_summary(
            history,
            data.class_names,
            counts.pixel_share,
            weights,
            samples,
            cfg.metrics.hidden_failure,
        )
    print_summary(final, table, tags, tracker)
    return final


def print_summary(
    final: EpochRecord, table: pd.DataFrame, tags: dict[str, str], tracker: MlflowTracker
) -> None:
    """The per-class table beside the loss: what the loss alone does not say."""
    shown = table.drop(columns="val_pixels").assign(
        train_pixel_share=table.train_pixel_share.map("{:.3%}".format),
        class_weight=table.class_weight.map("{:.3g}".format),
        val_iou=table.val_iou.map("{:.3f}".format),
        val_dice=table.val_dice.map("{:.3f}".format),
        val_loss_share=table.val_loss_share.map("{:.1%}".format),
    )
    print(
        f"\nval/loss {final.val_loss:.4f}   val/ce {final.val_ce:.4f}   "
        f"val/pixel_acc {final.scores.pixel_acc:.3%}   val/miou {final.scores.miou:.3f}   "
        f"val/min_iou {final.scores.min_iou:.3f}"
    )
    print(shown.to_string(index=False))
    print(
        f"worst class: {tags['seglab.worst_class']}   hidden failure: "
        f"{tags['seglab.hidden_failure']}"
    )
    print(f"MLflow run {tracker.run_id} in experiment '{tracker.experiment_name}' at {tracker.uri}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the worst-class IoU (what a sweeper should maximise)."""
    return run(cfg).scores.min_iou


if __name__ == "__main__":
    main()
