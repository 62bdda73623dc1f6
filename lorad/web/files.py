"""Which files of a job's outbox folder the page serves, and opening them without trusting a path.

A request names a job and a file name. The name is only looked up in the list this module builds
from the folder's manifest (epochs, samples, the sheets) and lorad's known file names; nothing
from the request reaches the filesystem. Even a listed name is opened one component at a time
below the folder, with O_NOFOLLOW, and must be a regular file: a symbolic link anywhere on the
way (put there by hand, or a manifest edited by hand) is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from lorad.delivery import manifest
from lorad.delivery.final import final_name
from lorad.delivery.manifest import Manifest
from lorad.delivery.publish import SHEET, SHEET_ALL
from lorad.store import Job

KNOWN = ("dataset.png", "report.json", SHEET, SHEET_ALL, "captions.txt", "train.log",
         "command.txt", manifest.MANIFEST)
TYPES = {".png": "image/png", ".json": "application/json", ".txt": "text/plain; charset=utf-8",
         ".log": "text/plain; charset=utf-8"}
CHUNK = 256 * 1024


class NotServed(LookupError):
    """The name is not one of the folder's files, or it is not a plain file inside it."""


def served_names(job: Job, m: Manifest) -> set[str]:
    """Every name a request may ask for in this job's outbox folder."""
    names = set(KNOWN)
    if job.token:
        names.add(final_name(job.token))
    for entry in m.epochs.values():
        names.add(entry.file)
        names.update(entry.samples)
    if m.samples_sheet:
        names.add(m.samples_sheet)
    return names


def open_served(job: Job, name: str, m: Manifest | None = None) -> tuple[int, int]:
    """An open descriptor of the file `name` in the job's outbox folder, and its size."""
    if not job.outbox_dir:
        raise NotServed(f"job {job.id} has no outbox folder yet")
    m = m if m is not None else manifest.read(Path(job.outbox_dir))
    if name not in served_names(job, m):
        raise NotServed(f"{name!r} is not a file of job {job.id}")
    parts = name.split("/")
    if any(part in ("", ".", "..") or "\0" in part for part in parts):
        raise NotServed(f"{name!r} is not a plain name")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        folder = os.open(job.outbox_dir, flags | os.O_DIRECTORY)
    except OSError as error:
        raise NotServed(f"the outbox folder of job {job.id}: {error.strerror}") from None
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=folder)
    except OSError as error:
        raise NotServed(f"{name!r}: {error.strerror}") from None
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotServed(f"{name!r} is not a regular file")
    return fd, info.st_size


def read_chunks(fd: int) -> Iterator[bytes]:
    """The file's bytes; the descriptor is closed at the end (or when the reader gives up)."""
    try:
        while chunk := os.read(fd, CHUNK):
            yield chunk
    finally:
        os.close(fd)


def content_type(name: str) -> str:
    return TYPES.get(Path(name).suffix, "application/octet-stream")
