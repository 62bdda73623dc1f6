"""Logging: one line per event on stderr, with journald priority prefixes under systemd."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

# syslog priorities as journald reads them from a "<N>" line prefix (sd-daemon.h).
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}


def under_journald() -> bool:
    """stderr is connected to the journal (systemd sets JOURNAL_STREAM to its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_journald():
        # journald adds the time and the unit name itself.
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings too get a priority, not raw stderr lines
    # Libraries chatter at INFO (watchdog, apprise); keep the daemon's own lines readable.
    for name in ("watchdog", "apprise"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class JobLog(logging.LoggerAdapter):
    """A logger that puts the job id and token at the start of every line about a job."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"job {self.extra['job']}: {msg}", kwargs


log = logging.getLogger("lorad")


def for_job(job_id: int, token: str | None = None) -> JobLog:
    return JobLog(log, {"job": f"{job_id} ({token})" if token else str(job_id)})
