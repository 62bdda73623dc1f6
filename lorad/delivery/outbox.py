"""A job's folder in the outbox: <outbox>/<token>/, owned by one lineage of jobs.

`lorad-job.json` in the folder says which job (and which follow-ups) it belongs to. A new job with a
token whose folder belongs to another job moves that folder aside to <token>.job-<id> first: results
are never overwritten by an unrelated training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lorad.system.fsutil import atomic_write_json, unique_path

OWNER_FILE = "lorad-job.json"


def read_owner(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def take_folder(outbox: Path, token: str, root_job: int, info: dict[str, Any]
                ) -> tuple[Path, Path | None]:
    """<outbox>/<token>/ for this lineage, and where another lineage's folder was moved aside
    to (None if nothing was)."""
    folder = outbox / token
    aside = None
    if folder.exists():
        owner = read_owner(folder)
        if owner.get("root_job") != root_job:
            aside = unique_path(outbox / f"{token}.job-{owner.get('root_job', 'unknown')}")
            os.rename(folder, aside)
    folder.mkdir(parents=True, exist_ok=True)
    write_owner(folder, {"root_job": root_job, **info})
    return folder, aside


def write_owner(folder: Path, info: dict[str, Any]) -> None:
    atomic_write_json(folder / OWNER_FILE, {**read_owner(folder), **info})
