"""Epochs into the outbox as they are saved: each epoch file and its samples copied whole (under a
hidden name, then renamed), recorded in the manifest, and drawn on the contact sheet.

`publish_epochs` is called while a training runs (each time Kohya has written an epoch) and once
more when it ends; it only adds what the outbox lacks, so calling it again is harmless.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from lorad.context import Context
from lorad.dataset.sheets import samples_sheet
from lorad.delivery import manifest
from lorad.delivery.manifest import EpochEntry, Manifest
from lorad.delivery.outbox import take_folder
from lorad.store import Job
from lorad.subject import subject_of
from lorad.system.fsutil import link_or_copy, same_file, unique_path
from lorad.workspace import epoch_file_name, epoch_files

SAMPLE_NAME = re.compile(r".+_e(\d{6})(?:_s(\d{8}))?_(\d{2})\.png")
SHEET = "samples.png"
SHEET_ALL = "samples-all.png"
# samples.png stays readable as a phone attachment: at most this many rows (under about 2000 px
# tall); samples-all.png has every row once there are more.
SHEET_ROWS = 7
NO_SAMPLES = "no samples: the training was stopped while sampling"
WHOLE_EPOCH = 1 << 62  # sorts an epoch's end-of-epoch samples after its step samples


def put(source: Path, target: Path, replaced_dir: Path) -> bool:
    """Put source at target (a hard link where both are on one filesystem, else a copy; either
    way under a hidden name, then renamed) unless it is already there; a different old file of
    that name is kept aside in replaced_dir. Linking makes a 150 MB epoch appear in the outbox
    at once; Kohya never writes into a file it has saved, so the two names stay equal."""
    if target.exists():
        if same_file(source, target):
            return False
        aside = unique_path(replaced_dir / target.name)
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, aside)
    link_or_copy(source, target)
    return True


def outbox_of(ctx: Context, job: Job) -> Path:
    """The job's folder in the outbox (taken for its lineage the first time), recorded."""
    if job.outbox_dir:
        folder = Path(job.outbox_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    root = job.parent_id or job.id
    folder = take_folder(ctx.settings.outbox, job.token or job.name, root, job.id)[0]
    ctx.store.update(job.id, outbox_dir=str(folder))
    return folder


def sample_key(name: str) -> tuple[int, int, int] | None:
    """(epoch, step or WHOLE_EPOCH, prompt) of a sample lorad named, or None."""
    match = SAMPLE_NAME.fullmatch(name)
    if not match:
        return None
    step = int(match.group(2)) if match.group(2) else WHOLE_EPOCH
    return int(match.group(1)), step, int(match.group(3))


def publish_epochs(ctx: Context, job: Job, train: dict[str, Any]) -> list[int]:
    """Put every epoch and sample of this job that its work folder holds and the outbox lacks
    into the outbox, record them in the manifest and redraw the sheet. The epochs newly put."""
    token = job.token or ""
    paths = ctx.paths(job)
    folder = outbox_of(ctx, job)
    own = {n: p for n, p in epoch_files(paths.epochs, token).items()
           if n > train.get("start_epoch", 0)}
    runs = {run["number"]: run for run in train.get("runs", [])}
    recorded = train.get("epochs", {})
    new: list[int] = []
    with manifest.updating(folder) as m:
        _describe(ctx, job, m)
        m.samples_per_prompt = (train.get("runs") or [{}])[-1].get("samples_per_prompt",
                                                                     m.samples_per_prompt)
        for number, path in own.items():
            entry = m.epochs.get(number)
            if entry is not None and entry.job == job.id:
                continue
            put(path, folder / epoch_file_name(token, number), folder / "replaced")
            run = runs.get(recorded.get(str(number), {}).get("run"), {})
            m.epochs[number] = EpochEntry(
                file=epoch_file_name(token, number), job=job.id, run=run.get("number"),
                steps=_steps(m, number, run), settings=run.get("compat"), saved_at=time.time())
            new.append(number)
        added = _publish_samples(paths.samples, folder, m)
        _note_missing_samples(m, job, runs)
        if new or added or not (folder / SHEET).exists():
            m.samples_sheet = draw_sheets(folder, m)
    return new


def _describe(ctx: Context, job: Job, m: Manifest) -> None:
    """What the manifest says about the LoRA as a whole, and this job's place in its lineage."""
    m.token, m.model = job.token, job.model
    model = ctx.settings.models.get(job.model or "")
    m.family = model.family if model else m.family
    m.root_job = m.root_job or job.parent_id or job.id
    if job.id not in m.jobs:
        m.jobs = sorted({*m.jobs, job.id})
    if m.line_entry(job.id) is None:
        resume = job.options.get("resume") or {}
        m.lineage.append(manifest.LineEntry(
            job=job.id, kind="resume" if resume else "new", parent=resume.get("parent"),
            from_epoch=resume.get("from"), epochs=resume.get("epochs")))
    m.images = job.train.get("images", m.images)
    m.repeats = job.train.get("repeats", m.repeats)
    m.prompts = subject_of(job).prompts() if job.settings.get("token") else m.prompts


def _steps(m: Manifest, number: int, run: dict[str, Any]) -> int | None:
    """Optimisation steps from the start of the line to the end of epoch `number`."""
    per_epoch = run.get("steps_per_epoch")
    if not per_epoch:
        return None
    before = m.epochs.get(number - 1)
    if number == 1:
        return per_epoch
    return before.steps + per_epoch if before and before.steps is not None else None


def _publish_samples(work_samples: Path, folder: Path, m: Manifest) -> bool:
    """Copy new samples into <folder>/samples/ and list them under their epoch. True if any."""
    added = False
    for sample in sorted(work_samples.glob("*.png")):
        key = sample_key(sample.name)
        if key is None:
            continue
        relative = f"samples/{sample.name}"
        if not (folder / relative).exists():
            put(sample, folder / relative, folder / "replaced" / "samples")
            added = True
        entry = m.epochs.get(key[0])
        if entry is not None and relative not in entry.samples:
            entry.samples.append(relative)
            entry.samples_note = None
            added = True
    return added


def _note_missing_samples(m: Manifest, job: Job, runs: dict[int, dict[str, Any]]) -> None:
    """An epoch of this job whose run sampled it but whose samples never came (the run was
    stopped while sampling, and no later run has drawn them yet) says so."""
    for number, entry in m.epochs.items():
        run = runs.get(entry.run or 0)
        if entry.job != job.id or run is None or entry.samples or not run.get("ended"):
            continue
        every = run.get("sample_every_n_epochs") or 0
        if every and (number - run["offset"]) % every == 0:
            entry.samples_note = NO_SAMPLES


def draw_sheets(folder: Path, m: Manifest) -> str | None:
    """samples.png (the newest rows, and the final epoch's) and, when it cannot show them all,
    samples-all.png. The name of the sheet, or None when there are no samples."""
    rows = _rows(folder, m)
    if not rows:
        return None
    columns = m.sample_columns() or [f"prompt {i + 1}" for i in range(_width(rows))]
    width = max(len(columns), _width(rows))
    columns += [f"prompt {i + 1}" for i in range(len(columns), width)]
    final = m.final.epoch if m.final else None
    table = [(_label(key, m, final), [cells.get(i) for i in range(width)], key[0] == final
              and key[1] == WHOLE_EPOCH) for key, cells in sorted(rows.items())]
    if len(table) > SHEET_ROWS:
        samples_sheet([r[:2] for r in table], columns, folder / SHEET_ALL,
                      marked=[i for i, r in enumerate(table) if r[2]])
        table = _shown(table)
    elif (folder / SHEET_ALL).exists():
        (folder / SHEET_ALL).unlink()
    samples_sheet([r[:2] for r in table], columns, folder / SHEET,
                  marked=[i for i, r in enumerate(table) if r[2]])
    return SHEET


def _rows(folder: Path, m: Manifest) -> dict[tuple[int, int], dict[int, Path | None]]:
    rows: dict[tuple[int, int], dict[int, Path | None]] = {}
    for path in (folder / "samples").glob("*.png"):
        key = sample_key(path.name)
        if key is not None:
            rows.setdefault(key[:2], {})[key[2]] = path
    for number, entry in m.epochs.items():
        if entry.samples_note:
            rows.setdefault((number, WHOLE_EPOCH), {})
    return rows


def _width(rows: dict[tuple[int, int], dict[int, Path | None]]) -> int:
    return 1 + max((max(cells) for cells in rows.values() if cells), default=0)


def _label(key: tuple[int, int], m: Manifest, final: int | None) -> str:
    epoch, step = key
    entry = m.epochs.get(epoch)
    if step != WHOLE_EPOCH:
        return f"epoch {epoch} · step {step}"
    label = f"epoch {epoch}"
    if entry and entry.steps:
        label += f" · step {entry.steps}"
    if epoch == final and m.final:
        label += " · FINAL, the LoRA" + (" (picked)" if m.final.how == "picked" else "")
    if entry and entry.samples_note:
        label += f"; {entry.samples_note}"
    if entry and entry.likeness:  # [score]: "likeness 0.38, faces 4/4"
        label += f" · {entry.likeness.label()}"
    return label


def _shown(table: list[tuple[str, list[Path | None], bool]]
           ) -> list[tuple[str, list[Path | None], bool]]:
    """The rows samples.png shows: the newest ones, and the final epoch's wherever it is."""
    marked = [row for row in table if row[2]]
    newest = table[-SHEET_ROWS:]
    if marked and marked[0] not in newest:
        return [marked[0], *table[-(SHEET_ROWS - 1):]]
    return newest
