"""What runs on a node: one training's actor (`Trainer`), which receives the run's files, starts
Kohya in its own process group, and hands back its output and its written files when asked.

The actor is a plain class here; lorad.cluster.executor makes it a Ray actor (one GPU, plus the
base model's resources) on the coordinator. Beside the trainer runs a guard process: when the
actor's process dies (its node is removed, Ray kills it, the coordinator's daemon dies and Ray
takes its actors with it), the guard sends the trainer's whole group SIGTERM, then SIGKILL after
the grace time, so that no orphaned trainer keeps a GPU busy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lorad.cluster.shipping import PIECE_BYTES, Collector, Piece
from lorad.system.groups import group_alive, signal_group

# The guard: argv = [actor pid, trainer's process group, grace seconds].
GUARD = """
import os, signal, sys, time
actor, group, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def alive(pid, group=False):
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
while alive(group, True):
    if not alive(actor):
        try:
            os.killpg(group, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.monotonic() + grace
        while alive(group, True) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
        break
    time.sleep(0.5)
"""


def node_info(probe: tuple[str, str] | None = None) -> dict[str, Any]:
    """This node: its Ray id, name and address, and whether it sees the coordinator's files
    (`probe`: a file there and the text it holds)."""
    import ray

    shared = False
    if probe is not None:
        try:
            shared = Path(probe[0]).read_text() == probe[1]
        except OSError:
            shared = False
    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(), "shared": shared, "pid": os.getpid()}


class Trainer:
    """One run on this node. Methods are called one at a time, in order (the actor's default)."""

    def __init__(self, name: str, scratch_root: str) -> None:
        root = Path(scratch_root) if scratch_root else Path(tempfile.gettempdir())
        self.scratch = root / f"lorad-{name}"
        self.proc: subprocess.Popen | None = None
        self.guard: subprocess.Popen | None = None
        self.collector: Collector | None = None
        self.buffers: dict[str, bytearray] = {"out": bytearray(), "err": bytearray()}
        self.ended = {"out": False, "err": False}
        self.lock = threading.Condition()

    def hello(self, probe: tuple[str, str] | None) -> dict[str, Any]:
        info = node_info(probe)
        info["scratch"] = str(self.scratch)
        if not info["shared"]:
            self.scratch.mkdir(parents=True, exist_ok=True)
        return info

    def receive(self, piece: Piece) -> None:
        target = self.scratch / piece.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "r+b" if piece.offset else "wb") as handle:
            handle.seek(piece.offset)
            handle.write(piece.data)

    def start(self, argv: list[str], cwd: str, env: dict[str, str], grace: float,
              collect: str | None, skip: list[str]) -> int:
        """Start the trainer (its own session and group); `collect`: the output folder whose
        files go back (None when the coordinator sees it itself). Returns its pid."""
        if collect:
            Path(collect).mkdir(parents=True, exist_ok=True)
            self.collector = Collector(Path(collect), skip=set(skip))
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.guard = subprocess.Popen([sys.executable, "-c", GUARD, str(os.getpid()),
                                       str(self.proc.pid), str(grace)], start_new_session=True)
        for stream, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            threading.Thread(target=self._pump, args=(stream, name), daemon=True).start()
        return self.proc.pid

    def _pump(self, stream: Any, name: str) -> None:
        while chunk := os.read(stream.fileno(), 65536):
            with self.lock:
                self.buffers[name] += chunk
                self.lock.notify_all()
        with self.lock:
            self.ended[name] = True
            self.lock.notify_all()

    def poll(self, timeout: float) -> dict[str, Any]:
        """What came since the last poll: output, file pieces, and the exit status once the
        trainer has exited and everything it wrote has been handed over."""
        assert self.proc is not None
        with self.lock:
            self.lock.wait_for(lambda: any(self.buffers.values()) or all(self.ended.values()),
                               timeout=timeout)
            out = {name: bytes(data) for name, data in self.buffers.items()}
            for data in self.buffers.values():
                data.clear()
            streams_ended = all(self.ended.values())
        exited = streams_ended and self.proc.poll() is not None
        pieces: list[Piece] = []
        if self.collector is not None:
            self.collector.scan(final=exited)
            pieces = self.collector.pieces(PIECE_BYTES)
        done = exited and (self.collector is None or self.collector.idle())
        return {**out, "pieces": pieces, "exit": self.proc.returncode if done else None}

    def stop(self, grace: float) -> int | None:
        """SIGTERM to the trainer's group, SIGKILL after `grace`; its exit status."""
        if self.proc is None:
            return None
        signal_group(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(self.proc.pid):
            signal_group(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()

    def cleanup(self) -> None:
        """Kill what is left of the trainer's group; remove the scratch folder."""
        if self.proc is not None and group_alive(self.proc.pid):
            signal_group(self.proc.pid, signal.SIGKILL)
        if self.guard is not None:
            self.guard.kill()
            self.guard.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)
