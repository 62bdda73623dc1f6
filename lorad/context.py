"""What every stage gets: the configuration, the store, the daemon's stop signal, the sender's
wake-up, and where trainings run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from lorad.settings import Settings
from lorad.store import Job, Store
from lorad.system.logs import JobLog, for_job
from lorad.training.executor import Executor
from lorad.workspace import JobPaths


@dataclass
class Context:
    settings: Settings
    store: Store
    stopping: threading.Event = field(default_factory=threading.Event)
    # Set once a notification is queued and committed: the sender looks at its queue.
    notify_wake: threading.Event = field(default_factory=threading.Event)
    # Where trainings run; None: on this machine's GPUs (training.executor.LocalExecutor).
    executor: Executor | None = None

    def paths(self, job: Job) -> JobPaths:
        return JobPaths.of(self.settings, job)

    def log(self, job: Job) -> JobLog:
        return for_job(job.id, job.token)
