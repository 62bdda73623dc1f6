"""Child processes (trainers, captioners): started in their own process group, recorded in the
store, stopped as a group, and reaped after a daemon crash so that no orphan keeps the GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lorad.store import Store
from lorad.system.groups import group_alive, signal_group
from lorad.system.logs import for_job, log

# Variables that belong to the daemon's own contract with systemd, never to its children.
PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a pid apart from its reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def spawn(store: Store, kind: str, job_ids: list[int], argv: list[str], **kwargs: Any
          ) -> subprocess.Popen:
    kwargs["start_new_session"] = True
    proc = subprocess.Popen(argv, **kwargs)
    started = start_time(proc.pid)
    if started is not None:
        store.add_child(proc.pid, started, kind, job_ids)
    return proc


@contextmanager
def tracked(store: Store, kind: str, job_ids: list[int]
            ) -> Iterator[Callable[..., subprocess.Popen]]:
    """A `spawn` for code that starts children itself: each one is recorded, and forgotten
    (its group killed if anything is left of it) when the block ends."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], **kwargs: Any) -> subprocess.Popen:
        started.append(spawn(store, kind, job_ids, argv, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.wait()
            forget(store, proc)


def forget(store: Store, proc: subprocess.Popen) -> None:
    if group_alive(proc.pid):
        signal_group(proc.pid, signal.SIGKILL)
    store.remove_child(proc.pid)


def reap_orphans(store: Store) -> None:
    """Kill the process groups a crashed daemon left behind (their leader is verified)."""
    for child in store.children():
        pgid = child["pgid"]
        leader_alive = start_time(pgid) == child["started"]
        if leader_alive or group_alive(pgid) and start_time(pgid) is None:
            _say_stopping(child["kind"], pgid, json.loads(child["job_ids"] or "[]"))
            signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            signal_group(pgid, signal.SIGKILL)
        store.remove_child(pgid)


def _say_stopping(kind: str, pgid: int, job_ids: list[int]) -> None:
    """One line per job the group worked for (a captioner serves several), naming the others."""
    if not job_ids:
        log.warning("stopping the %s process group %d left by a previous run", kind, pgid)
    for job_id in job_ids:
        shared = [str(other) for other in job_ids if other != job_id]
        noun = "jobs" if len(shared) > 1 else "job"
        also = f" (it also worked for {noun} {', '.join(shared)})" if shared else ""
        for_job(job_id).warning("stopping its %s process group %d, left by a previous run%s",
                                kind, pgid, also)
