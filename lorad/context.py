"""What every stage gets: the configuration, the store, and the daemon's stop signal."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from lorad.settings import Settings
from lorad.store import Job, Store
from lorad.system.logs import JobLog, for_job
from lorad.workspace import JobPaths


@dataclass
class Context:
    settings: Settings
    store: Store
    stopping: threading.Event = field(default_factory=threading.Event)

    def paths(self, job: Job) -> JobPaths:
        return JobPaths.of(self.settings, job)

    def log(self, job: Job) -> JobLog:
        return for_job(job.id, job.token)
