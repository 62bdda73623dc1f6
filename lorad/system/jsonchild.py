"""A child process that reads one JSON request on stdin and answers with JSON lines on stdout.

Heavy work (image conversion, BLIP) runs in such children, so that its libraries and memory never
stay in the daemon. The child runs in its own process group: stopping it stops everything it
started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Self

from pydantic import BaseModel, ValidationError

from lorad.system.groups import stop_group

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
TERMINATE_GRACE_SECONDS = 5.0
EXIT_GRACE_SECONDS = 30.0
STDERR_TAIL_LINES = 30


class ChildStopped(Exception):
    """should_stop() turned True and the child was terminated."""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {returncode}"


class JsonChild:
    """A running `python -m MODULE`: its stdout events in a queue, the tail of its stderr."""

    def __init__(self, python: str, module: str, env: dict[str, str] | None,
                 spawn: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        """`env` is the child's whole environment (None: ours); `spawn` starts it (the daemon
        passes one that records the process group, to reap it after a crash)."""
        self.module = module
        self.process = spawn(
            [python or sys.executable, "-m", module],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, text=True, encoding="utf-8", errors="replace", start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            line = line.rstrip()
            self.stderr_tail.append(line)
            logger.debug("%s: %s", self.module, line)

    def send(self, request: dict[str, Any]) -> None:
        """Write the request and close stdin (a child that died early: its status says why)."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(json.dumps(request))
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def events(self, should_stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """The child's events until it closes stdout; ChildStopped when should_stop()."""
        while True:
            if should_stop is not None and should_stop():
                raise ChildStopped(f"{self.module} was stopped")
            try:
                line = self.lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if line is None:
                return
            try:
                event = json.loads(line)
            except ValueError:
                logger.warning("%s printed a line that is no event: %r", self.module, line)
                continue
            if isinstance(event, dict):
                yield event

    def terminate(self) -> None:
        """SIGTERM to the child's process group; SIGKILL if it is still there after a grace."""
        if self.process.poll() is None:
            stop_group(self.process, TERMINATE_GRACE_SECONDS)

    def finish(self) -> int:
        """Wait for the child to exit (terminated if it lingers) and its pipes to be read."""
        try:
            self.process.wait(EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.terminate()
        returncode = self.process.wait()
        for thread in self._threads:
            thread.join(TERMINATE_GRACE_SECONDS)
        return returncode

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_tail) or "(nothing on stderr)"


class Protocol:
    """In the child: the real stdout kept for event lines; fd 1 and sys.stdout go to stderr, so
    that nothing a library prints can break the protocol."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self.out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def request(self) -> dict[str, Any]:
        return json.loads(sys.stdin.read())

    def emit(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self.out.flush()


class Message(BaseModel):
    """A request or an event of a child's protocol (one pydantic model per kind, defined once
    for both sides), as JSON."""

    @classmethod
    def read(cls, data: Any) -> Self:
        """`data` as this message; ValueError (one line) when it does not fit."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc'])) or 'message'}: {item['msg']}"
                for item in error.errors(include_url=False)
            )
            raise ValueError(f"unusable {cls.__name__}: {problems}") from None


Emit = Callable[..., None]  # Protocol.emit: (event, **fields)


class Event(Message):
    event: str

    def send(self, emit: Emit) -> None:
        """Write this event through the child's emit."""
        emit(**self.model_dump(mode="json"))


def read_event(events: dict[str, type[Event]], data: dict[str, Any]) -> Event | None:
    """The event a line of a child holds (`events` by their "event" name); None for a kind this
    side does not know, ValueError (one line) for a known kind that does not fit."""
    kind = events.get(str(data.get("event")))
    return None if kind is None else kind.read(data)
