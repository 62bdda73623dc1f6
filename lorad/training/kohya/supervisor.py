"""Running one Kohya process: its own process group, its output logged and parsed as it comes,
silence and cancellation watched, stopped as a group (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lorad.store import Store
from lorad.system import children
from lorad.training.kohya.progress import LineSplitter, Progress, ProgressTracker

BAR_LOG_INTERVAL = 5.0  # seconds between progress-bar redraws kept in train.log
PROGRESS_INTERVAL = 1.0  # seconds between progress writes to the store


@dataclass
class RunOutcome:
    ended: str  # "exited", "cancelled", "stalled" or "interrupted" (the daemon is stopping)
    exit_code: int | None
    tail: str
    progress: Progress | None
    seconds: float
    checkpoints: int


@dataclass
class RunControl:
    """How the caller steers a run."""

    on_progress: Callable[[Progress], None]
    cancelled: Callable[[], bool]
    stopping: threading.Event
    stall_seconds: float
    grace_seconds: float


def _pump(stream: IO[bytes], name: str, out: queue.Queue) -> None:
    while True:
        chunk = os.read(stream.fileno(), 65536)
        out.put((name, chunk))
        if not chunk:
            return


class _Log:
    """train.log: every line, except that progress-bar redraws are thinned out.

    A log that cannot be written (its disk is full) stops being written: the run goes on, and
    what the trainer says about it (kept in memory) decides how it ended."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "a", encoding="utf-8", errors="replace")
        self.last_bar = 0.0
        self.pending_bar: str | None = None
        self.broken = False

    def write(self, line: str, is_bar: bool) -> None:
        now = time.monotonic()
        if is_bar and now - self.last_bar < BAR_LOG_INTERVAL:
            self.pending_bar = line
            return
        if is_bar:
            self.last_bar = now
        self.pending_bar = None
        self._put(line)

    def _put(self, line: str) -> None:
        if self.broken:
            return
        try:
            self.handle.write(line + "\n")
            self.handle.flush()
        except OSError:
            self.broken = True

    def close(self) -> None:
        if self.pending_bar:
            self._put(self.pending_bar)
        with contextlib.suppress(OSError):
            self.handle.close()


def supervise(store: Store, job_id: int, argv: list[str], *, cwd: Path, env: dict[str, str],
              log_path: Path, header: str, control: RunControl,
              tracker: ProgressTracker | None = None) -> RunOutcome:
    tracker = tracker or ProgressTracker()
    log = _Log(log_path)
    log.write(header, False)
    started = time.monotonic()
    proc = children.spawn(store, "train", [job_id], argv, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    chunks: queue.Queue = queue.Queue()
    pumps = [threading.Thread(target=_pump, args=(s, n, chunks), daemon=True)
             for s, n in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for pump in pumps:
        pump.start()
    splitters = {"out": LineSplitter(), "err": LineSplitter()}
    decoders = {n: codecs.getincrementaldecoder("utf-8")("replace") for n in splitters}
    tail: deque[str] = deque(maxlen=80)
    open_streams, ended = 2, "exited"
    last_output = last_report = last_check = time.monotonic()
    stop_when_saved: tuple[int, float] | None = None

    def take(lines: list[str]) -> None:
        for line in lines:
            is_bar = tracker.feed(line)
            log.write(line, is_bar)
            if line.strip() and not is_bar:
                tail.append(line)

    try:
        while open_streams:
            try:
                name, chunk = chunks.get(timeout=0.25)
            except queue.Empty:
                chunk = None
            now = time.monotonic()
            if chunk is not None:
                if chunk:
                    last_output = now
                    take(splitters[name].feed(decoders[name].decode(chunk)))
                else:
                    open_streams -= 1
                    take(splitters[name].feed(decoders[name].decode(b"", final=True)))
                    take(splitters[name].flush())
            if now - last_report >= PROGRESS_INTERVAL:
                last_report = now
                control.on_progress(tracker.snapshot())
            if now - last_check < 1.0 or ended != "exited":
                continue
            last_check = now
            if control.cancelled():
                ended = "cancelled"
            elif now - last_output > control.stall_seconds:
                ended = "stalled"
                tail.append(f"lorad: no output for {control.stall_seconds / 60:g} minutes; "
                            "stopping the run")
            elif control.stopping.is_set():
                if stop_when_saved is None:
                    stop_when_saved = _plan_stop(tracker, control.grace_seconds, now)
                saved, deadline = stop_when_saved
                if tracker.checkpoints <= saved and now < deadline:
                    continue
                ended = "interrupted"
            if ended != "exited":
                children.stop_group(proc, control.grace_seconds if ended != "stalled" else 5)
        proc.wait()
    finally:
        if proc.poll() is None:
            children.stop_group(proc, 5)
        children.forget(store, proc)
        log.close()
    control.on_progress(tracker.snapshot())
    return RunOutcome(ended, proc.returncode, "\n".join(tail), tracker.snapshot(),
                      time.monotonic() - started, tracker.checkpoints)


def _plan_stop(tracker: ProgressTracker, grace: float, now: float) -> tuple[int, float]:
    """When stopping: wait for the epoch in progress to save if that fits in the grace time."""
    left = tracker.snapshot().seconds_to_epoch_end()
    if left is not None and left < grace * 0.8:
        return tracker.checkpoints, now + grace * 0.8
    return tracker.checkpoints, now

