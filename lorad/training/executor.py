"""Where a training runs: the seam between the train stage and the machine that runs Kohya.

The train stage plans a run and reads its output; an executor starts it, hands its output back as
it comes, stops it (SIGTERM to its whole process group, SIGKILL after a grace time), and
releases it. `LocalExecutor` runs Kohya as a child process on one of this machine's GPUs, recorded
in the store so that the next start reaps it after a crash; `lorad.cluster`'s RayExecutor runs it
on a node of a Ray cluster, behind the same two protocols.

The scheduler asks the executor how many trainings may start (`slots`): this machine's GPU
indexes, or None when the executor places and queues them itself (every waiting training is
started, and waits in the executor for a place: `placed` is False meanwhile).
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
from lorad.system.gpus import any_visible, bf16_supported
from lorad.system.groups import stop_group

ANY_GPU = -1  # the GPU "index" of a training the executor places itself
Chunk = tuple[str, bytes]  # ("out" or "err", bytes); b"" when that stream has ended


class TrainingRun(Protocol):
    """One running trainer, wherever it runs."""

    where: str  # said in events and `lorad status`: "GPU 0", "node 3f2a1c0b (gpu-box-2)"
    placed: bool  # False while it waits for a place to run (its silence is then no stall)
    lost: str | None  # why the machine it ran on was lost (not the trainer's fault), or None

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
    slots: list[int] | None  # GPU indexes, one training each; None: all start, the executor queues

    def start(self, job_id: int, argv: list[str], *, cwd: Path, env: dict[str, str],
              gpu: int) -> TrainingRun:
        """Start `argv` for `job_id` on GPU `gpu` (its own process group); `ANY_GPU` where the
        executor places it."""

    def gpu_facts(self, gpu: int) -> tuple[bool, bool]:
        """(a GPU is visible to the trainer, it computes bf16) for the run's arguments."""

    def recover(self) -> None:
        """At the daemon's start: stop every trainer an earlier daemon left running."""


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
        self.placed = True
        self.lost: str | None = None
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

    def __init__(self, store: Store, gpus: list[int] | None = None) -> None:
        self.store = store
        self.slots: list[int] | None = list(gpus if gpus is not None else [0])

    def gpu_facts(self, gpu: int) -> tuple[bool, bool]:
        return any_visible(), bf16_supported(gpu)

    def recover(self) -> None:
        """Nothing of its own: the daemon reaps the child processes the store records."""

    def start(self, job_id: int, argv: list[str], *, cwd: Path, env: dict[str, str],
              gpu: int) -> LocalRun:
        proc = children.spawn(self.store, "train", [job_id], argv, cwd=cwd,
                              env={**env, "CUDA_VISIBLE_DEVICES": str(gpu)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        return LocalRun(self.store, proc, gpu)
