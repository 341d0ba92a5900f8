"""What a training run prints: one line per epoch with the loss beside the worst class, and at
the end the per-class table. Every line also goes to the job's log file, so a sweep job's log
holds its own epochs and table."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pandas as pd

from seglab import schema
from seglab.core.formatting import percent
from seglab.core.records import EpochRecord
from seglab.core.scores import Scores

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
    scores = record.scores
    worst = class_names[scores.worst_class] if scores.worst_class >= 0 else "none"
    hidden_names = ",".join(class_names[c] for c in hidden) or "none"
    shown = {
        schema.TRAIN_LOSS: f"{record.train_loss:.4f}",
        schema.VAL_LOSS: f"{record.val_loss:.4f}",
        schema.VAL_CE: f"{record.val_ce:.4f}",
        schema.key(schema.VAL, schema.PIXEL_ACC): percent(scores.pixel_acc),
        schema.VAL_MIOU: f"{scores.miou:.3f}",
        schema.VAL_MIN_IOU: f"{scores.min_iou:.3f} ({worst})",
    }
    values = "  ".join(f"{key} {value}" for key, value in shown.items())
    return f"epoch {record.epoch}/{epochs}  {values}  hidden: {hidden_names}  {record.seconds:.1f}s"


def print_summary(
    final: EpochRecord,
    table: pd.DataFrame,
    tags: Mapping[str, str],
    test: Scores | None = None,
    best_epoch: int = 0,
) -> None:
    """The per-class table beside the loss: what the loss alone does not say."""
    shown = table.drop(columns="val_pixels").assign(
        # n/a: a run that was not given its training split (the Keras callback's)
        train_pixel_share=table.train_pixel_share.map(lambda v: "n/a" if v != v else percent(v)),
        class_weight=table.class_weight.map("{:.3g}".format),
        val_iou=table.val_iou.map("{:.3f}".format),
        val_dice=table.val_dice.map("{:.3f}".format),
        val_recall=table.val_recall.map("{:.3f}".format),
        val_predicted_share=table.val_predicted_share.map(percent),
        val_loss_share=table.val_loss_share.map(percent),
        hidden_failure=table.hidden_failure.map({True: "HIDDEN", False: ""}),
    )
    for column, digits in (("val_boundary_iou", 3), ("val_hd95", 2)):
        if column in table:  # where the outline is: inf when the class is missed in an image
            shown[column] = table[column].map(lambda v, d=digits: f"{v:.{d}f}")
    if "val_missed" in table:
        shown["val_missed"] = table.val_missed.map("{:.0%}".format)
    if test is not None:
        shown["test_iou"] = [f"{v:.3f}" for v in test.iou]
    scores = final.scores
    line = {
        schema.VAL_LOSS: f"{final.val_loss:.4f}",
        schema.VAL_CE: f"{final.val_ce:.4f}",
        schema.key(schema.VAL, schema.PIXEL_ACC): percent(scores.pixel_acc),
        schema.key(schema.VAL, schema.CLASS_ACC): percent(scores.class_acc),
        schema.VAL_MIOU: f"{scores.miou:.3f}",
        schema.VAL_MIN_IOU: f"{scores.min_iou:.3f}",
    }
    say("\n" + "   ".join(f"{key} {value}" for key, value in line.items()))
    if test is not None:
        say(
            f"test (best checkpoint, epoch {best_epoch}): pixel_acc {percent(test.pixel_acc)}   "
            f"class_acc {percent(test.class_acc)}   miou {test.miou:.3f}   "
            f"min_iou {test.min_iou:.3f}"
        )
    say(shown.to_string(index=False))
    hidden = tags[schema.TAG_HIDDEN_CLASSES] or "none"
    say(f"worst class: {tags[schema.TAG_WORST_CLASS]}   hidden failures: {hidden}")
