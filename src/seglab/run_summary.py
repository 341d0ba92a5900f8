"""What a run logs beyond its epochs, built here and written by :class:`MlflowTracker`: the
metric dict of an epoch, the class weights' table, the augmentation preview, the end-of-run
summary (figures, tables, per-image counts, the verdict tags and note), the test split's scores
and the best checkpoint as the run's MLflow model."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd

from seglab import plots
from seglab.augment import Augmenter, preview
from seglab.callbacks import EpochRecord
from seglab.class_weights import ClassCounts
from seglab.console import say
from seglab.data import SegmentationData
from seglab.evaluation import PerImageCounts, split_counts_per_image, split_metrics
from seglab.metrics import Scores, per_class_table, scores_from_counts
from seglab.prediction import LabelPredictor
from seglab.tracking import (
    NOTE,
    TAG_HIDDEN_CLASSES,
    TAG_HIDDEN_FAILURE,
    TAG_MODEL_ERROR,
    TAG_WORST_CLASS,
    MlflowTracker,
)


def epoch_metrics(
    record: EpochRecord, class_names: Sequence[str], hidden: Sequence[int] = ()
) -> dict[str, float]:
    """The metric dict logged for one epoch, keyed by metric path; ``hidden`` are the indices
    of the classes whose failure the loss hides so far (:func:`seglab.verdicts.hidden_classes`)."""
    scores = record.scores
    metrics = {
        "train/loss": record.train_loss,
        "val/loss": record.val_loss,
        "val/ce": record.val_ce,
        "val/miou": scores.miou,
        "val/min_iou": scores.min_iou,
        "val/pixel_acc": scores.pixel_acc,
        "val/class_acc": scores.class_acc,
        "val/hidden_count": float(len(hidden)),
    }
    for c, name in enumerate(class_names):
        metrics[f"val/iou/{name}"] = float(scores.iou[c])
        metrics[f"val/dice/{name}"] = float(scores.dice[c])
        metrics[f"val/recall/{name}"] = float(scores.recall[c])
        metrics[f"val/predicted_share/{name}"] = float(scores.predicted_share[c])
        metrics[f"val/loss_share/{name}"] = float(record.loss_share[c])
        metrics[f"val/hidden/{name}"] = float(c in hidden)
    return metrics


def epoch_metric_keys(class_names: Sequence[str]) -> list[str]:
    """The keys :func:`epoch_metrics` logs for these classes, known before any epoch: options
    that name a metric are checked against them before a run starts."""
    zeros = np.zeros(len(class_names))
    blank = EpochRecord(
        epoch=0,
        train_loss=0.0,
        val_loss=0.0,
        val_ce=0.0,
        loss_share=zeros,
        confusion=np.zeros((len(class_names), len(class_names))),
        scores=scores_from_counts(zeros, zeros, zeros),
        seconds=0.0,
    )
    return sorted(epoch_metrics(blank, class_names))


def verdict_line(final: EpochRecord, tags: Mapping[str, str]) -> str:
    """One line a person reads first: the loss, the worst class, the hidden failures."""
    hidden = tags[TAG_HIDDEN_CLASSES]
    return (
        f"val/loss {final.val_loss:.4g}, mIoU {final.scores.miou:.3f}, worst class "
        f"{tags[TAG_WORST_CLASS]} (IoU {final.scores.min_iou:.3f}); "
        + (f"hidden failures: {hidden}" if hidden else "no hidden failure")
    )


def log_class_weights(
    tracker: MlflowTracker,
    class_names: Sequence[str],
    counts: ClassCounts,
    weights: np.ndarray | None,
    scheme: str,
) -> None:
    """Params ``class_weight/<class>`` (the scheme name when there are no dataset weights)
    and ``class_weights.csv`` with the training counts they came from."""
    shown = [scheme] * len(class_names) if weights is None else [f"{w:.6g}" for w in weights]
    tracker.log_params({f"class_weight/{n}": w for n, w in zip(class_names, shown, strict=True)})
    table = pd.DataFrame(
        {
            "class": list(class_names),
            "train_pixels": counts.pixels,
            "train_pixel_share": counts.pixel_share,
            "train_images": counts.images,
            "weight": np.nan if weights is None else weights,
        }
    )
    tracker.log_table(table, "class_weights.csv")


def log_augmentation(
    tracker: MlflowTracker, augmenter: Augmenter, data: SegmentationData, seed: int
) -> None:
    """``figures/augmented_samples.png``: training samples as three epochs draw them."""
    images, masks = preview(augmenter, data.train, seed=seed)
    title = f"augment strength {augmenter.strength:g}"
    figure = plots.augmentation_grid(images, masks, data.class_names, title)
    tracker.log_figure(figure, "figures/augmented_samples.png")


def log_per_image(
    tracker: MlflowTracker, counts: PerImageCounts, class_names: Sequence[str], split: str
) -> None:
    """``per_image/<split>.parquet``: the split's per-image per-class counts (tidy rows)."""
    tracker.log_parquet(counts.frame(class_names, split), f"per_image/{split}.parquet")


def log_summary(
    tracker: MlflowTracker,
    history: Sequence[EpochRecord],
    class_names: Sequence[str],
    train_pixel_share: np.ndarray,
    class_weights: np.ndarray | None,
    samples: tuple[np.ndarray, np.ndarray, np.ndarray],
    hidden: Sequence[int],
    val_counts: PerImageCounts,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """End-of-run artifacts and tags; returns the per-class table and the tags.

    Artifacts: ``figures/loss_vs_class_iou.png`` (the mismatch at a glance),
    ``figures/confusion_matrix.png`` and ``confusion_matrix.csv``,
    ``figures/val_overlays.png``, ``per_class.csv``, ``per_image/val.parquet``. Metrics:
    ``val/missed/<class>`` at the last epoch. Tags: ``seglab.worst_class``,
    ``seglab.hidden_failure`` and ``seglab.hidden_failure_classes`` (``hidden``: the classes
    :func:`seglab.verdicts.hidden_classes` names), all of the last epoch.
    """
    final = history[-1]
    epochs = [r.epoch for r in history]
    losses = {
        "train/loss": [r.train_loss for r in history],
        "val/loss": [r.val_loss for r in history],
    }
    ious = {name: [r.scores.iou[c] for r in history] for c, name in enumerate(class_names)}
    hidden_names = [class_names[c] for c in hidden]
    name = tracker.client.get_run(tracker.run_id).info.run_name
    verdict = f"hidden failures: {', '.join(hidden_names)}" if hidden else "no hidden failure"
    tracker.log_figure(
        plots.loss_and_class_iou(epochs, losses, ious, f"{name}: {verdict}", hidden_names),
        "figures/loss_vs_class_iou.png",
    )
    tracker.log_figure(
        plots.confusion_matrix(final.confusion, class_names), "figures/confusion_matrix.png"
    )
    tracker.log_table(
        pd.DataFrame(final.confusion, index=list(class_names), columns=list(class_names))
        .rename_axis("true\\predicted")
        .reset_index(),
        "confusion_matrix.csv",
    )
    tracker.log_figure(plots.overlays(*samples, class_names), "figures/val_overlays.png")
    missed = val_counts.missed()
    tracker.log_metrics(
        {f"val/missed/{n}": float(m) for n, m in zip(class_names, missed, strict=True)},
        step=final.epoch,
    )
    log_per_image(tracker, val_counts, class_names, "val")
    table = per_class_table(
        final.scores,
        class_names,
        train_pixel_share,
        final.loss_share,
        class_weights,
        hidden,
        missed,
    )
    tracker.log_table(table, "per_class.csv")
    worst = final.scores.worst_class
    tags = {
        TAG_WORST_CLASS: class_names[worst] if worst >= 0 else "none",
        TAG_HIDDEN_FAILURE: str(bool(hidden)).lower(),
        TAG_HIDDEN_CLASSES: ",".join(class_names[c] for c in hidden),
    }
    tags[NOTE] = verdict_line(final, tags)
    tracker.set_tags(tags)
    return table, tags


def evaluate_test_split(
    tracker: MlflowTracker,
    model: keras.Model | LabelPredictor,
    data: SegmentationData,
    batch_size: int,
    epoch: int,
) -> Scores | None:
    """Scores the model (the best checkpoint) on the data's test split, when there is one, and
    logs ``test/...`` at step ``epoch`` and ``per_image/test.parquet``."""
    if data.test is None:
        return None
    counts = split_counts_per_image(model, data, "test", batch_size)
    tracker.log_metrics(split_metrics(counts, data.class_names, "test"), step=epoch)
    log_per_image(tracker, counts, data.class_names, "test")
    return counts.scores()


def log_best_model(
    tracker: MlflowTracker,
    model: keras.Model,
    data: SegmentationData,
    example: np.ndarray,
    epoch: int,
    monitor: str,
) -> None:
    """Logs ``model`` (holding the best checkpoint, of ``epoch``) as the run's MLflow model.

    A failure here (a custom loss Keras cannot serialize, say) does not fail the run, whose
    metrics and checkpoints are complete: it is printed and tagged ``seglab.model_error``.
    """
    try:
        uri = tracker.log_model(model, example, epoch, model_metadata(data, epoch))
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        tracker.set_tags({TAG_MODEL_ERROR: reason})
        print(f"the model was not logged ({TAG_MODEL_ERROR}): {reason}", file=sys.stderr)
    else:
        say(f"model (epoch {epoch}, best {monitor}): {uri}")


def model_metadata(data: SegmentationData, epoch: int) -> dict[str, object]:
    """What the logged model needs besides its weights to be used: :mod:`seglab.predict`
    reads the class names and colours from here."""
    colors = data.colors or (plots.palette(data.num_classes) * 255).round().astype(int).tolist()
    return {
        "class_names": list(data.class_names),
        "colors": [list(map(int, c)) for c in colors],
        "ignore_index": data.ignore_index,
        "image_shape": list(data.image_shape),
        "checkpoint_epoch": epoch,
    }
