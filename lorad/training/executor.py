"""Where a training runs: the seam between the train stage and the machine that runs Kohya.

The train stage plans a run and reads its output; an executor starts it, hands its output back as
it comes, stops it (SIGTERM to its whole process group, SIGKILL after a grace time), and
releases it. `LocalExecutor` runs Kohya as a child process on one of this machine's GPUs, recorded
in the store so that the next start reaps it after a crash; another executor (trainings on other
machines) implements the same two protocols.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import IO, Protocol

from lorad.store import Store
from lorad.system import children
from lorad.system.groups import stop_group

Chunk = tuple[str, bytes]  # ("out" or "err", bytes); b"" when that stream has ended


class TrainingRun(Protocol):
    """One running trainer, wherever it runs."""

    where: str  # said in events and `lorad status`: "GPU 0"

    def output(self, timeout: float) -> Chunk | None:
        """The next piece of the trainer's output, or None if none came within `timeout`."""

    def stop(self, grace: float) -> None:
        """SIGTERM to the trainer's process group, SIGKILL after `grace` seconds; returns once
        it has exited."""

    def wait(self) -> int:
        """Its exit code, once it has exited."""

    def release(self) -> None:
        """Forget the run: whatever is left of its process group is killed."""


class Executor(Protocol):
    def start(self, job_id: int, argv: list[str], *, cwd: Path, env: dict[str, str],
              gpu: int) -> TrainingRun:
        """Start `argv` for `job_id` on GPU `gpu` (its own process group)."""


def _pump(stream: IO[bytes], name: str, out: queue.Queue) -> None:
    while True:
        chunk = os.read(stream.fileno(), 65536)
        out.put((name, chunk))
        if not chunk:
            return


class LocalRun:
    """A trainer in a child process of the daemon, its output read by two threads."""

    def __init__(self, store: Store, proc: subprocess.Popen, gpu: int) -> None:
        self.store = store
        self.proc = proc
        self.where = f"GPU {gpu}"
        self.chunks: queue.Queue[Chunk] = queue.Queue()
        for stream, name in ((proc.stdout, "out"), (proc.stderr, "err")):
            threading.Thread(target=_pump, args=(stream, name, self.chunks), daemon=True).start()

    def output(self, timeout: float) -> Chunk | None:
        try:
            return self.chunks.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, grace: float) -> None:
        stop_group(self.proc, grace)

    def wait(self) -> int:
        return self.proc.wait()

    def release(self) -> None:
        if self.proc.poll() is None:
            stop_group(self.proc, 5)
        children.forget(self.store, self.proc)


class LocalExecutor:
    """Trainings on this machine's GPUs, one child process each, with CUDA_VISIBLE_DEVICES."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(self, job_id: int, argv: list[str], *, cwd: Path, env: dict[str, str],
              gpu: int) -> LocalRun:
        proc = children.spawn(self.store, "train", [job_id], argv, cwd=cwd,
                              env={**env, "CUDA_VISIBLE_DEVICES": str(gpu)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        return LocalRun(self.store, proc, gpu)
