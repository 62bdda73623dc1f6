"""The job store: SQLite (WAL), one row per job, an event log per job, pending notifications.

The store is the only truth. Every state change is one conditional UPDATE, so that the daemon, its
worker threads and CLI commands in other processes never overwrite each other's decisions.

Store's methods for the notification queue and the child process records are in
store_notifications.py and store_children.py (its bases); the schema is in store_migrations.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lorad.store.children import ChildRecords
from lorad.store.migrations import apply_migrations
from lorad.store.notifications import NotificationQueue

# A job's life: claiming -> queued -> preparing -> queued -> captioning -> queued -> training
# -> queued -> delivering -> done. `stage` names the next stage to run (or the running one).
RUNNING = {"prepare": "preparing", "caption": "captioning", "train": "training",
           "deliver": "delivering"}
FINAL = ("done", "failed", "rejected", "cancelled")
ACTIVE = ("queued", *RUNNING.values())

JSON_FIELDS = ("settings", "train", "options")


@dataclass
class Job:
    id: int
    name: str
    state: str
    stage: str
    created_at: float
    updated_at: float
    kind: str = "new"
    parent_id: int | None = None
    token: str | None = None
    model: str | None = None
    progress: float = 0.0
    progress_text: str = ""
    attempts: int = 0
    error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None
    inbox_path: str | None = None
    source_dir: str | None = None
    work_dir: str | None = None
    outbox_dir: str | None = None
    gpu: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    cancel_requested: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> Job:
        data = dict(row)
        for key in JSON_FIELDS:
            data[key] = json.loads(data.get(key) or "{}")
        return cls(**data)

    @property
    def label(self) -> str:
        return f"job {self.id} ({self.token or self.name})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Event:
    id: int
    job_id: int
    at: float
    level: str
    message: str
    data: dict[str, Any]


class JobNotFound(LookupError):
    pass


class Store(NotificationQueue, ChildRecords):
    """One SQLite database; each thread gets its own connection."""

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        self.path = Path(path)
        self._local = threading.local()
        if migrate:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            apply_migrations(self.path, self._connect)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: read-then-write decisions that no other writer can interleave with."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see the database as of one moment (a WAL read transaction): a job, its
        events and its notifications always agree, whatever the daemon commits meanwhile."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    # ---- reading -------------------------------------------------------------------------
    def get(self, job_id: int) -> Job:
        row = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        return Job.from_row(row)

    def find(self, ref: str) -> Job:
        """A job by id ("12") or by token (the newest job with that token)."""
        ref = ref.strip().lstrip("#")
        if ref.isdigit():
            return self.get(int(ref))
        row = self.conn.execute(
            "SELECT * FROM jobs WHERE token = ? OR name = ? ORDER BY id DESC LIMIT 1", (ref, ref)
        ).fetchone()
        if row is None:
            raise JobNotFound(f"no job with id or token {ref!r} (lorad status lists them)")
        return Job.from_row(row)

    def jobs(self, states: tuple[str, ...] | None = None) -> list[Job]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self.conn.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", states
            ).fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        return [Job.from_row(r) for r in rows]

    def waiting(self, stage: str) -> list[Job]:
        """Queued jobs whose next stage is `stage`, oldest first, not asked to stop."""
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE state = 'queued' AND stage = ? AND cancel_requested = 0 "
            "ORDER BY id",
            (stage,),
        ).fetchall()
        return [Job.from_row(r) for r in rows]

    def count_state(self, state: str) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()
        return int(row[0])

    def move_outbox(self, old: str, new: str) -> list[int]:
        """Jobs whose outbox folder was moved aside now point at its new place."""
        with self.transaction() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE outbox_dir = ?", (old,))]
            conn.execute("UPDATE jobs SET outbox_dir = ? WHERE outbox_dir = ?", (new, old))
        return ids

    def count_finished(self, state: str, since: float) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE state = ? AND finished_at > ?", (state, since)
        ).fetchone()
        return int(row[0])

    def events(self, job_id: int, limit: int | None = None) -> list[Event]:
        sql = "SELECT * FROM events WHERE job_id = ? ORDER BY id"
        rows = self.conn.execute(sql, (job_id,)).fetchall()
        events = [Event(**{**dict(r), "data": json.loads(r["data"] or "{}")}) for r in rows]
        return events[-limit:] if limit else events

    # ---- writing -------------------------------------------------------------------------
    def _update(self, job_id: int, where: str = "", params: tuple = (), **values: Any) -> bool:
        values["updated_at"] = time.time()
        for key in JSON_FIELDS:
            if key in values and not isinstance(values[key], str):
                values[key] = json.dumps(values[key], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in values)
        cur = self.conn.execute(
            f"UPDATE jobs SET {sets} WHERE id = ? {where}", (*values.values(), job_id, *params)
        )
        return cur.rowcount == 1

    def event(self, job_id: int, message: str, level: str = "info",
              data: dict[str, Any] | None = None) -> None:
        self.conn.execute(
            "INSERT INTO events (job_id, at, level, message, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, time.time(), level, message, json.dumps(data or {}, sort_keys=True)),
        )

    def create_job(self, name: str, *, state: str, stage: str, **values: Any) -> int:
        now = time.time()
        row = {"name": name, "state": state, "stage": stage, "created_at": now,
               "updated_at": now, **values}
        for key in JSON_FIELDS:
            if key in row and not isinstance(row[key], str):
                row[key] = json.dumps(row[key], sort_keys=True)
        cols = ", ".join(row)
        marks = ", ".join("?" * len(row))
        cur = self.conn.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(row.values()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def delete_job(self, job_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM notifications WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def update(self, job_id: int, **values: Any) -> None:
        self._update(job_id, **values)

    def start_stage(self, job_id: int, stage: str, **values: Any) -> bool:
        """Queued at `stage` -> running; False if the job moved on (cancelled, taken)."""
        return self._update(
            job_id, "AND state = 'queued' AND stage = ? AND cancel_requested = 0", (stage,),
            state=RUNNING[stage], progress=0.0, progress_text="", error=None, **values,
        )

    def finish_stage(self, job_id: int, stage: str, next_stage: str, **values: Any) -> bool:
        """Running `stage` -> queued for `next_stage` (or done when next_stage is 'done').

        Whenever a job stops running (here, `end`, `requeue`, `recover`) its progress text (a
        speed, an ETA) is cleared: it described a run that is over. The fraction stays."""
        state = "done" if next_stage == "done" else "queued"
        if state == "done":
            values.setdefault("finished_at", time.time())
        return self._update(
            job_id, "AND state = ?", (RUNNING[stage],),
            state=state, stage=next_stage, progress_text="", **values,
        )

    def set_progress(self, job_id: int, fraction: float, text: str, **values: Any) -> None:
        self._update(job_id, progress=max(0.0, min(1.0, fraction)), progress_text=text, **values)

    def end(self, job_id: int, state: str, error: str | None = None, **values: Any) -> None:
        """Put a job in a final state (failed, rejected, cancelled) with its reason."""
        assert state in FINAL
        self._update(job_id, state=state, error=error, finished_at=time.time(), progress_text="",
                     **values)

    def request_cancel(self, job_id: int) -> Job:
        """Ask for a job to stop. A queued job is cancelled at once; a running one by its worker."""
        with self.transaction() as conn:
            job = self.get(job_id)
            if job.is_final:
                return job
            if job.state in ("queued", "claiming"):
                self._update(job_id, state="cancelled", cancel_requested=1,
                             finished_at=time.time(), error="cancelled by request")
                self.event(job_id, "cancelled while queued")
            else:
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                self.event(job_id, f"cancel requested while {job.state}")
        return self.get(job_id)

    def cancel_requested(self, job_id: int) -> bool:
        row = self.conn.execute(
            "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return bool(row and row[0])

    def requeue(self, job_id: int, stage: str, from_states: tuple[str, ...], **values: Any) -> bool:
        marks = ",".join("?" * len(from_states))
        return self._update(
            job_id, f"AND state IN ({marks})", from_states,
            state="queued", stage=stage, error=None, finished_at=None, cancel_requested=0,
            progress_text="", **values,
        )

    def recover(self) -> list[Job]:
        """After a restart: every job a worker held goes back to the queue at its stage."""
        running = self.jobs(tuple(RUNNING.values()))
        for job in running:
            self._update(job.id, "AND state = ?", (job.state,), state="queued", progress_text="")
            self.event(job.id, f"daemon restarted while {job.state}; continuing the "
                               f"{job.stage} stage")
        return running

    def register_content(self, job_id: int, content_hash: str, token: str, model: str, *,
                         allow_duplicate: bool, token_asked: bool,
                         model_asked: bool) -> Job | None:
        """Record what a job trains on; return an earlier job that registered the same set.

        The same photos are a duplicate of any job that is not rejected or cancelled (a failed
        one can still be retried), unless lora.toml asked for a token or a model (`token_asked`,
        `model_asked`) that differs from that job's. A token derived from the folder name is not
        asked for: the same photos under another folder name are still the same set.

        Registrations are serialized (BEGIN IMMEDIATE), so of two copies prepared at the same
        time, whichever registers second is the duplicate, whatever their ids.
        """
        with self.transaction():
            self._update(job_id, content_hash=content_hash, token=token, model=model)
            if allow_duplicate:
                return None
            row = self.conn.execute(
                "SELECT * FROM jobs WHERE content_hash = ? AND id != ? AND kind = 'new' "
                "AND state NOT IN ('rejected', 'cancelled') "
                "AND (? = 0 OR token = ?) AND (? = 0 OR model = ?) ORDER BY id LIMIT 1",
                (content_hash, job_id, token_asked, token, model_asked, model),
            ).fetchone()
        return Job.from_row(row) if row else None
