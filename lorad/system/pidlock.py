"""One daemon per state folder: an exclusive lock on <state_dir>/lorad.pid, held while running."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class AlreadyRunning(Exception):
    pass


class PidLock:
    """An exclusive lock on a file that says who holds it (this process's pid); held while
    lorad runs, and gone with the process however it ends."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lorad.pid"
        self._handle: IO[str] | None = None

    def holder(self) -> str:
        """What the lock file says while this process holds it."""
        return f"{os.getpid()}\n"

    def refusal(self, held: str) -> AlreadyRunning:
        """The error for a lock that another process holds; held is its file's text."""
        pid = held.strip() or "unknown"
        return AlreadyRunning(f"another lorad is already running on {self.path.parent} "
                              f"(pid {pid}); stop it first, or give this one its own state_dir")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            held = handle.read()
            handle.close()
            raise self.refusal(held) from None
        handle.seek(0)
        handle.truncate()
        handle.write(self.holder())
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

