"""Running `lorad run` as a real process in tests, and asking it questions through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def lorad(config: Path, *args: str, check: bool = True, timeout: float = 60
          ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorad", "--config", str(config), *args],
                          capture_output=True, text=True, check=check, timeout=timeout)


def status(config: Path) -> list[dict[str, Any]]:
    return json.loads(lorad(config, "status", "--json").stdout)


class DaemonProcess:
    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lorad", "--config", str(self.config), "run"],
            stdout=handle, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        handle.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the daemon alone (its trainer child lives on, as after a real crash)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    poll_seconds = 0.3

    def jobs(self) -> list[dict]:
        return status(self.config)

    def wait_for(self, predicate: Any, timeout: float = 120, what: str = "") -> list[dict]:
        """Look at the jobs (`lorad status --json`) until predicate(jobs) holds."""
        deadline = time.monotonic() + timeout
        jobs: list[dict] = []
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"lorad run exited ({self.proc.returncode}):\n"
                                     + self.output()[-4000:])
            jobs = self.jobs()
            if predicate(jobs):
                return jobs
            time.sleep(self.poll_seconds)
        raise AssertionError(f"timed out waiting for {what or predicate}; jobs: {jobs}\n"
                             + self.output()[-4000:])


def all_final(count: int) -> Any:
    final = ("done", "failed", "rejected", "cancelled")
    return lambda jobs: len(jobs) >= count and all(j["state"] in final for j in jobs)


def wait_until(condition: Any, what: str, daemon: DaemonProcess | None = None,
               timeout: float = 60) -> None:
    """Poll `condition` until it holds (an event, never a time): an AssertionError naming `what`
    after `timeout` seconds, or at once when `daemon` has exited (with its output)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if daemon is not None:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.output()[-4000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f"\n{daemon.output()[-4000:]}" if daemon is not None else "")
        time.sleep(0.05)
