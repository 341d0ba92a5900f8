"""Checks of option values shared by the modules, each raising ``ValueError`` with one line that
names the option, the bad value and what would be valid."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from seglab import schema


def check_choice(option: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises ``ValueError`` naming ``option``, the bad ``value`` and the valid ``choices``."""
    valid = list(choices)
    if value not in valid:
        raise ValueError(f"{option}={value!r} is not one of {valid}")


def check_class_names(names: object, source: str) -> list[str]:
    """At least two unique class names, as a list of strings; raises naming ``source``.

    A name must be text or a number: YAML reads ``off``, ``on``, ``no`` and ``yes`` unquoted as
    booleans, which would silently become ``False`` and ``True``. Names are also checked for
    their metric keys (:func:`seglab.schema.class_keys`): none empty, no two alike.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"{source} must be a list of class names, got {names!r}")
    if booleans := [n for n in names if isinstance(n, bool)]:
        raise ValueError(
            f"{source}: {booleans[0]!r} is not a class name (YAML reads off, on, no and yes as "
            "booleans); quote the names, e.g. ['off', 'on']"
        )
    if others := [n for n in names if not isinstance(n, str | int | float)]:
        raise ValueError(f"{source}: {others[0]!r} is not a class name (give text)")
    names = [str(n) for n in names]
    if len(names) < 2:
        raise ValueError(f"{source}: give at least 2 class names, got {names}")
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(
            f"{source} names {duplicates} more than once: every class needs its own name "
            "(metrics are keyed by name)"
        )
    schema.class_keys(names, source)
    return names


def listed(items: Sequence[str], most: int = 3) -> str:
    """The first ``most`` items joined by ``; ``, and how many more there are."""
    more = f"; and {len(items) - most} more" if len(items) > most else ""
    return "; ".join(items[:most]) + more
