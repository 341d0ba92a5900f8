"""What a training run prints: one line per epoch with the loss beside the worst class, and at
the end the per-class table. Every line also goes to the job's log file, so a sweep job's log
holds its own epochs and table."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pandas as pd

from seglab.callbacks import EpochRecord
from seglab.metrics import Scores

# conf/hydra/job_logging/seglab.yaml routes this logger to the job's log file alone: say()
# prints the line itself, so the console shows it once.
log = logging.getLogger("seglab.train")


def say(text: str) -> None:
    """Prints ``text`` and keeps it in the job's log file."""
    print(text, flush=True)
    log.info(text)


def epoch_line(
    record: EpochRecord, epochs: int, class_names: Sequence[str], hidden: Sequence[int]
) -> str:
    """One epoch: the losses next to pixel accuracy, mIoU, the worst class and the classes
    whose failure the loss hides."""
    worst = class_names[record.scores.worst_class]
    hidden_names = ",".join(class_names[c] for c in hidden) or "none"
    return (
        f"epoch {record.epoch}/{epochs}  train/loss {record.train_loss:.4f}  "
        f"val/loss {record.val_loss:.4f}  val/ce {record.val_ce:.4f}  "
        f"val/pixel_acc {record.scores.pixel_acc:.3f}  val/miou {record.scores.miou:.3f}  "
        f"val/min_iou {record.scores.min_iou:.3f} ({worst})  hidden: {hidden_names}  "
        f"{record.seconds:.1f}s"
    )


def print_summary(
    final: EpochRecord,
    table: pd.DataFrame,
    tags: Mapping[str, str],
    test: Scores | None = None,
    best_epoch: int = 0,
) -> None:
    """The per-class table beside the loss: what the loss alone does not say."""
    shown = table.drop(columns="val_pixels").assign(
        train_pixel_share=table.train_pixel_share.map("{:.3%}".format),
        class_weight=table.class_weight.map("{:.3g}".format),
        val_iou=table.val_iou.map("{:.3f}".format),
        val_dice=table.val_dice.map("{:.3f}".format),
        val_recall=table.val_recall.map("{:.3f}".format),
        val_predicted_share=table.val_predicted_share.map("{:.1%}".format),
        val_loss_share=table.val_loss_share.map("{:.1%}".format),
        hidden_failure=table.hidden_failure.map({True: "HIDDEN", False: ""}),
    )
    if "val_missed" in table:
        shown["val_missed"] = table.val_missed.map("{:.0%}".format)
    if test is not None:
        shown["test_iou"] = [f"{v:.3f}" for v in test.iou]
    say(
        f"\nval/loss {final.val_loss:.4f}   val/ce {final.val_ce:.4f}   "
        f"val/pixel_acc {final.scores.pixel_acc:.3%}   val/class_acc {final.scores.class_acc:.3%}"
        f"   val/miou {final.scores.miou:.3f}   val/min_iou {final.scores.min_iou:.3f}"
    )
    if test is not None:
        say(
            f"test (best checkpoint, epoch {best_epoch}): pixel_acc {test.pixel_acc:.3%}   "
            f"class_acc {test.class_acc:.3%}   miou {test.miou:.3f}   min_iou {test.min_iou:.3f}"
        )
    say(shown.to_string(index=False))
    hidden = tags["seglab.hidden_failure_classes"] or "none"
    say(f"worst class: {tags['seglab.worst_class']}   hidden failures: {hidden}")
