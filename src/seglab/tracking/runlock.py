"""Who trains a run now: a run's claim on its checkpoint folder, so a live run is never resumed."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any


class RunLock:
    """A run's claim on its checkpoint folder while a process trains it.

    Two parts. An OS lock (``fcntl.flock``) on ``<directory>/owner.lock``, held for as long as
    the process trains: the OS releases it when the process ends, however it ends (``kill -9``
    included), so a crashed run is resumable at once. And ``owner.json``, naming the host and
    process, touched every epoch: on another host (a shared filesystem, where locks may not
    reach) a run whose ``owner.json`` was touched within :attr:`stale_after` seconds counts as
    live.
    """

    stale_after = 3600.0

    def __init__(self) -> None:
        self._file: Any = None
        self.directory: Path | None = None

    @staticmethod
    def holder(directory: str | Path) -> dict[str, Any] | None:
        """Who trains the run of ``directory`` now (host, pid, seconds since its heartbeat),
        or ``None`` when nobody does."""
        directory = Path(directory)
        owner = directory / "owner.json"
        if not owner.is_file():
            return None
        try:
            info = json.loads(owner.read_text())
        except (OSError, ValueError):
            return None
        age = time.time() - owner.stat().st_mtime
        if info.get("host") != socket.gethostname():
            return {**info, "heartbeat_age": age} if age < RunLock.stale_after else None
        with open(directory / "owner.lock", "a+") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return {**info, "heartbeat_age": age}
            fcntl.flock(probe, fcntl.LOCK_UN)
        return None

    def acquire(self, directory: str | Path, run_id: str) -> None:
        """Claims ``directory`` for this process; raises naming the holder when it is taken."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if (held := self.holder(directory)) is not None:
            raise ValueError(describe_holder(run_id, held))
        handle = open(directory / "owner.lock", "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            held = self.holder(directory) or {}
            raise ValueError(describe_holder(run_id, held)) from None
        self._file, self.directory = handle, directory
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        (directory / "owner.json").write_text(json.dumps(owner))

    def heartbeat(self) -> None:
        """Marks the run alive now (every epoch)."""
        if self.directory is not None:
            (self.directory / "owner.json").touch()

    def release(self) -> None:
        """Gives the run up (at its end, whatever the status)."""
        if self._file is None or self.directory is None:
            return
        (self.directory / "owner.json").unlink(missing_ok=True)
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def describe_holder(run_id: str, held: dict[str, Any]) -> str:
    """One line: which process trains ``run_id``, so it must not be resumed."""
    age = held.get("heartbeat_age")
    when = f", last heartbeat {age:.0f} s ago" if age is not None else ""
    return (
        f"run {run_id} is being trained by pid {held.get('pid', '?')} on host "
        f"{held.get('host', '?')}{when}: a live run is never resumed; resume it once that "
        "process has ended"
    )
