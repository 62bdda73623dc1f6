"""`lorad web` as a real process in tests, and plain HTTP requests to it."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebProcess:
    def __init__(self, config: Path, log: Path, host: str = "127.0.0.1") -> None:
        self.config, self.log, self.host = config, log, host
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, address: str = "127.0.0.1", timeout: float = 30) -> WebProcess:
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lorad", "--config", str(self.config), "web", "--host",
                 self.host, "--port", str(self.port)],
                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until it accepts a connection (or exits)
            if self.proc.poll() is not None:
                raise AssertionError(f"lorad web exited ({self.proc.returncode}):\n"
                                     + self.log.read_text())
            try:
                socket.create_connection((address, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("lorad web did not start listening:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(address: str, port: int, method: str, target: str, headers: dict[str, str] | None
            = None, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the target sent exactly as given (no client-side path clean-up)."""
    conn = http.client.HTTPConnection(address, port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()
