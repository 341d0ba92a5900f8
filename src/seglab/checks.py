"""Config checks shared by the modules: one wording for every "bad value" error, and building
objects from config nodes with our own errors first."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seglab.paths import config_dir


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises ``ValueError`` naming ``option``, the bad ``value`` and the valid ``choices``."""
    valid = list(choices)
    if value not in valid:
        raise ValueError(f"{option}={value!r} is not one of {valid}")


def group_options(group: str) -> list[str]:
    """The options of a config group: the files of ``conf/<group>/``, by name."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def check_group_overrides(args: Sequence[str]) -> None:
    """Raises naming the group, the bad option and the group's options when a command-line
    ``group=option`` (or a sweep over options, ``loss=ce,dicee``) names no file of
    ``conf/<group>/``: checked before Hydra composes, whose own error is a screen of search
    paths. Hydra's groups (``hydra/...``) and what Hydra cannot parse are left to Hydra."""
    try:
        overrides = OverridesParser.create().parse_overrides(
            [arg for arg in args if not arg.startswith("-")]
        )
    except HydraException:
        return
    for override in overrides:
        group = override.key_or_group
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


def check_writable(folder: str, option: str) -> None:
    """Raises naming ``option`` when ``folder`` cannot be created or written."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{option}={folder!r} is not writable: {error}") from error
