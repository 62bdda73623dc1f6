"""One daemon per inbox: an exclusive lock on a hidden file inside the inbox, held while running.

The lock lives in the inbox itself, not in a well-known folder keyed on its path, so that every
daemon sharing the inbox sees it: under another user, in a systemd sandbox with its own /tmp and
/run, or on another machine mounting the same share. The watcher never takes it for a subject,
and the file is removed when the daemon stops (a kill leaves it: the next daemon takes it over).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lorad.system.pidlock import AlreadyRunning, PidLock

INBOX_LOCK = ".lorad-inbox.lock"


class InboxLock(PidLock):
    """<inbox>/.lorad-inbox.lock, naming the holder's pid and state_dir (one a line)."""

    def __init__(self, inbox: Path, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.path = Path(inbox) / INBOX_LOCK
        self.state_dir = state_dir

    def holder(self) -> str:
        return f"{os.getpid()}\n{self.state_dir}\n"

    def refusal(self, held: str) -> AlreadyRunning:
        lines = held.splitlines()
        pid = lines[0].strip() if lines and lines[0].strip() else "unknown"
        state_dir = lines[1].strip() if len(lines) > 1 and lines[1].strip() else "unknown"
        return AlreadyRunning(
            f"another lorad (pid {pid}, state_dir {state_dir}) is already watching the inbox "
            f"{self.path.parent}; one daemon per inbox: stop it first, or give this one its "
            "own inbox")

    def acquire(self) -> None:
        """Take the lock; a file the previous holder removed on its way out, after this one
        opened it, is no lock: take the one at the path now."""
        while True:
            super().acquire()
            if self._holds_the_file():
                return
            super().release()

    def release(self) -> None:
        """Give the lock back and remove its file, unless the file is no longer this lock's (the
        inbox was removed, or created anew)."""
        if self._holds_the_file():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        super().release()

    def _holds_the_file(self) -> bool:
        if self._handle is None:
            return False
        try:
            mine, there = os.fstat(self._handle.fileno()), os.stat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)

    def renew(self) -> None:
        """Take the lock again in an inbox that was removed and created anew (the old lock
        file went with the old folder)."""
        self.release()
        self.acquire()
