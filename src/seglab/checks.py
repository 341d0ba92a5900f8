"""Config checks shared by the modules: one wording for every "bad value" error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises ``ValueError`` naming ``option``, the bad ``value`` and the valid ``choices``."""
    valid = list(choices)
    if value not in valid:
        raise ValueError(f"{option}={value!r} is not one of {valid}")
