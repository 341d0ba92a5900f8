"""Composing and building Hydra configs, with seglab's own one-line errors first: unknown group
options, unset required options, and building objects from config nodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seglab.core.checks import check_choice
from seglab.paths import config_dir


def group_options(group: str) -> list[str]:
    """The options of a config group: the files of ``conf/<group>/``, by name."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


# Options that moved, by their former keys: the command line names the new key.
MOVED_OPTIONS = {
    "trainer.resume": "resume",
    "trainer.checkpoint_monitor": "checkpoint.monitor",
    "trainer.checkpoint_mode": "checkpoint.mode",
    "trainer.checkpoint_tie_breaker": "checkpoint.tie_breaker",
    "trainer.checkpoint_tie_tolerance": "checkpoint.tie_tolerance",
}


def check_overrides(args: Sequence[str]) -> None:
    """Raises naming the group, the bad option and the group's options when a command-line
    ``group=option`` (or a sweep over options, ``loss=ce,dicee``) names no file of
    ``conf/<group>/``, and naming the new key of an option that moved (:data:`MOVED_OPTIONS`):
    checked before Hydra composes, whose own errors are a screen of search paths. Hydra's groups
    (``hydra/...``) and what Hydra cannot parse are left to Hydra."""
    try:
        overrides = OverridesParser.create().parse_overrides(
            [arg for arg in args if not arg.startswith("-")]
        )
    except HydraException:
        return
    for override in overrides:
        group = override.key_or_group
        if group.lstrip("+~") in MOVED_OPTIONS:
            moved = MOVED_OPTIONS[group.lstrip("+~")]
            raise ValueError(f"{group} is now {moved}: write {moved}={override.value()}")
        if override.is_delete() or group.startswith("hydra/"):
            continue
        if not (config_dir() / group).is_dir() or isinstance(override.value(), Glob):
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        for value in values:
            if value != "null":  # an optional group left empty (experiment=null)
                check_choice(group, value, group_options(group))


def check_required(cfg: DictConfig) -> None:
    """Raises naming every option the command left unset (``???`` in its config, such as
    ``data.root`` of ``data=camvid``), before anything is read or written."""
    if missing := sorted(OmegaConf.missing_keys(cfg)):
        wanted = " ".join(f"{key}=<value>" for key in missing)
        raise ValueError(f"{', '.join(missing)} not set: add {wanted} to the command")


def key_paths(node: Any, key: str, path: str = "") -> list[str]:
    """The dotted path of every ``key`` in a plain nested container (dicts and lists), each
    level's own before those below it."""
    if isinstance(node, Mapping):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return []
    prefix = f"{path}." if path else ""
    found = [f"{prefix}{key}"] if isinstance(node, Mapping) and key in node else []
    for name, value in children:
        found += key_paths(value, key, f"{prefix}{name}")
    return found


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises our own ``ValueError`` unwrapped, so the
    message naming the bad option is the first thing the user reads."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise


# Config targets as runs logged them before seglab's modules moved into subpackages: a run's
# logged config.yaml and params still name them.
FORMER_TARGETS = {
    "seglab.trainer.Trainer": "seglab.training.trainer.Trainer",
    "seglab.model.build_unet": "seglab.training.model.build_unet",
    "seglab.augment.Augmenter": "seglab.data.augment.Augmenter",
    "seglab.class_weights.WeightScheme": "seglab.core.class_weights.WeightScheme",
    "seglab.tracking.MlflowTracker": "seglab.tracking.tracker.MlflowTracker",
    "seglab.datasets.folder.folder": "seglab.data.datasets.folder.folder",
    "seglab.datasets.shapes.shapes": "seglab.data.datasets.shapes.shapes",
    "seglab.datasets.oxford_pet.oxford_pet": "seglab.data.datasets.oxford_pet.oxford_pet",
}


def current_target(target: str) -> str:
    """A logged ``_target_`` as seglab names it now (:data:`FORMER_TARGETS`)."""
    return FORMER_TARGETS.get(target, target)


CLASS_WEIGHT_ERROR = (
    "Keras' class_weight is not supported: fit(class_weight=...) looks up one weight per "
    "sample from its label and, on (B, H, W) segmentation masks, fails in Keras 3 with "
    "'TypeError: only 0-dimensional arrays can be converted to Python scalars'. seglab applies "
    "class weights itself: as per-pixel sample_weight maps for pixelwise losses and inside the "
    "mean over classes for region losses. Choose a scheme with "
    "class_weights=<none|inverse_frequency|inverse_sqrt|median_frequency|enet|"
    "effective_number|manual|per_batch> (manual: class_weights.weights=[...])."
)


def reject_keras_class_weight(config: Mapping[str, Any]) -> None:
    """Raises :data:`CLASS_WEIGHT_ERROR` if any key of a (nested) config is ``class_weight``."""
    if found := key_paths(config, "class_weight"):
        raise ValueError(f"config key {found[0]}: {CLASS_WEIGHT_ERROR}")
