"""What a person can ask of a job from the command line (retry, cancel, recaption).

Each is one conditional change in the store; the daemon notices it within a second.
"""

from __future__ import annotations

from lorad.store import RUNNING, Job, Store
from lorad.training.followup import RequestError


def retry(store: Store, job: Job) -> Job:
    if job.state == "rejected":
        where = job.options.get("failed_path", "failed/")
        raise RequestError(f"job {job.id} was refused for its input ({job.error}); fix the "
                           f"folder in {where} and drop it into the inbox again")
    if job.state not in ("failed", "cancelled"):
        raise RequestError(f"job {job.id} is {job.state}; only failed or cancelled jobs can be "
                           "retried")
    if not store.requeue(job.id, job.stage, ("failed", "cancelled"), attempts=0):
        raise RequestError(f"job {job.id} changed meanwhile; look again with lorad show")
    store.event(job.id, f"retry requested: continues at the {job.stage} stage")
    return store.get(job.id)


def cancel(store: Store, job: Job) -> Job:
    if job.is_final:
        raise RequestError(f"job {job.id} is already {job.state}")
    return store.request_cancel(job.id)


def recaption(store: Store, job: Job) -> Job:
    if job.state in RUNNING.values() or job.state == "claiming":
        raise RequestError(f"job {job.id} is {job.state}; wait until it is done or failed")
    if job.state == "rejected" or job.stage == "prepare":
        raise RequestError(f"job {job.id} has no prepared dataset to caption")
    if job.state == "queued" and job.stage == "caption":
        return job
    options = dict(job.options)
    if job.state == "done":
        options["recaption_only"] = True
    if not store.requeue(job.id, "caption", (job.state,), options=options, attempts=0):
        raise RequestError(f"job {job.id} changed meanwhile; look again with lorad show")
    store.event(job.id, "recaption requested with the current caption settings")
    return store.get(job.id)
