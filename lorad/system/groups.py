"""Processes and process groups: whether one is alive, a signal to a whole group, and a stop
(SIGTERM, then SIGKILL after a grace time). Every child lorad starts leads a group of its own, so
a stop reaches whatever the child started too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists."""
    return _answers(os.killpg, pgid)


def process_alive(pid: int) -> bool:
    """Whether the process exists (another user's, which lorad may not signal, counts too)."""
    return _answers(os.kill, pid)


def _answers(send: Callable[[int, int], None], target: int) -> bool:
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the whole group, SIGKILL after `grace` seconds; waits for the leader."""
    signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    if group_alive(proc.pid):
        signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
