"""A stand-in for systemd's notify socket: an AF_UNIX datagram socket that keeps every message."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

Message = dict[str, str]


class NotifySocket:
    """Bound to a path, or to an abstract name (NOTIFY_SOCKET="@name") when `path` is None."""

    def __init__(self, path: Path | None = None, abstract_name: str = "") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is not None:
            self.sock.bind(str(path))
            self.address = str(path)
        else:
            self.sock.bind("\0" + abstract_name)
            self.address = "@" + abstract_name
        self.sock.settimeout(0.2)
        self.messages: list[Message] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                self._keep(self.sock.recv(4096))
            except TimeoutError:
                continue

    def _keep(self, data: bytes) -> None:
        lines = data.decode().split("\n")
        self.messages.append(dict(line.split("=", 1) for line in lines if "=" in line))

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 30,
                 what: str = "") -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((m for m in self.messages if predicate(m)), None)
            if found is not None:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no notify message {what}; got {self.messages}")

    def index(self, key: str, value: str | None = None) -> int:
        """The position of the first message with key (and value); -1 when there is none."""
        return next((i for i, m in enumerate(self.messages)
                     if key in m and (value is None or m[key] == value)), -1)

    def close(self) -> None:
        """Stop listening, keeping what was sent before (the last datagrams may be unread).
        Closing again does nothing."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.setblocking(False)
        while True:
            try:
                self._keep(self.sock.recv(4096))
            except BlockingIOError:
                break
        self.sock.close()
