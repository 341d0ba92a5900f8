"""Config checks shared by the modules: one wording for every "bad value" error, and building
objects from config nodes with our own errors first."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises ``ValueError`` naming ``option``, the bad ``value`` and the valid ``choices``."""
    valid = list(choices)
    if value not in valid:
        raise ValueError(f"{option}={value!r} is not one of {valid}")


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
