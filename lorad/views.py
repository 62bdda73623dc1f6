"""What `lorad status` and `lorad show` print: a job's summary, the status table, and a job in
full. Job names, errors and progress are text, never rich markup: "[train]" and "[/old]" show as
typed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

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
            "final_how": m.final.how if m and m.final else None,
            "suggestion": m.suggestion.model_dump() if m and m.suggestion else None}


def likeness_lines(m: Manifest) -> list[str]:
    """`lorad show`: each scored epoch's likeness ([score]) and the suggestion."""
    scored = [f"epoch {n}: {e.likeness.label()}" for n, e in sorted(m.epochs.items())
              if e.likeness is not None]
    lines = [escape("  likeness: " + "; ".join(scored))] if scored else []
    if m.suggestion is not None:
        lines.append(escape(f"  suggestion: {m.suggestion.reason}"))
    return lines


# Running jobs first (the one on the GPU at the top), then the queue, then the finished ones,
# newest first. The summary line counts what did not fit, in this order.
SHOWN_FIRST = ("training", "captioning", "preparing", "delivering", "claiming", "queued")
SUMMARY_ORDER = (*SHOWN_FIRST, "done", "failed", "rejected", "cancelled")
COLOURS = {"done": "green", "failed": "red", "rejected": "red", "cancelled": "yellow"}


def is_running(job: Job) -> bool:
    return job.state in SHOWN_FIRST and job.state not in ("queued", "claiming")


def ordered(jobs: list[Job], *, active_only: bool = False, recent: int | None = None
            ) -> list[Job]:
    """The jobs `lorad status` lists, in its order: the active ones (running, then queued), then
    the finished ones, newest first: none with `active_only`, the `recent` newest with it."""
    active = sorted((j for j in jobs if not j.is_final),
                    key=lambda j: (SHOWN_FIRST.index(j.state) if j.state in SHOWN_FIRST
                                   else len(SHOWN_FIRST), j.id))
    finished = sorted((j for j in jobs if j.is_final),
                      key=lambda j: (j.finished_at or j.updated_at, j.id), reverse=True)
    if active_only:
        finished = []
    elif recent is not None:
        finished = finished[:max(0, recent)]
    return active + finished


def summary(hidden: list[Job]) -> str:
    """"and 9 done, 3 rejected": the jobs left off the screen, by state."""
    counts = {state: sum(1 for j in hidden if j.state == state) for state in SUMMARY_ORDER}
    parts = [f"{n} {state}" for state, n in counts.items() if n]
    return "and " + ", ".join(parts) + " (lorad status --json lists every job)"


def status_screen(jobs: list[Job], *, width: int, height: int | None = None,
                  active_only: bool = False, recent: int | None = None) -> Group:
    """`lorad status`: one line per job, never wider than `width`; with a `height`, only the
    jobs that fit, the rest counted on a last line. Full reasons are in `lorad show`."""
    listed = ordered(jobs, active_only=active_only, recent=recent)
    if height is not None and len(listed) + 1 > height:  # + the header line
        listed = listed[:max(0, height - 2)]  # the header and the summary line
    shown = {j.id for j in listed}
    hidden = [j for j in jobs if j.id not in shown]
    parts: list[Any] = [status_table(listed, width)]
    if hidden:
        parts.append(Text(summary(hidden), style="dim", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


def print_status(console: Console, jobs: Callable[[], list[Job]], *, watch: bool = False,
                 active_only: bool = False, recent: int | None = None) -> None:
    """`lorad status` on `console`: on a terminal (and with `watch`) as many jobs as fit, a line
    kept for the cursor; piped, every job. `watch` redraws every 2 s until Ctrl-C."""
    def screen() -> Group:
        fits = watch or console.is_terminal
        return status_screen(jobs(), width=console.width, active_only=active_only, recent=recent,
                             height=console.height - 1 if fits else None)

    if not watch:
        console.print(screen(), crop=True)
        return
    with contextlib.suppress(KeyboardInterrupt), Live(screen(), console=console,
                                                      refresh_per_second=1) as live:
        while True:
            time.sleep(2)
            live.update(screen())


def _cell(text: str) -> Text:
    """A cell that stays on one line: cut with "…" when its column is narrowed."""
    return Text(text, no_wrap=True, overflow="ellipsis")


def status_table(jobs: list[Job], width: int = 120) -> Table:
    """One line per job, in the order given, fitted to `width` columns: the token and the detail
    (progress, or the first line of the reason) are shortened with "…" when they do not fit."""
    table = Table(box=None, pad_edge=False)
    wide = width >= 110
    for column in ("ID", "TOKEN", "STATE", "STAGE", "PROGRESS", "", "AGE"):
        # TOKEN and the detail give up their width first; the others never wrap.
        table.add_column(column, no_wrap=column not in ("TOKEN", ""),
                         max_width=(24 if wide else 16) if column == "TOKEN" else None)
    for job in jobs:
        running = is_running(job)
        bar: Any = ProgressBar(total=1.0, completed=job.progress,
                                width=20 if wide else 8) if running \
            else ""
        detail = job.error.splitlines()[0] if job.error else (
            job.progress_text if running or job.state == "queued" else "")
        if job.state == "training":
            epochs, _ = outbox_epochs(job)
            detail += f" · in the outbox: epochs {span(epochs)}" if epochs else ""
            placed = where(job)
            detail += f" · on {placed}" if placed and placed != job.progress_text else ""
        # Names, errors and progress are text, never markup: "[train]" and "[/old]" show as typed.
        table.add_row(str(job.id), _cell(job.token or job.name),
                      Text(job.state, style=COLOURS.get(job.state, "cyan")), job.stage, bar,
                      _cell(detail), age(job))
    return table


def kind_text(job: Job) -> str:
    """"new training", or "follow-up of job 12 (resume from epoch 6)"."""
    if job.kind == "resume":
        return (f"follow-up of job {job.parent_id} (resume from epoch "
                f"{job.train.get('start_epoch', '?')})")
    return "new training" if job.kind == "new" else job.kind


def job_text(found: Job, events: list[Event], notes: list[dict[str, Any]]) -> str:
    """`lorad show`: the job, its training, its outbox folder's epochs and which one is the
    LoRA, its events and its notifications (rich markup)."""
    # A job that is not running has no speed and no ETA, whatever an older lorad left stored; a
    # queued one may say why it waits ("waiting for training: kohya.sd_scripts ...").
    shown = is_running(found) or found.state == "queued"
    running = escape(f" {found.progress_text}") if shown and found.progress_text else ""
    lines = [f"[bold]job {found.id}[/bold] {escape(found.name)}  ({escape(kind_text(found))})",
             escape(f"  token {found.token}  model {found.model}  state {found.state}  stage "
                    f"{found.stage}"),
             f"  progress {found.progress:.0%}{running}"]
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
        lines += likeness_lines(m)
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
