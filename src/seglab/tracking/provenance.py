"""What produced a run: the versions of seglab and its numeric stack, and seglab's git commit.

Logged as tags on every run, so a number can be traced to the code and libraries that made it
(a Keras release can change a loss; a TensorFlow build, the last digits of every metric).
"""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from seglab import schema

PACKAGES = ("seglab", "tensorflow", "keras", "mlflow", "numpy", "hydra-core")


def package_version(name: str) -> str:
    """The installed version of ``name``, or ``"not installed"``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git_commit(root: Path) -> tuple[str, bool]:
    """``(commit, dirty)`` of the checkout at ``root``; ``("unknown", False)`` outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, dirty


def provenance_tags(root: Path) -> dict[str, str]:
    """Tags ``seglab.git_commit``, ``seglab.git_dirty``, ``version.python`` and
    ``version.<package>`` for each of :data:`PACKAGES`."""
    commit, dirty = git_commit(root)
    tags = {
        schema.TAG_GIT_COMMIT: commit,
        schema.TAG_GIT_DIRTY: str(dirty).lower(),
        f"{schema.VERSION_TAG_PREFIX}python": platform.python_version(),
    }
    tags.update({f"{schema.VERSION_TAG_PREFIX}{name}": package_version(name) for name in PACKAGES})
    return tags
