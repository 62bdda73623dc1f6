"""Following one Kohya run: its output logged and parsed as it comes, silence and cancellation
watched, and the run stopped as a group (SIGTERM, then SIGKILL) when it must end.

Where the run executes is the executor's business (`lorad.training.executor`): this module only
sees its output and asks it to stop.
"""

from __future__ import annotations

import codecs
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorad.training.executor import Chunk, TrainingRun
from lorad.training.kohya.progress import LineSplitter, Progress, ProgressTracker

BAR_LOG_INTERVAL = 5.0  # seconds between progress-bar redraws kept in train.log
PROGRESS_INTERVAL = 1.0  # seconds between progress writes to the store
TAIL_LINES = 80  # the end of the output kept to tell why a run failed


@dataclass
class RunOutcome:
    ended: str  # "exited", "cancelled", "stalled" or "interrupted" (the daemon is stopping)
    exit_code: int | None
    tail: str
    progress: Progress | None
    seconds: float
    checkpoints: int
    training_started: bool = False  # Kohya printed "running training": its checks had passed
    lost: str | None = None  # the machine it ran on was lost (why): not the trainer's failure


@dataclass
class RunControl:
    """How the caller steers a run."""

    on_progress: Callable[[Progress], None]
    cancelled: Callable[[], bool]
    stopping: threading.Event
    stall_seconds: float
    grace_seconds: float
    say: Callable[[str], None]  # what a person should know as it happens (why a stop waits)
    epoch_offset: int = 0  # epochs trained before this run: the run's epoch 1 is this + 1


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


class _Reader:
    """The run's output: decoded, split into lines, logged, parsed, and its tail kept."""

    def __init__(self, log: _Log, tracker: ProgressTracker) -> None:
        self.log = log
        self.tracker = tracker
        self.splitters = {"out": LineSplitter(), "err": LineSplitter()}
        self.decoders = {n: codecs.getincrementaldecoder("utf-8")("replace")
                         for n in self.splitters}
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.open_streams = len(self.splitters)
        self.last_output = time.monotonic()

    def take(self, chunk: Chunk) -> None:
        name, data = chunk
        if data:
            self.last_output = time.monotonic()
            self._lines(self.splitters[name].feed(self.decoders[name].decode(data)))
            return
        self.open_streams -= 1
        self._lines(self.splitters[name].feed(self.decoders[name].decode(b"", final=True)))
        self._lines(self.splitters[name].flush())

    def _lines(self, lines: list[str]) -> None:
        for line in lines:
            is_bar = self.tracker.feed(line)
            self.log.write(line, is_bar)
            if line.strip() and not is_bar:
                self.tail.append(line)


def supervise(start: Callable[[], TrainingRun], *, log_path: Path, header: str,
              control: RunControl, tracker: ProgressTracker | None = None) -> RunOutcome:
    """Start a run (`start()`, after the header is in the log) and follow it until it exits, or
    stop it (cancelled, silent for too long, the daemon stopping once the epoch being saved is
    saved); release it in every case."""
    tracker = tracker or ProgressTracker()
    log = _Log(log_path)
    log.write(header, False)
    started = time.monotonic()
    reader = _Reader(log, tracker)
    try:
        run = start()
    except BaseException:
        log.close()
        raise
    try:
        ended = _follow(run, reader, control)
        exit_code = run.wait()
    finally:
        run.release()
        log.close()
    control.on_progress(tracker.snapshot())
    return RunOutcome(ended, exit_code, "\n".join(reader.tail), tracker.snapshot(),
                      time.monotonic() - started, tracker.checkpoints, tracker.training_started,
                      run.lost)


def _follow(run: TrainingRun, reader: _Reader, control: RunControl) -> str:
    """Read the run's output until both its streams end; how the run ended."""
    ended = "exited"
    last_report = last_check = time.monotonic()
    stop_when_saved: tuple[int, float] | None = None
    while reader.open_streams:
        chunk = run.output(timeout=0.25)
        if chunk is not None:
            reader.take(chunk)
        now = time.monotonic()
        if not run.placed:  # waiting for a place to run: its silence is no stall
            reader.last_output = now
        if now - last_report >= PROGRESS_INTERVAL:
            last_report = now
            control.on_progress(reader.tracker.snapshot())
        if now - last_check < 1.0 or ended != "exited":
            continue
        last_check = now
        if control.stopping.is_set() and stop_when_saved is None:
            stop_when_saved = _plan_stop(reader.tracker, control, now)
        ended = _verdict(reader, control, stop_when_saved, now)
        if ended == "stalled":
            reader.tail.append(f"lorad: no output for {control.stall_seconds / 60:g} minutes; "
                               "stopping the run")
        if ended != "exited":
            run.stop(control.grace_seconds if ended != "stalled" else 5)
    return ended


def _verdict(reader: _Reader, control: RunControl, stop_when_saved: tuple[int, float] | None,
             now: float) -> str:
    """"exited" while the run may go on; else why it must stop now."""
    if control.cancelled():
        return "cancelled"
    if now - reader.last_output > control.stall_seconds:
        return "stalled"
    if stop_when_saved is not None:
        saved, deadline = stop_when_saved
        if reader.tracker.checkpoints > saved or now >= deadline:
            return "interrupted"
    return "exited"


def _plan_stop(tracker: ProgressTracker, control: RunControl, now: float) -> tuple[int, float]:
    """When stopping: wait for the epoch in progress to save if that fits in 0.8 x the grace time
    (and say so, once: the wait is otherwise silent)."""
    progress = tracker.snapshot()
    left = progress.seconds_to_epoch_end()
    wait = control.grace_seconds * 0.8
    epoch = control.epoch_offset + progress.epoch if progress.epoch else None
    if left is not None and left < wait:
        control.say(f"waiting up to {wait:.0f} s for epoch {epoch} to be saved (about "
                    f"{left:.0f} s by the trainer's speed), then stopping the trainer")
        return tracker.checkpoints, now + wait
    if left is not None:
        control.say(f"stopping the trainer now: epoch {epoch} needs about {left:.0f} s more, "
                    f"longer than the {wait:.0f} s lorad waits (0.8 x kohya.stop_grace_seconds); "
                    "the job resumes from its newest saved epoch at the next start")
    else:
        control.say("stopping the trainer now (no epoch about to be saved); the job resumes from "
                    "its newest saved epoch at the next start")
    return tracker.checkpoints, now
