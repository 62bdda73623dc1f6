"""What a person reads about a job on a phone: one short title and a few lines per event."""

from __future__ import annotations

import time
from pathlib import Path

from lorad.settings import Settings
from lorad.store import Job, Store
from lorad.workspace import JobPaths

LOG_LINES = 12


def duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def accepted(job: Job) -> tuple[str, str]:
    images = job.train.get("images", "?")
    return (f"lorad: {job.token} accepted",
            f"Job {job.id}: {images} photos from {job.name} are ready; training {job.model} "
            "starts when a GPU is free.")


def rejected(job: Job, settings: Settings) -> tuple[str, str]:
    where = job.options.get("failed_path") or str(settings.failed_dir / job.name)
    return (f"lorad: {job.name} refused",
            f"Job {job.id}: {job.error}\n\nThe folder is in {where} with error.txt. Fix it and "
            "drop it into the inbox again.")


def failed(job: Job, store: Store, settings: Settings) -> tuple[str, str]:
    lines = [f"Job {job.id} ({job.token or job.name}) failed in the {job.stage} stage:",
             job.error or "unknown error"]
    tried = job.train.get("ladder") or []
    if tried:
        lines.append("Tried for memory: " + ", ".join(tried) + ".")
    attempts = job.attempts
    if attempts:
        lines.append(f"Attempts: {attempts}.")
    tail = log_tail(JobPaths.of(settings, job).train_log) if job.stage == "train" else ""
    if tail:
        lines += ["", "Last lines of train.log:", tail]
    lines += ["", f"Finished epochs are kept. Retry: lorad retry {job.id}"]
    return f"lorad: {job.token or job.name} failed", "\n".join(lines)


def done(job: Job, settings: Settings) -> tuple[str, str]:
    train = job.train
    epochs = train.get("target", "?")
    start = train.get("start_epoch", 0)
    steps = sum(r.get("steps_per_epoch", 0) * (r["target"] - r["first_epoch"] + 1)
                for r in train.get("runs", []) if not r.get("failure"))
    took = duration((job.finished_at or time.time()) - (job.started_at or job.created_at))
    outbox = job.outbox_dir or str(settings.outbox / (job.token or ""))
    trained = f"epochs {start + 1}-{epochs}" if start else f"{epochs} epochs"
    lines = [
        f"Token: {job.token}",
        f"Base model: {job.model}",
        f"Trained: {trained}, {steps} steps, in {took}",
        f"Files: {outbox}",
        "",
        f"Undertrained? lorad resume {job.id} --epochs 3  (or put resume.toml with "
        "epochs = 3 in that folder)",
        f"Overtrained? lorad pick {job.id} --epoch N  (or put pick.toml with epoch = N "
        "in that folder)",
    ]
    return f"lorad: {job.token} LoRA ready", "\n".join(lines)


def log_tail(path: Path, lines: int = LOG_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
