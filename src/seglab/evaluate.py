"""``seglab evaluate run_id=<id> [split=test] [data overrides] [new_run=true]``.

Scores a run's logged model (its best checkpoint) on a split of its own data, or of any data:

    seglab evaluate run_id=<id>                        # the run's data, split test (or val)
    seglab evaluate run_id=<id> split=val
    seglab evaluate run_id=<id> data.root=/data/CamVid-night prefix=night
    seglab evaluate run_id=<id> data=folder data.root=/data/x data.image_size=[128,160]

``data.<key>=<value>`` changes the run's own data config (logged as ``config.yaml``; only
seglab's own datasets are built from it); ``data=<option>`` starts from
``conf/data/<option>.yaml`` instead. The per-image counts give
``<prefix>/miou``, ``<prefix>/min_iou``, ``<prefix>/pixel_acc``, ``<prefix>/class_acc`` and per
class ``<prefix>/iou|recall|missed/<class>`` (``prefix`` defaults to the split's name; data
with no test split is scored on val unless ``split`` says otherwise, as ``val/best/...``), logged
at the step of the model's checkpoint epoch into the run itself, or into a new run of the same
experiment with ``new_run=true`` (tagged ``seglab.evaluated_run``); ``per_image/<prefix>.parquet``
beside them; and the per-class table is printed. A run that already has ``<prefix>/...`` metrics
(training scores the test split itself) is never written over: choose another ``prefix`` or
``new_run=true``. ``batch_size=8`` sets how many images are scored at once; ``tracking_uri=...``
names the MLflow store (default: ``$MLFLOW_TRACKING_URI``, else ``outputs/mlflow.db``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import cast

import pandas as pd
from hydra import compose, initialize_config_dir
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from seglab import schema
from seglab.cli import bad_input, compose_options, flags, options_help, print_config
from seglab.config import build, check_required, current_target, group_options, key_paths
from seglab.core.checks import check_choice
from seglab.core.formatting import percent
from seglab.data.dataset import SegmentationData
from seglab.paths import config_dir, register_resolvers
from seglab.tracking.models import load_run_model
from seglab.tracking.run_log import log_split_scores
from seglab.tracking.store import check_existing_store
from seglab.tracking.tracker import MlflowTracker
from seglab.training.prediction import LabelPredictor, SplitScores, score_split

PREFIX = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
# The module docstring is the help; a terminal shows the reST literals without their backticks.
HELP = (__doc__ or "").replace("``", "").strip()


def split_words(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """The command's words -> (its own ``key=value`` options, the ``data``/``data.*`` ones)."""
    data = [w for w in words if w.partition("=")[0] == "data" or w.startswith("data.")]
    return [w for w in words if w not in data], data


def checked_options(cfg: DictConfig) -> DictConfig:
    """The command's options, each checked; raises naming the first bad one."""
    check_required(cfg)
    if not isinstance(cfg.new_run, bool):
        raise ValueError(f"new_run={cfg.new_run!r} is not one of [true, false]")
    if (
        isinstance(cfg.batch_size, bool)
        or not isinstance(cfg.batch_size, int)
        or cfg.batch_size < 1
    ):
        raise ValueError(f"batch_size={cfg.batch_size!r} must be a whole number >= 1")
    if cfg.prefix is not None and not PREFIX.fullmatch(str(cfg.prefix)):
        raise ValueError(
            f"prefix={cfg.prefix!r}: use letters, digits, '_' and '-', in parts separated by '/' "
            f"(it names the metrics and the artifact {schema.per_image_file('<prefix>')})"
        )
    return cfg


def split_and_prefix(
    split: str | None, prefix: str | None, splits: Sequence[str]
) -> tuple[str, str, str]:
    """``(split, prefix, note)``: the split given, else ``test``, or ``val`` when the data has
    no test split (then logged as ``val/best/...``: training logged ``val/...`` itself, the
    scores of its last epoch); the prefix given, else the split's name; the note says which
    split was chosen when none was given and it is not ``test``."""
    if split is not None:
        return str(split), str(prefix or split), ""
    if schema.TEST in splits:
        return schema.TEST, str(prefix or schema.TEST), ""
    chosen = str(prefix or schema.key(schema.VAL, "best"))
    note = (
        f"the data has no {schema.TEST} split (its splits: {', '.join(splits)}): scoring "
        f"{schema.VAL} with the best checkpoint, logged as {chosen}/... (split=<name> and "
        "prefix=<name> choose)"
    )
    return schema.VAL, chosen, note


def data_config(run_config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The run's data config with ``overrides``; ``data=<option>`` starts from that option."""
    if chosen := [o.removeprefix("data=") for o in overrides if o.startswith("data=")]:
        check_choice("data", chosen[-1], group_options("data"))
        register_resolvers()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            composed = compose("train", overrides=list(overrides))
        check_required(composed)
        return cast(DictConfig, composed.data)
    changes = OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides])
    return cast(DictConfig, OmegaConf.merge(run_config.data, changes))


def dataset_targets() -> list[str]:
    """The dataset builders ``conf/data/`` names: the only ``_target_`` a data config may have
    here."""
    files = sorted((config_dir() / "data").glob("*.yaml"))
    loaded = [cast(DictConfig, OmegaConf.load(path)) for path in files]
    return sorted({str(c["_target_"]) for c in loaded if "_target_" in c})


def check_dataset_target(data: DictConfig, run_id: str) -> DictConfig:
    """``data`` if it builds one of seglab's datasets and nothing else (a target from before
    seglab's modules moved is renamed); raises otherwise.

    The data config comes from the run's logged ``config.yaml``: whoever can write a run's
    artifacts on a shared store must not choose what is called (``hydra.utils.instantiate``
    calls any importable ``_target_``, nested ones included, and Hydra's own block list lets
    file writers such as ``tensorflow.io.write_file`` through).
    """
    allowed = dataset_targets()
    target = current_target(str(data.get("_target_")))
    if target not in allowed:
        raise ValueError(
            f"run {run_id}: data._target_={data.get('_target_')!r} in its {schema.CONFIG_FILE} "
            f"is not one of seglab's datasets {allowed}; refusing to build it"
        )
    if nested := key_paths(OmegaConf.to_container(data), "_target_", "data")[1:]:
        raise ValueError(
            f"run {run_id}: {nested[0]} in its {schema.CONFIG_FILE} would be built too; a data "
            "config "
            "holds values only, refusing to build it"
        )
    checked = data.copy()
    checked._target_ = target
    return checked


def run_config(tracker: MlflowTracker, run_id: str) -> DictConfig:
    """The run's logged ``config.yaml``; raises naming ``run_id`` when there is none."""
    try:
        local = tracker.client.download_artifacts(run_id, schema.CONFIG_FILE)
    except (MlflowException, OSError) as error:
        raise ValueError(
            f"run_id={run_id!r} has no {schema.CONFIG_FILE} at {tracker.uri}: {error}"
        ) from error
    return cast(DictConfig, OmegaConf.load(local))


def check_compatible(model_shape: tuple, num_classes: int, data: SegmentationData) -> None:
    """The data must match the model's input size and class count; raises naming the option."""
    if tuple(model_shape[1:3]) != data.image_shape[:2]:
        raise ValueError(
            f"data.image_size={list(data.image_shape[:2])} but the model takes "
            f"{list(model_shape[1:3])}: set data.image_size={list(model_shape[1:3])}"
        )
    if num_classes != data.num_classes:
        raise ValueError(
            f"the data has {data.num_classes} classes {list(data.class_names)} but the model "
            f"predicts {num_classes}"
        )


def per_class_frame(scores: SplitScores, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: pixels, IoU, recall, share of its images missed entirely, where its
    outline is: boundary IoU, HD95 (pixels; ``inf``: missed entirely in an image) and the
    surface Dice within 1 pixel, and the expected calibration error of its probability."""
    region = scores.counts.scores()
    frame = pd.DataFrame(
        {
            "class": list(class_names),
            "pixels": region.support,
            "iou": region.iou.round(3),
            "recall": region.recall.round(3),
            "missed": scores.counts.missed().round(3),
        }
    )
    if scores.surface is not None:
        frame = frame.assign(
            boundary_iou=scores.surface.boundary_iou().round(3),
            hd95=scores.surface.hd95().round(2),
            nsd=scores.surface.nsd().round(3),
        )
    return frame.assign(ece=scores.calibration.ece().round(3))


def main(argv: Sequence[str] | None = None) -> int:
    """Scores the run's model and logs the scores; returns the exit status."""
    words, show_help, show_config = flags(sys.argv[1:] if argv is None else argv)
    if show_help:
        print(options_help("evaluate", HELP))
        return 0
    own, overrides = split_words(words)
    try:
        cfg = compose_options("evaluate", own)
        if show_config:
            print_config(cfg)
            return 0
        checked_options(cfg)
        run_id = str(cfg.run_id)
        tracker = MlflowTracker(tracking_uri=cfg.tracking_uri)
        register_resolvers()  # the logged config may hold ${seglab_root:}
        check_existing_store(tracker.uri, tracker.uri_source)
        config = run_config(tracker, run_id)
        source = tracker.client.get_run(run_id)
        data_node = check_dataset_target(data_config(config, overrides), run_id)
        data: SegmentationData = build(data_node)
        split, prefix, note = split_and_prefix(cfg.split, cfg.prefix, data.splits)
        if not cfg.new_run and schema.key(prefix, schema.MIOU) in source.data.metrics:
            raise ValueError(
                f"run {run_id} already has {prefix}/... metrics; give prefix=<another name> or "
                "new_run=true (nothing is written over)"
            )
        data.stream(split)  # an unknown split is named before the model is loaded
        model, metadata = load_run_model(tracker, run_id)
        check_compatible(model.input_shape, int(model.output_shape[-1]), data)
        scores = score_split(LabelPredictor(model), data, split, int(cfg.batch_size))
    except ValueError as error:
        return bad_input("seglab evaluate", error)
    names = list(data.class_names)
    epoch = int(metadata.get("checkpoint_epoch", 0))
    if cfg.new_run:
        tracker.experiment_name = tracker.client.get_experiment(source.info.experiment_id).name
        tracker.run_name = f"evaluate {source.info.run_name} on {prefix}"
        tags = {
            schema.TAG_EVALUATED_RUN: run_id,
            schema.TAG_CLASS_NAMES: source.data.tags.get(schema.TAG_CLASS_NAMES, ""),
        }
        with tracker.start_run(tags=tags):
            log_split_scores(tracker, scores, names, prefix, epoch)
    else:
        tracker.run_id = run_id
        log_split_scores(tracker, scores, names, prefix, epoch)
    region = scores.counts.scores()
    if note:
        print(note)
    print(
        f"{prefix}: {len(scores.counts.names)} images of split {split!r} scored with the model "
        f"of run {run_id} (checkpoint epoch {epoch})\n"
        f"pixel_acc {percent(region.pixel_acc)}   class_acc {percent(region.class_acc)}   "
        f"miou {region.miou:.3f}   min_iou {region.min_iou:.3f}"
    )
    print(per_class_frame(scores, names).to_string(index=False))
    print(f"logged as {prefix}/... into MLflow run {tracker.run_id} at {tracker.uri}")
    return 0


def cli() -> None:
    """``seglab evaluate``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
