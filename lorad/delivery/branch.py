"""Resuming from an earlier epoch starts a branch: the old line's later epochs leave the folder.

They move, with their samples and the LoRA file if it was one of them, into
`superseded/job-N/` (N: the job that made the newest of them), with a `lorad-line.json` listing
them, so that the folder and its contact sheet show one consistent line. Nothing is deleted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lorad.delivery import manifest
from lorad.delivery.final import final_name, make_final
from lorad.delivery.manifest import EpochEntry, Superseded
from lorad.delivery.publish import draw_sheets, sample_key
from lorad.system.fsutil import atomic_write_json, unique_path


def branch(folder: Path, start: int, by_job: int) -> Superseded | None:
    """Move every epoch after `start` out of the folder; what was moved, or None if nothing."""
    with manifest.updating(folder) as m:
        later = sorted(n for n in m.epochs if n > start)
        if not later:
            return None
        line = m.epochs[later[-1]].job or m.root_job
        aside = unique_path(folder / "superseded" / f"job-{line}")
        (aside / "samples").mkdir(parents=True)
        moved: dict[int, EpochEntry] = {n: m.epochs.pop(n) for n in later}
        for entry in moved.values():
            _move(folder / entry.file, aside / entry.file)
        for sample in (folder / "samples").glob("*.png"):
            key = sample_key(sample.name)
            if key is not None and key[0] > start:
                _move(sample, aside / "samples" / sample.name)
        if m.final is not None and m.final.epoch > start:
            _move(folder / final_name(m.token or folder.name), aside / final_name(m.token or ""))
            if start in m.epochs:
                make_final(folder, m, start, "newest", copy_to=[])
            else:
                m.final = None
        record = Superseded(folder=str(aside.relative_to(folder)), epochs=later, by_job=by_job,
                            at=time.time())
        atomic_write_json(aside / "lorad-line.json", {
            **record.model_dump(mode="json"),
            "epochs": {n: e.model_dump(mode="json") for n, e in moved.items()}})
        m.superseded.append(record)
        m.samples_sheet = draw_sheets(folder, m)
    return record


def _move(path: Path, target: Path) -> None:
    if path.exists():
        os.rename(path, target)
