"""`lorad-job.json`: the one truth about a LoRA's folder in the outbox.

It lists every epoch file in the folder with the job and run that made it, its steps, the digest of
the settings it was trained with and its samples; which epoch `<token>.safetensors` is and why
(the newest, or picked by a person); the lineage of jobs (which job resumed which, from which
epoch); the lines of training moved aside by a resume from an earlier epoch; and where copies of
the LoRA were put (`deliver.copy_to`). It is rewritten atomically, under a lock, after every
change to the folder, so `lorad show`, the messages, the contact sheet and the web page read it
instead of the files.

Format 1 (lorad 0.1: `epochs` a list, `final_epoch`, `picked_epoch`) is read and upgraded.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from lorad.likeness.score import Likeness, Suggestion
from lorad.system.fsutil import atomic_write_json
from lorad.workspace import epoch_files

MANIFEST = "lorad-job.json"
FORMAT = 2


class EpochEntry(BaseModel):
    file: str  # its name in the folder: <token>-NNNNNN.safetensors
    job: int | None = None  # the job whose training made it (None: not known, format 1)
    run: int | None = None  # that job's run number
    steps: int | None = None  # optimisation steps from the start of the line to this epoch
    settings: str | None = None  # the digest of the training settings (resume-compatible runs)
    samples: list[str] = Field(default_factory=list)  # relative paths: samples/NAME.png
    samples_note: str | None = None  # why samples are missing, when they are
    saved_at: float | None = None
    likeness: Likeness | None = None  # its samples' likeness to the person ([score])


class Final(BaseModel):
    """Which epoch `<token>.safetensors` is."""

    epoch: int
    how: Literal["newest", "picked"]
    at: float  # when it became the final one


class LineEntry(BaseModel):
    """One job of the lineage: a new training, or a resume of a parent from one of its epochs."""

    job: int
    kind: Literal["new", "resume"]
    parent: int | None = None
    from_epoch: int | None = None
    epochs: int | None = None  # how many epochs it adds
    resumed_from: Literal["state", "weights"] | None = None


class Superseded(BaseModel):
    """Epochs moved aside by a resume from an earlier epoch: the old line's later epochs."""

    folder: str  # relative: superseded/job-N
    epochs: list[int]
    by_job: int  # the resume that branched
    at: float


class Copy(BaseModel):
    """A copy of the LoRA that lorad put into a `deliver.copy_to` folder."""

    path: str
    epoch: int
    size: int
    mtime_ns: int


class Manifest(BaseModel):
    format: int = FORMAT
    token: str | None = None
    model: str | None = None
    family: str | None = None
    root_job: int | None = None
    jobs: list[int] = Field(default_factory=list)
    lineage: list[LineEntry] = Field(default_factory=list)
    epochs: dict[int, EpochEntry] = Field(default_factory=dict)
    final: Final | None = None
    superseded: list[Superseded] = Field(default_factory=list)
    copies: list[Copy] = Field(default_factory=list)
    images: int | None = None
    repeats: int | None = None
    prompts: list[str] = Field(default_factory=list)
    samples_sheet: str | None = None
    samples_per_prompt: int = 1  # each prompt is sampled this many times, with other seeds
    suggestion: Suggestion | None = None  # the epoch that looks most like the person ([score])

    def sample_columns(self) -> list[str]:
        """What each sample of an epoch shows, in order: the prompts, then again with the next
        seeds ("photo of alice (2)") when each prompt is sampled more than once."""
        return [prompt if round_ == 0 else f"{prompt} ({round_ + 1})"
                for round_ in range(self.samples_per_prompt) for prompt in self.prompts]

    def newest(self) -> int | None:
        return max(self.epochs, default=None)

    def line_entry(self, job_id: int) -> LineEntry | None:
        return next((entry for entry in self.lineage if entry.job == job_id), None)

    def describe_final(self) -> str:
        """"epoch 4 (picked)", "epoch 8 (the newest)", or "none yet"."""
        if self.final is None:
            return "none yet"
        why = "picked" if self.final.how == "picked" else "the newest"
        return f"epoch {self.final.epoch} ({why})"


def read(folder: Path) -> Manifest:
    """The folder's manifest; an empty one where there is none or it cannot be read."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return Manifest()
    if not isinstance(data, dict):
        return Manifest()
    if data.get("format", 1) == 1:
        data = _from_format_1(folder, data)
    try:
        return Manifest.model_validate(data)
    except ValidationError:
        return Manifest()


def write(folder: Path, manifest: Manifest) -> None:
    atomic_write_json(folder / MANIFEST, manifest.model_dump(mode="json"))


@contextmanager
def updating(folder: Path) -> Iterator[Manifest]:
    """The folder's manifest, read under a lock on the folder itself (no lock file) and written
    back when the block ends without an error and something changed: the daemon's training
    threads, its deliveries and a person's `lorad pick` never lose each other's changes."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        manifest = read(folder)
        before = manifest.model_dump(mode="json")
        yield manifest
        if manifest.model_dump(mode="json") != before or not (folder / MANIFEST).exists():
            write(folder, manifest)  # unchanged: not rewritten (a look twice a second)
    finally:
        os.close(fd)  # releases the lock


def _from_format_1(folder: Path, data: dict[str, Any]) -> dict[str, Any]:
    """lorad 0.1's lorad-job.json: the epochs from the files, the final from picked/final."""
    token = data.get("token") or folder.name
    jobs = [j for j in data.get("jobs", []) if type(j) is int]
    root = data.get("root_job")
    epochs = {n: {"file": path.name, "job": None}
              for n, path in epoch_files(folder, token).items()}
    final = None
    picked, newest = data.get("picked_epoch"), data.get("final_epoch")
    at = _mtime(folder / f"{token}.safetensors")
    if type(picked) is int and picked in epochs:
        final = {"epoch": picked, "how": "picked", "at": at}
    elif type(newest) is int and newest in epochs:
        final = {"epoch": newest, "how": "newest", "at": at}
    return {
        "token": token, "model": data.get("model"), "family": data.get("family"),
        "root_job": root if type(root) is int else None, "jobs": jobs,
        "lineage": [{"job": j, "kind": "new" if j == root else "resume"} for j in jobs],
        "epochs": epochs, "final": final, "images": data.get("images"),
        "repeats": data.get("repeats"), "prompts": data.get("prompts") or [],
        "samples_sheet": data.get("samples_sheet"),
    }


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return time.time()
