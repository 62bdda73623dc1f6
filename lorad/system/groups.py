"""Process groups: whether one is alive, a signal to all of it, and a stop (SIGTERM, then
SIGKILL after a grace time). Every child lorad starts leads a group of its own, so a stop reaches
whatever the child started too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
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
