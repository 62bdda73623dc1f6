"""What a person reads about a job on a phone: one short title and a few lines per event."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lorad.delivery import manifest
from lorad.delivery.manifest import Manifest
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
    runs = train.get("runs", [])
    steps = sum(r.get("steps_per_epoch", 0) * (r["target"] - r["first_epoch"] + 1)
                for r in runs if not r.get("failure"))
    took = duration((job.finished_at or time.time()) - (job.started_at or job.created_at))
    folder = Path(job.outbox_dir or settings.outbox / (job.token or ""))
    m = manifest.read(folder)
    lines = [
        f"Token: {job.token}",
        f"Base model: {job.model}",
        f"Trained: {epoch_span(start, epochs)}, {steps} steps, in {took}",
        f"The LoRA ({job.token}.safetensors): {m.describe_final()}",
        f"Files: {_shown_folder(folder, settings)}",
        *_ladder_lines(train),
        *likeness_lines(m, job),
        *dataset_lines(JobPaths.of(settings, job).report),
        "",
        f"Undertrained? lorad resume {job.id} --epochs 3  (or put resume.toml with "
        "epochs = 3 in that folder)",
        f"Overtrained? lorad pick {job.id} --epoch N  (or put pick.toml with epoch = N "
        "in that folder)",
    ]
    copies = [c.path for c in m.copies if m.final and c.epoch == m.final.epoch]
    if copies:
        lines.insert(5, "Copied to: " + ", ".join(copies))
    return f"lorad: {job.token} LoRA ready", "\n".join(lines)


def epoch(job: Job, m: Manifest, number: int, target: int | None) -> tuple[str, str]:
    """One epoch saved while the training goes on (notify.events "epoch")."""
    entry = m.epochs[number]
    of = f" of {target}" if target else ""
    lines = [f"Job {job.id} ({job.token}): epoch {number}{of} saved"
             + (f" at step {entry.steps}." if entry.steps else "."),
             f"Its samples are attached; all of them: {job.outbox_dir}/samples.png",
             f"Use it now: lorad pick {job.id} --epoch {number}",
             f"Stop here: lorad cancel {job.id} (the saved epochs stay)"]
    return f"lorad: {job.token} epoch {number}{of}", "\n".join(lines)


def epoch_span(start: int, target: object) -> str:
    """"epochs 3-5", "epoch 3", "6 epochs", "1 epoch"."""
    if not start:
        return "1 epoch" if target == 1 else f"{target} epochs"
    return f"epoch {target}" if target == start + 1 else f"epochs {start + 1}-{target}"


def _shown_folder(folder: Path, settings: Settings) -> str:
    """The folder relative to the outbox (what a person finds in a shared outbox), and where
    that is on the server."""
    try:
        return f"{folder.relative_to(settings.outbox)}/ in the outbox ({folder})"
    except ValueError:
        return str(folder)


def _ladder_lines(train: dict[str, Any]) -> list[str]:
    """What the out-of-memory ladder changed, and what that did to the steps of an epoch."""
    tried = train.get("ladder") or []
    if not tried:
        return []
    line = "Out of GPU memory, so lorad changed: " + ", ".join(tried)
    per_epoch = [r["steps_per_epoch"] for r in train.get("runs", []) if r.get("steps_per_epoch")]
    if per_epoch and per_epoch[0] != per_epoch[-1]:
        line += f" (steps per epoch {per_epoch[0]} -> {per_epoch[-1]})"
    return [line + "."]


def likeness_lines(m: Manifest, job: Job) -> list[str]:
    """[score]'s suggestion: which epoch looks most like the person, and how to take it."""
    suggestion = m.suggestion
    if suggestion is None or not suggestion.scored:
        return []
    line = f"Likeness: {suggestion.reason}"
    if suggestion.epoch is not None and m.final and m.final.epoch == suggestion.epoch:
        line += " (it is the LoRA)"
    elif suggestion.epoch is not None:
        line += f"; lorad pick {job.id} --epoch {suggestion.epoch}"
    return [line]


def dataset_lines(report: Path, most: int = 5) -> list[str]:
    """The dataset's warnings, one line each (the first few, then where to read the rest)."""
    try:
        warnings = json.loads(report.read_text()).get("warnings") or []
    except (OSError, ValueError, AttributeError):
        return []
    if not warnings:
        return []
    lines = ["Dataset warnings:", *(f"- {w}" for w in warnings[:most])]
    if len(warnings) > most:
        lines.append(f"- and {len(warnings) - most} more in report.json")
    return lines


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
