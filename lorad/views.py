"""What `lorad status` and `lorad show` print: a job's summary, the status table, and a job in
full. Job names, errors and progress are text, never rich markup: "[train]" and "[/old]" show as
typed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from lorad.delivery import manifest
from lorad.delivery.manifest import Manifest
from lorad.store import Event, Job


def age(job: Job) -> str:
    seconds = int(time.time() - job.created_at)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def outbox_epochs(job: Job) -> tuple[list[int], Manifest | None]:
    """The epochs this job made that are in its outbox folder so far, and the folder's
    manifest (None when the job has no folder yet)."""
    if not job.outbox_dir:
        return [], None
    m = manifest.read(Path(job.outbox_dir))
    return sorted(n for n, entry in m.epochs.items() if entry.job == job.id), m


def span(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    parts: list[str] = []
    for number in numbers:
        if parts and parts[-1].split("-")[-1] == str(number - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{number}"
        else:
            parts.append(str(number))
    return ", ".join(parts)


def where(job: Job) -> str | None:
    """Where the job's running (or last) training run runs: "GPU 0", a cluster's node."""
    runs = job.train.get("runs") or []
    if not runs:
        return None
    return runs[-1].get("where") or (f"GPU {runs[-1]['gpu']}" if runs[-1].get("gpu", -1) >= 0
                                     else None)


def job_summary(job: Job) -> dict[str, Any]:
    epochs, m = outbox_epochs(job)
    return {"id": job.id, "name": job.name, "token": job.token, "model": job.model,
            "kind": job.kind, "parent": job.parent_id, "state": job.state, "stage": job.stage,
            "progress": round(job.progress, 4), "progress_text": job.progress_text,
            "age_seconds": round(time.time() - job.created_at, 1), "error": job.error,
            "outbox": job.outbox_dir, "epochs": epochs, "where": where(job),
            "final_epoch": m.final.epoch if m and m.final else None,
            "final_how": m.final.how if m and m.final else None}


def status_table(jobs: list[Job]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "TOKEN", "STATE", "STAGE", "PROGRESS", "", "AGE"):
        table.add_column(column, no_wrap=column != "")
    colours = {"done": "green", "failed": "red", "rejected": "red", "cancelled": "yellow"}
    for job in jobs:
        state = f"[{colours.get(job.state, 'cyan')}]{job.state}[/]"
        running = job.state not in ("queued", "done", "failed", "rejected", "cancelled")
        bar: Any = ProgressBar(total=1.0, completed=job.progress, width=20) if running else ""
        detail = job.error.splitlines()[0] if job.error else job.progress_text
        if job.state == "training":
            epochs, _ = outbox_epochs(job)
            detail += f" · in the outbox: epochs {span(epochs)}" if epochs else ""
            placed = where(job)
            detail += f" · on {placed}" if placed and placed != job.progress_text else ""
        # Names, errors and progress are text, never markup: "[train]" and "[/old]" show as typed.
        table.add_row(str(job.id), escape(job.token or job.name), state, escape(job.stage), bar,
                      escape(detail), age(job))
    return table


def job_text(found: Job, events: list[Event], notes: list[dict[str, Any]]) -> str:
    """`lorad show`: the job, its training, its outbox folder's epochs and which one is the
    LoRA, its events and its notifications (rich markup)."""
    lines = [f"[bold]job {found.id}[/bold] {escape(found.name)}  ({found.kind})",
             escape(f"  token {found.token}  model {found.model}  state {found.state}  stage "
                    f"{found.stage}"),
             escape(f"  progress {found.progress:.0%} {found.progress_text}")]
    if found.error:
        lines.append(f"  [red]error[/red] {escape(found.error)}")
    for label, value in (("work", found.work_dir), ("outbox", found.outbox_dir),
                         ("failed", found.options.get("failed_path"))):
        if value:
            lines.append(escape(f"  {label} {value}"))
    train = found.train
    if train.get("runs"):
        lines.append(f"  training: {len(train['runs'])} run(s), epochs up to {train['target']}"
                     + escape(f", the last on {where(found)}" if where(found) else ""))
    epochs, m = outbox_epochs(found)
    if m is not None and m.epochs:
        lines.append(escape(f"  epochs in the outbox: {span(sorted(m.epochs))} (this job's: "
                            f"{span(epochs) or 'none'}); the LoRA is {m.describe_final()}"))
        for line in m.superseded:
            lines.append(escape(f"  moved aside by job {line.by_job}'s resume: epochs "
                                f"{span(line.epochs)} in {line.folder}/"))
    if train.get("ladder"):
        lines.append(escape(f"  memory ladder: {', '.join(train['ladder'])}"))
    lines.append("[bold]events[/bold]")
    for event in events[-40:]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
        lines.append(escape(f"  {stamp} {event.level:7} {event.message}"))
    for note in notes:
        lines.append(escape(f"  notification {note['event']}: {note['state']} "
                            f"({note['attempts']} tries) {', '.join(note['targets'])}"))
    return "\n".join(lines)
