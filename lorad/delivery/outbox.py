"""A LoRA's folder in the outbox: <outbox>/<token>/, owned by one lineage of jobs (a training and
the follow-ups that resumed it).

Its manifest (`lorad-job.json`) says which lineage it belongs to. A new job with a token whose
folder belongs to another lineage moves that folder aside to <token>.job-<id> first: results are
never overwritten by an unrelated training.
"""

from __future__ import annotations

import os
from pathlib import Path

from lorad.context import Context
from lorad.delivery import manifest
from lorad.store import Job
from lorad.system.fsutil import unique_path


def take_folder(outbox: Path, token: str, root_job: int, job_id: int
                ) -> tuple[Path, Path | None]:
    """<outbox>/<token>/ for the lineage of `root_job`, with `job_id` recorded in it, and where
    another lineage's folder was moved aside to (None if nothing was)."""
    folder = outbox / token
    aside = None
    if folder.exists():
        owner = manifest.read(folder).root_job
        if owner != root_job:
            aside = unique_path(outbox / f"{token}.job-{owner or 'unknown'}")
            os.rename(folder, aside)
    folder.mkdir(parents=True, exist_ok=True)
    with manifest.updating(folder) as m:
        m.root_job, m.token = root_job, token
        m.jobs = sorted({*m.jobs, job_id})
    return folder, aside


def lineage(ctx: Context, job: Job) -> list[Job]:
    """Every job whose results share this job's outbox folder, oldest first."""
    if not job.outbox_dir:
        return [job]
    return [j for j in ctx.store.jobs() if j.outbox_dir == job.outbox_dir]
