"""Ctrl-C and SIGTERM end a run like ``KeyboardInterrupt``, but never halfway through a write.

A ``KeyboardInterrupt`` raised inside a SQLAlchemy write can leave SQLite locked by a connection
nobody closes, so marking the run KILLED then fails with "database is locked" (seen in CI).
Code in a :func:`deferred` block finishes first; the interrupt is raised when the outermost
block exits, or at the next :func:`raise_if_received` (the trainer calls it after every batch).
A second signal while deferred interrupts at once, for a user who really means it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_received: int | None = None  # the signal not yet turned into a KeyboardInterrupt that landed
_depth = 0  # how many deferred blocks are open


def install(*signals: int) -> None:
    """Makes each of ``signals`` (e.g. ``SIGINT``, ``SIGTERM``) raise ``KeyboardInterrupt``."""

    def handler(signum: int, frame: object) -> None:
        global _received
        repeated = _received is not None
        _received = signum
        if _depth == 0 or repeated:
            raise KeyboardInterrupt(f"signal {signum}")

    for number in signals:
        signal.signal(number, handler)


def received() -> int | None:
    """The pending signal's number, or None."""
    return _received


def raise_if_received() -> None:
    """Raises ``KeyboardInterrupt`` when a signal is pending.

    Also catches a signal whose exception Python swallowed (one raised inside a ``__del__``,
    where TensorFlow frees iterators, is only printed).
    """
    if _received is not None:
        raise KeyboardInterrupt(f"signal {_received}")


def acknowledge() -> None:
    """Marks the pending signal handled: the run is being ended as KILLED."""
    global _received
    _received = None


@contextmanager
def deferred() -> Iterator[None]:
    """A block a first signal does not interrupt; nests."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _depth == 0:  # reached only when the block raised nothing
        raise_if_received()
