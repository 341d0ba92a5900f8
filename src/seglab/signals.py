"""Ctrl-C and SIGTERM end a run like ``KeyboardInterrupt``, but never halfway through a write.

A ``KeyboardInterrupt`` raised inside a SQLAlchemy write can leave SQLite locked by a connection
nobody closes, so marking the run KILLED then fails with "database is locked" (seen in CI).
Code in a :func:`deferred` block finishes first; the interrupt is raised when the outermost
block exits, or at the next :func:`raise_if_received` (the trainer calls it after every batch).
A second signal while deferred interrupts at once, for a user who really means it.

A scheduler's preemption signal (submitit's SIGUSR2 on SLURM: checkpoint, requeue, exit) is
deferred the same way by :func:`install_preemption`: it raises :class:`Preempted` at the next
safe point, the run ends KILLED with its checkpoint, and :func:`hand_over` then calls the
scheduler's own handler, which requeues the job.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_received: int | None = None  # the signal not yet turned into a KeyboardInterrupt that landed
_depth = 0  # how many deferred blocks are open
_schedulers: dict[int, Callable[[int, Any], Any]] = {}  # preemption handlers, run at hand_over


class Preempted(BaseException):
    """The scheduler is taking the job's node; raised at a safe point, like a signal's
    ``KeyboardInterrupt``, and not one: a sweep goes on after a preempted job."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped by the scheduler ({name}: preemption or time limit)")
        self.signum = signum


def _interrupt(signum: int) -> BaseException:
    return Preempted(signum) if signum in _schedulers else KeyboardInterrupt(f"signal {signum}")


def _handle(signum: int, frame: object) -> None:
    global _received
    repeated = _received is not None
    _received = signum
    if _depth == 0 or repeated:
        raise _interrupt(signum)


def install(*signals: int) -> None:
    """Makes each of ``signals`` (e.g. ``SIGINT``, ``SIGTERM``) raise ``KeyboardInterrupt``."""
    for number in signals:
        signal.signal(number, _handle)


def preemption_signal() -> int:
    """The signal submitit sends before a preemption or a time limit (``SUBMITIT_PREEMPT_SIGNAL``,
    by default ``USR2``)."""
    return int(signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"])


def install_preemption(signum: int) -> None:
    """Defers the handler a scheduler set for ``signum`` to :func:`hand_over`; the signal raises
    :class:`Preempted` at the next safe point. Without such a handler (no scheduler, or the
    signal's default action) nothing changes."""
    previous = signal.getsignal(signum)
    # Not seglab's own (a second job in this process) nor Python's Ctrl-C handler.
    if callable(previous) and previous not in (_handle, signal.default_int_handler):
        _schedulers[signum] = previous
        install(signum)


def hand_over(preempted: Preempted) -> None:
    """Calls the scheduler's handler for ``preempted`` (submitit requeues the job and exits)."""
    acknowledge()
    _schedulers[preempted.signum](preempted.signum, None)


def received() -> int | None:
    """The pending signal's number, or None."""
    return _received


def raise_if_received() -> None:
    """Raises ``KeyboardInterrupt`` (:class:`Preempted` for a preemption) when a signal is
    pending.

    Also catches a signal whose exception Python swallowed (one raised inside a ``__del__``,
    where TensorFlow frees iterators, is only printed).
    """
    if _received is not None:
        raise _interrupt(_received)


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
