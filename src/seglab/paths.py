"""Where seglab keeps its outputs: under the project root, whatever the working directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR_NAME = "conf"


def project_root() -> Path:
    """The project root: ``$SEGLAB_ROOT``, else the checkout this package lives in, else the cwd.

    An editable install (``pip install -e .``) runs from ``<root>/src/seglab``, so the root is
    two levels up when it holds ``pyproject.toml`` and ``conf/``.
    """
    if env := os.environ.get("SEGLAB_ROOT"):
        return Path(env).resolve()
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "pyproject.toml").is_file() and (candidate / CONF_DIR_NAME).is_dir():
        return candidate
    return Path.cwd().resolve()


def config_dir() -> Path:
    """The ``conf/`` directory that ``seglab train`` composes from."""
    return project_root() / CONF_DIR_NAME


def register_resolvers() -> None:
    """Register ``${seglab_root:}`` so configs can place outputs under the project root."""
    if not OmegaConf.has_resolver("seglab_root"):
        OmegaConf.register_new_resolver("seglab_root", lambda: str(project_root()))


def check_writable(folder: str | Path, where: str) -> None:
    """Raises ``ValueError`` beginning with ``where`` (the option and its value) when ``folder``
    cannot be created or a file written in it: the one write probe every command runs before it
    starts work."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{where}: cannot write to {folder}: {error}") from error
