"""What a seglab run is in MLflow: every metric key, tag, param prefix and artifact path, spelled
once. The modules that write runs and those that read them back both import these names.

Metric keys are paths, logged with ``step = epoch`` (1-based: step 3 is the state after the third
epoch). Every epoch: :data:`TRAIN_LOSS`, :data:`VAL_LOSS`, :data:`VAL_CE`, and the validation
scores ``val/<score>`` (:data:`EPOCH_SCORES`) and ``val/<kind>/<class>`` (:data:`EPOCH_KINDS`).
At the end of a run: ``val/missed/<class>`` (the last epoch) and, when the data has a test split,
``test/...`` as :func:`split_metric_keys` names them, at the step of the best checkpoint.

A class appears in keys by :func:`class_key`: its name with every character MLflow refuses in a
key (and ``/``, which would nest one class's key under another's) replaced by ``_``. The names
themselves are kept in the tag :data:`TAG_CLASS_NAMES`, in class order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Splits and the metric kinds logged per class.
TRAIN, VAL, TEST = "train", "val", "test"
LOSS, CE = "loss", "ce"
MIOU, MIN_IOU, PIXEL_ACC, CLASS_ACC, HIDDEN_COUNT = (
    "miou",
    "min_iou",
    "pixel_acc",
    "class_acc",
    "hidden_count",
)
IOU, DICE, RECALL, PREDICTED_SHARE, LOSS_SHARE, HIDDEN, MISSED = (
    "iou",
    "dice",
    "recall",
    "predicted_share",
    "loss_share",
    "hidden",
    "missed",
)
EPOCH_SCORES = (MIOU, MIN_IOU, PIXEL_ACC, CLASS_ACC, HIDDEN_COUNT)
EPOCH_KINDS = (IOU, DICE, RECALL, PREDICTED_SHARE, LOSS_SHARE, HIDDEN)
SPLIT_SCORES = (MIOU, MIN_IOU, PIXEL_ACC, CLASS_ACC)
SPLIT_KINDS = (IOU, RECALL, MISSED)
# Where a class's outline is (seglab.core.boundary), and its calibration (seglab.core.calibration).
BOUNDARY_IOU, HD95, NSD, ECE = "boundary_iou", "hd95", "nsd", "ece"
SURFACE_KINDS = (BOUNDARY_IOU, HD95, NSD)
PER_CLASS_KINDS = (*EPOCH_KINDS, MISSED, *SURFACE_KINDS, ECE)

# Tags of a training run.
TAG_PREFIX = "seglab."
TAG_CLASS_NAMES = "seglab.class_names"  # JSON list, in class index order
TAG_WORST_CLASS = "seglab.worst_class"
TAG_HIDDEN_FAILURE = "seglab.hidden_failure"  # "true" or "false"
TAG_HIDDEN_CLASSES = "seglab.hidden_failure_classes"  # comma-separated class names
TAG_FAILURE_REASON = "seglab.failure_reason"
TAG_RESUMED = "seglab.resumed_at_epoch"
TAG_MODEL_ERROR = "seglab.model_error"  # why the run has no MLflow model
TAG_BEST_EPOCH = "seglab.best_epoch"  # a callback's run: the epoch its monitor selected
TAG_EVALUATED_RUN = "seglab.evaluated_run"  # a run seglab.evaluate made: the run it scored
TAG_DATA_FINGERPRINT = "seglab.data_fingerprint"  # the training split's files, for resume
TAG_GIT_COMMIT = "seglab.git_commit"
TAG_GIT_DIRTY = "seglab.git_dirty"
VERSION_TAG_PREFIX = "version."  # version.<package>, version.python
SECONDS_SETUP = "seglab.seconds.setup"
SECONDS_TRAINING = "seglab.seconds.training"
SECONDS_END_OF_RUN = "seglab.seconds.end_of_run"
SECONDS_BOUNDARY = "seglab.seconds.boundary"  # of the end of run: the boundary scores
# The options a sweep varies most, as tags the MLflow UI can group by: seglab.<axis>.
AXES = ("loss", "class_weights", "augment")
# MLflow's own tags.
TAG_PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # the MLflow UI shows it as the run's or experiment's description
RUN_COLOR = "mlflow.runColor"  # a run's colour in the MLflow UI's charts, e.g. "#1f77b4"
# An experiment's kind: MLflow 3's UI files experiments of no kind under its GenAI views.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

# Tags of a sweep's parent run.
TAG_SWEEP = "seglab.sweep"  # "parent"
SWEEP_PARENT = "parent"
TAG_SWEEP_DIR = "seglab.sweep_dir"
TAG_SWEEP_OVERRIDES = "seglab.sweep_overrides"
TAG_JOBS = "seglab.jobs"
TAG_FAILED_JOBS = "seglab.failed_jobs"
TAG_JOBS_RUN = "seglab.jobs_run"
TAG_REPORT_ERROR = "seglab.report_error"
# A search's trials (hydra/sweeper=optuna): the trial a run is, and on an unfinished run, the
# trial that reran it.
TAG_TRIAL = "seglab.trial"
TAG_RETRIED_AS = "seglab.retried_as_trial"
TAG_PRUNED = "seglab.pruned_at_epoch"  # a trial the search's pruner stopped (FINISHED early)
TRIAL_PARAM = "trial"
# A search's Optuna study: its sweep's MLflow parent run (a study attribute), and on a trial
# that reruns an interrupted one, that trial's number (a trial attribute).
STUDY_PARENT = "seglab.parent_run_id"
TRIAL_RETRY_OF = "seglab.retry_of"
SWEEP_FILE = "sweep.json"  # what a sweep's jobs read: its parent run id and job count

# Params: the resolved config flattened to dotted keys, and the class weights.
SEED_PARAM = "trainer.seed"
PRECISION_PARAM = "precision"  # what trainer.precision resolved to: float32, bfloat16, float16
CLASS_WEIGHT_PARAM = "class_weight/"  # class_weight/<class>

# Artifacts of a training run.
CONFIG_FILE = "config.yaml"
CLASS_WEIGHTS_FILE = "class_weights.csv"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FILE = "confusion_matrix.csv"
# Every metric point of the run (key, step, value), rewritten after each logging step: one
# download instead of one metric-history call per key (seglab.analysis.runs.history).
HISTORY_FILE = "metric_history.parquet"
HISTORY_COLUMNS = ("key", "step", "value")
FIGURE_LOSS_VS_IOU = "figures/loss_vs_class_iou.png"
FIGURE_CONFUSION = "figures/confusion_matrix.png"
FIGURE_OVERLAYS = "figures/val_overlays.png"
FIGURE_AUGMENTED = "figures/augmented_samples.png"
MODEL_NAME = "model"  # runs:/<run id>/model
GALLERY = "gallery/"  # gallery/<class>/epoch_<NNN>.png: an image per epoch

# Artifacts of a sweep's parent run.
SWEEP_REPORT_FILE = "sweep_report.md"
SWEEP_REPORT_HTML = "report.html"
SWEEP_SUMMARY_FILE = "sweep_summary.csv"
SWEEP_HISTORY_FILE = "sweep_history.csv"
FIGURES = "figures/"

# MLflow accepts letters, digits and "_-. :/" in keys; "/" stays a separator between parts.
UNSAFE_IN_KEY = re.compile(r"[^\w\-. :]")


def key(*parts: str) -> str:
    """A metric key from its parts: ``key("val", "iou", "speck")`` is ``val/iou/speck``."""
    return "/".join(parts)


TRAIN_LOSS = key(TRAIN, LOSS)
VAL_LOSS = key(VAL, LOSS)
VAL_CE = key(VAL, CE)
VAL_MIOU = key(VAL, MIOU)
VAL_MIN_IOU = key(VAL, MIN_IOU)
VAL_IOU = key(VAL, IOU)


def class_key(name: str) -> str:
    """A class name as it appears in metric keys and image keys: characters MLflow refuses, and
    ``/``, become ``_`` (``building, edifice`` -> ``building_ edifice``); any other letter,
    any script's, stays."""
    return UNSAFE_IN_KEY.sub("_", name)


def class_keys(names: Sequence[str], source: str) -> list[str]:
    """:func:`class_key` of every name; raises naming ``source`` when a name is empty or blank,
    or two names share a key (their metrics would be one)."""
    keys = [class_key(n) for n in names]
    if blank := [n for n in names if not n.strip()]:
        raise ValueError(f"{source}: a class name is empty ({blank!r}); name every class")
    seen: dict[str, str] = {}
    for name, part in zip(names, keys, strict=True):
        if part in seen:
            raise ValueError(
                f"{source}: classes {seen[part]!r} and {name!r} would share the metric key "
                f"'val/iou/{part}' (characters other than letters, digits and '_-. :' become "
                "'_'); rename one"
            )
        seen[part] = name
    return keys


def per_class(split: str, kind: str, name: str) -> str:
    """``<split>/<kind>/<class key>``: one class's metric."""
    return key(split, kind, class_key(name))


def epoch_metric_keys(class_names: Sequence[str]) -> list[str]:
    """Every key an epoch logs for these classes, sorted: known before any epoch, so options
    that name a metric are checked against them before a run starts."""
    keys = [TRAIN_LOSS, VAL_LOSS, VAL_CE, *(key(VAL, s) for s in EPOCH_SCORES)]
    keys += [per_class(VAL, kind, n) for kind in EPOCH_KINDS for n in class_names]
    return sorted(keys)


def split_metric_keys(prefix: str, class_names: Sequence[str]) -> list[str]:
    """The keys an evaluation of a split under ``prefix`` logs (``test``, ``night``...)."""
    keys = [key(prefix, s) for s in SPLIT_SCORES]
    return keys + [per_class(prefix, kind, n) for kind in SPLIT_KINDS for n in class_names]


def split_key(metric_key: str) -> tuple[str, str]:
    """``val/iou/speck`` -> ``("val/iou", "speck")``; ``val/loss`` -> ``("val/loss", "")``.

    A key of three parts or more whose second part is a per-class kind is per class, whatever
    its prefix (``test/iou/pole``, ``night/missed/pole``)."""
    parts = metric_key.split("/")
    if len(parts) >= 3 and parts[-2] in PER_CLASS_KINDS:
        return key(*parts[:-1]), parts[-1]
    return metric_key, ""


# What a search may name as an objective, for its one-line error.
METRIC_FAMILIES = (
    f"{TRAIN_LOSS}, {VAL_LOSS}, {VAL_CE}",
    f"{VAL}/<{'|'.join(EPOCH_SCORES)}>",
    f"{TEST}/<{'|'.join(SPLIT_SCORES)}>",
    f"{VAL}|{TEST}/<{'|'.join(PER_CLASS_KINDS)}>/<class>",
)


def is_epoch_metric_key(metric_key: str) -> bool:
    """Whether runs log ``metric_key`` every epoch (:func:`epoch_metric_keys`, for some class)."""
    parts = metric_key.split("/")
    if len(parts) == 2:
        return metric_key in (TRAIN_LOSS, VAL_LOSS, VAL_CE) or (
            parts[0] == VAL and parts[1] in EPOCH_SCORES
        )
    return len(parts) == 3 and parts[0] == VAL and parts[1] in EPOCH_KINDS and bool(parts[2])


def is_metric_key(metric_key: str) -> bool:
    """Whether runs log ``metric_key`` (:data:`METRIC_FAMILIES`; a per-class key for some
    class: the class itself is known only once the data is)."""
    if is_epoch_metric_key(metric_key):
        return True
    parts = metric_key.split("/")
    if len(parts) == 2:
        return parts[0] == TEST and parts[1] in SPLIT_SCORES
    return (
        len(parts) == 3
        and parts[0] in (VAL, TEST)
        and parts[1] in PER_CLASS_KINDS
        and bool(parts[2])
    )


def axis_tag(axis: str) -> str:
    """``seglab.<axis>``: the tag naming the option a run chose for ``axis``."""
    return f"{TAG_PREFIX}{axis}"


def gallery_file(name: str, epoch: int) -> str:
    """``gallery/<class key>/epoch_<NNN>.png``: a class's failure gallery at ``epoch``, an
    artifact (an image logged under a key with a step would open the MLflow UI's chart view on
    the gallery, above the metrics)."""
    return f"{GALLERY}{class_key(name)}/epoch_{epoch:03d}.png"


def reliability_file(split: str) -> str:
    """``calibration/<split>.csv``: a split's reliability-diagram data, class by bin."""
    return f"calibration/{split}.csv"


def per_image_file(split: str) -> str:
    """``per_image/<split>.parquet``: a split's per-image per-class counts."""
    return f"per_image/{split}.parquet"
