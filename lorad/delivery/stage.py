"""Deliver: everything a person takes away, into <outbox>/<token>/, one atomic file at a time.

Each file is written under a hidden temporary name in the same folder and renamed into place, so
the outbox never shows a half-written file. (A whole-folder swap would hide the dataset report that
preparation already put there, and the epochs of earlier trainings of the same subject.) A file
that would replace a different one of the same name (a follow-up trained from an earlier epoch)
first moves the old one to replaced/.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lorad.captioning.stage import publish
from lorad.context import Context
from lorad.dataset.sheets import samples_sheet
from lorad.delivery.outbox import take_folder, write_owner
from lorad.store import Job
from lorad.subject import SubjectSettings
from lorad.system.fsutil import atomic_copy, atomic_write_text, same_file, unique_path
from lorad.workspace import epoch_file_name, epoch_files

SAMPLE_NAME = re.compile(r".+_e(\d{6})(?:_s(\d{8}))?_(\d{2})\.png")


def put(source: Path, target: Path, replaced_dir: Path) -> bool:
    """Copy source to target unless it is already there; keep a different old file aside."""
    if target.exists():
        if same_file(source, target):
            return False
        aside = unique_path(replaced_dir / target.name)
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, aside)
    atomic_copy(source, target)
    return True


def outbox_of(ctx: Context, job: Job) -> Path:
    if job.outbox_dir:
        folder = Path(job.outbox_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    root = job.parent_id or job.id
    return take_folder(ctx.settings.outbox, job.token or job.name, root, {"token": job.token})[0]


def run(ctx: Context, job: Job) -> None:
    store = ctx.store
    paths = ctx.paths(job)
    token = job.token or ""
    outbox = outbox_of(ctx, job)
    if not job.outbox_dir:
        store.update(job.id, outbox_dir=str(outbox))
    replaced = outbox / "replaced" / f"by-job-{job.id}"
    epochs = epoch_files(ctx.paths(job).epochs, job.token or "")
    own = {n: p for n, p in epochs.items() if n > job.train.get("start_epoch", 0)}
    steps = [("epochs", len(own)), ("samples", 1), ("files", 1)]
    total = sum(n for _, n in steps) or 1
    for done, (number, path) in enumerate(own.items(), start=1):
        put(path, outbox / epoch_file_name(token, number), replaced)
        store.set_progress(job.id, done / total, f"copied epoch {number}")
    if own:
        final = max(own)
        put(own[final], outbox / f"{token}.safetensors", replaced)
    for sample in sorted(paths.samples.glob("*.png")):
        put(sample, outbox / "samples" / sample.name, replaced / "samples")
    sheet = contact_sheet(job, outbox)
    log_name = "train.log" if job.kind == "new" else f"train-job{job.id}.log"
    if paths.train_log.exists():
        atomic_copy(paths.train_log, outbox / log_name)
    runs = job.train.get("runs", [])
    if runs:
        atomic_write_text(outbox / "command.txt", "\n".join(runs[-1]["argv"]) + "\n")
    for source, name in ((paths.report, "report.json"), (paths.dataset_sheet, "dataset.png")):
        if source.exists():
            put(source, outbox / name, replaced)
    if paths.training_images.is_dir():
        for image in sorted(paths.training_images.glob("*/*")):
            if image.suffix in (".png", ".txt"):
                put(image, outbox / "dataset" / image.name, replaced / "dataset")
    publish(ctx, job)
    write_owner(outbox, summary(ctx, job, epochs, sheet))
    for folder in ctx.settings.deliver.copy_to:
        if own:
            atomic_copy(own[max(own)], Path(folder) / f"{token}.safetensors")
    store.set_progress(job.id, 1.0, f"delivered to {outbox}")
    store.event(job.id, f"delivered to {outbox}")


def summary(ctx: Context, job: Job, epochs: dict[int, Path], sheet: Path | None
            ) -> dict[str, Any]:
    subject = SubjectSettings.model_validate(job.settings)
    jobs = read_jobs(Path(job.outbox_dir or ""), job.id)
    return {
        "token": job.token, "model": job.model, "jobs": jobs,
        "family": ctx.settings.models[job.model].family if job.model in ctx.settings.models
        else None,
        "epochs": sorted(epochs), "final_epoch": max(epochs) if epochs else None,
        "images": job.train.get("images"), "repeats": job.train.get("repeats"),
        "prompts": subject.prompts(), "samples_sheet": sheet.name if sheet else None,
    }


def read_jobs(outbox: Path, job_id: int) -> list[int]:
    try:
        jobs = json.loads((outbox / "lorad-job.json").read_text()).get("jobs", [])
    except (OSError, ValueError):
        jobs = []
    return sorted({*jobs, job_id})


def contact_sheet(job: Job, outbox: Path) -> Path | None:
    """samples.png: one row per sampling point (epoch, step), one column per prompt."""
    rows: dict[tuple[int, int], dict[int, Path]] = {}
    for path in (outbox / "samples").glob("*.png"):
        match = SAMPLE_NAME.fullmatch(path.name)
        if not match:
            continue
        epoch, step, prompt = int(match.group(1)), match.group(2), int(match.group(3))
        key = (epoch, int(step) if step else 1 << 62)
        rows.setdefault(key, {})[prompt] = path
    if not rows:
        return None
    prompts = SubjectSettings.model_validate(job.settings).prompts()
    width = max(len(prompts), 1 + max(max(cells) for cells in rows.values()))
    columns = [prompts[i] if i < len(prompts) else f"prompt {i + 1}" for i in range(width)]
    table = []
    for (epoch, step), cells in sorted(rows.items()):
        label = f"epoch {epoch}" if step == 1 << 62 else f"epoch {epoch} · step {step}"
        table.append((label, [cells.get(i) for i in range(width)]))
    return samples_sheet(table, columns, outbox / "samples.png")
