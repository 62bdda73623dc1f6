"""The job store's schema, as sqlite-utils migrations: applied in order, once, by whichever
process opens the database first (the others wait on a lock file beside it)."""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database, Migrations

migrations = Migrations("lorad")


@migrations(transactional=False)
def m001_wal(db: Database) -> None:
    db.execute("PRAGMA journal_mode=WAL")


@migrations()
def m002_jobs(db: Database) -> None:
    db["jobs"].create(
        {
            "id": int, "name": str, "kind": str, "parent_id": int, "token": str, "model": str,
            "state": str, "stage": str, "progress": float, "progress_text": str,
            "attempts": int, "error": str, "settings": str, "content_hash": str,
            "inbox_path": str, "source_dir": str, "work_dir": str, "outbox_dir": str,
            "gpu": int, "train": str, "options": str, "cancel_requested": int,
            "created_at": float, "updated_at": float, "started_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null={"name", "state", "stage", "created_at", "updated_at"},
        defaults={"kind": "new", "progress": 0.0, "progress_text": "", "attempts": 0,
                  "cancel_requested": 0, "train": "{}", "options": "{}", "settings": "{}"},
    )
    db["jobs"].create_index(["state"])
    db["jobs"].create_index(["token"])
    db["jobs"].create_index(["content_hash"])
    db["events"].create(
        {"id": int, "job_id": int, "at": float, "level": str, "message": str, "data": str},
        pk="id",
        foreign_keys=[("job_id", "jobs", "id")],
    )
    db["events"].create_index(["job_id"])
    db["notifications"].create(
        {
            "id": int, "job_id": int, "event": str, "title": str, "body": str,
            "attach": str, "tags": str, "targets": str, "attempts": int, "state": str,
            "next_at": float, "created_at": float, "sent_at": float, "last_error": str,
        },
        pk="id",
        defaults={"attempts": 0, "state": "pending", "targets": "{}", "tags": "[]"},
    )
    db["notifications"].create_index(["state", "next_at"])
    db["children"].create(
        {"pgid": int, "started": int, "kind": str, "job_ids": str, "at": float}, pk="pgid"
    )


def apply_migrations(path: Path, connect: Callable[[], sqlite3.Connection]) -> None:
    """Bring the database at path up to date, one process at a time."""
    with _file_lock(path.with_name(path.name + ".migrate.lock")):
        migrations.apply(Database(connect()))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
