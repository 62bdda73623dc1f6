"""The systemd notify protocol: one datagram per message to $NOTIFY_SOCKET (no dependency)."""

from __future__ import annotations

import logging
import os
import socket
import time

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING; does nothing when not started by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._last_watchdog = 0.0
        self._last_status = ""
        self._warned = False

    @classmethod
    def from_env(cls) -> SystemdNotifier:
        """Take the variables out of the environment (as sd_notify's unset_environment does), so
        that no child process, however it is started, can speak for the daemon."""
        address = os.environ.pop("NOTIFY_SOCKET", "") or None
        usec = os.environ.pop("WATCHDOG_USEC", "")
        pid = os.environ.pop("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        if not self.address:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall("\n".join(lines).encode())
        except OSError as error:
            if not self._warned:  # once: the watchdog would repeat it every few seconds
                self._warned = True
                logger.warning(
                    "cannot reach systemd's notify socket NOTIFY_SOCKET=%s (%s): systemd hears "
                    "no READY=1, status or watchdog pings from lorad, so the unit stays "
                    "'activating' until TimeoutStartSec= and is then stopped. Check that the "
                    "service can reach that path (PrivateTmp=, ProtectHome= or an empty /run "
                    "hide it); lorad says this once", self.address, error)
            return False
        return True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def watchdog(self, now: float | None = None) -> None:
        """WATCHDOG=1 at half the interval systemd asked for (call it from the main loop)."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_watchdog >= self.watchdog_interval:
            self._last_watchdog = now
            self.send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")
