"""What a job's page shows: the dataset check, the epoch × prompt grid, the LoRA's epoch, the
events, the notifications, the end of train.log and the loss curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorad.delivery import manifest
from lorad.delivery.final import final_name
from lorad.delivery.manifest import Manifest
from lorad.delivery.publish import WHOLE_EPOCH, sample_key
from lorad.settings import Settings
from lorad.store import FINAL, Job, Store
from lorad.training.losslog import read_points
from lorad.web.jobs import progress_of, stamp
from lorad.web.lossplot import loss_svg
from lorad.workspace import JobPaths

LOG_TAIL_BYTES = 16 * 1024
LOG_TAIL_LINES = 40
REPORT_MAX_BYTES = 4 * 1024 * 1024


def grid(m: Manifest) -> dict[str, Any]:
    """Rows of the sample grid, oldest first: one per epoch (and per step when samples come every
    N steps), a cell per prompt holding the sample's name in the folder or None."""
    rows: dict[tuple[int, int], dict[int, str]] = {}
    for number, entry in m.epochs.items():
        rows.setdefault((number, WHOLE_EPOCH), {})
        for name in entry.samples:
            key = sample_key(name.rsplit("/", 1)[-1])
            if key is not None:
                rows.setdefault(key[:2], {})[key[2]] = name
    width = max([len(m.prompts)] + [max(cells) + 1 for cells in rows.values() if cells])
    prompts = m.prompts + [f"prompt {i + 1}" for i in range(len(m.prompts), width)]
    final = m.final.epoch if m.final else None
    table = []
    for (epoch, step), cells in sorted(rows.items()):
        entry = m.epochs.get(epoch)
        whole = step == WHOLE_EPOCH
        table.append({
            "epoch": epoch, "step": None if whole else step, "whole": whole,
            "file": entry.file if entry and whole else None,
            "steps": entry.steps if entry else None,
            "job": entry.job if entry else None,
            "note": entry.samples_note if entry and whole else None,
            "final": whole and epoch == final,
            "cells": [cells.get(i) for i in range(width)],
        })
    return {"prompts": prompts, "rows": table}


def read_report(outbox: Path | None) -> dict[str, Any] | None:
    """report.json of the dataset check: each file with its status, reason and warnings."""
    if outbox is None:
        return None
    path = outbox / "report.json"
    try:
        if path.is_symlink() or path.stat().st_size > REPORT_MAX_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    files = [f for f in data.get("files") or [] if isinstance(f, dict)]
    return {"message": data.get("message"), "warnings": data.get("warnings") or [],
            "problems": data.get("problems") or [],
            "accepted": [f for f in files if f.get("status") in ("accepted", "caption")],
            "refused": [f for f in files if f.get("status") == "refused"]}


def log_tail(path: Path) -> str:
    """The last lines of train.log; tqdm's redrawn bars (carriage returns) shown once each."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    if size > LOG_TAIL_BYTES:
        lines = lines[1:]  # the first one is cut
    return "\n".join([line for line in lines if line.strip()][-LOG_TAIL_LINES:])


def live(settings: Settings, store: Store, job: Job) -> dict[str, Any]:
    """The parts of the page that change while a job runs."""
    paths = JobPaths.of(settings, job)
    m = manifest.read(Path(job.outbox_dir)) if job.outbox_dir else Manifest()
    return {
        "job": job, "final": job.is_final, "manifest": m, "grid": grid(m),
        "progress": progress_of(job) if job.state == "training" else None,
        "percent": round(job.progress * 100),
        "loss_svg": loss_svg(read_points(paths.loss_log)),
        "log": log_tail(paths.train_log),
        "events": [{"at": stamp(e.at), "level": e.level, "message": e.message}
                   for e in store.events(job.id, limit=200)],
        "notes": store.notifications(job.id),
        "lora": final_name(job.token) if job.token and m.final else None,
        "resumable": job.state == "done" and bool(m.epochs),
        "retryable": job.state in ("failed", "cancelled"),
        "cancellable": job.state not in FINAL,
    }


def page(settings: Settings, store: Store, job: Job) -> dict[str, Any]:
    outbox = Path(job.outbox_dir) if job.outbox_dir else None
    has_sheet = outbox is not None and (outbox / "dataset.png").is_file()
    children = [row for row in store.conn.execute(
        "SELECT id, state FROM jobs WHERE parent_id = ? ORDER BY id", (job.id,))]
    return {**live(settings, store, job), "report": read_report(outbox),
            "dataset_sheet": has_sheet, "children": children}
