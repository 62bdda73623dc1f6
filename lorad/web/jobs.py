"""What the jobs page shows: one row per job, active first, then the recent finished ones."""

from __future__ import annotations

import time
from typing import Any

from lorad.store import ACTIVE, FINAL, Job, Store
from lorad.training.kohya.progress import format_duration
from lorad.views import age

RECENT_FINISHED = 100
STATES = ("claiming", *ACTIVE, *FINAL)
NO_PROGRESS = dict.fromkeys(("epoch", "epochs", "step", "total_steps", "loss", "speed", "eta"))


def progress_of(job: Job) -> dict[str, Any]:
    """The training's epoch, step, loss, speed and ETA, in real epochs (None where unknown)."""
    progress = job.train.get("progress") or {}
    runs = job.train.get("runs") or [{}]
    offset = runs[-1].get("offset", 0)
    epoch = progress.get("epoch")
    speed = progress.get("speed_it_s")
    eta = progress.get("eta_seconds")
    return {
        "epoch": epoch + offset if epoch else None,
        "epochs": job.train.get("target"),
        "step": progress.get("step"),
        "total_steps": progress.get("total_steps"),
        "loss": progress.get("loss"),
        "speed": (f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.2f} s/it") if speed
        else None,
        "eta": format_duration(eta) if eta is not None else None,
    }


def row(job: Job) -> dict[str, Any]:
    running = job.state not in FINAL and job.state != "queued"
    return {
        "id": job.id, "name": job.name, "token": job.token, "kind": job.kind,
        "parent": job.parent_id, "state": job.state, "stage": job.stage,
        "percent": round(job.progress * 100) if running else None,
        "text": job.error.splitlines()[0] if job.error else job.progress_text,
        "age": age(job), "updated_at": job.updated_at,
        "progress": progress_of(job) if job.state == "training" else NO_PROGRESS,
    }


def job_rows(store: Store, state: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """{"active": [...], "finished": [...]}: every unfinished job (oldest first), then the newest
    finished ones; with `state`, only jobs in that state."""
    sql = "SELECT * FROM jobs WHERE state IN ({}) ORDER BY id"
    if state:
        rows = store.conn.execute(sql.format("?") + " DESC LIMIT 500", (state,)).fetchall()
        jobs = [Job.from_row(r) for r in rows]
        return {"active": [row(j) for j in jobs if not j.is_final],
                "finished": [row(j) for j in jobs if j.is_final]}
    marks = ",".join("?" * len(FINAL))
    active = store.conn.execute(
        f"SELECT * FROM jobs WHERE state NOT IN ({marks}) ORDER BY id", FINAL).fetchall()
    finished = store.conn.execute(
        sql.format(marks) + f" DESC LIMIT {RECENT_FINISHED}", FINAL).fetchall()
    return {"active": [row(Job.from_row(r)) for r in active],
            "finished": [row(Job.from_row(r)) for r in finished]}


def counts(store: Store) -> dict[str, int]:
    rows = store.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
    return {r[0]: r[1] for r in rows}


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
