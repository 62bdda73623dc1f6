"""Which epoch is the LoRA: `<token>.safetensors` in the outbox folder, its copies in the
`deliver.copy_to` folders, and the manifest's `final` that says which epoch it is and why.

A copy never replaces a file that lorad did not put there for this lineage (another person's LoRA
with the same token, say): it gets a name of its own, `<token>.job-<id>.safetensors`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from lorad.delivery.manifest import Copy, Final, Manifest
from lorad.system.fsutil import atomic_copy, link_or_copy, same_file, unique_path
from lorad.workspace import epoch_file_name


def final_name(token: str) -> str:
    return f"{token}.safetensors"


def make_final(folder: Path, m: Manifest, epoch: int, how: Literal["newest", "picked"],
               copy_to: list[Path]) -> list[Path]:
    """Make `epoch` the LoRA: <token>.safetensors in `folder` and in each copy_to folder, and
    the manifest's final. Where the copies went."""
    token = m.token or folder.name
    chosen = folder / epoch_file_name(token, epoch)
    final = folder / final_name(token)
    if not (final.exists() and same_file(final, chosen)):
        if final.exists() and not _is_an_epoch(final, folder, m):
            os.rename(final, unique_path(folder / "replaced" / final.name))  # not ours: aside
        link_or_copy(chosen, final)
    m.final = Final(epoch=epoch, how=how, at=time.time())
    return [_copy(chosen, Path(target), m, epoch) for target in copy_to]


def _is_an_epoch(final: Path, folder: Path, m: Manifest) -> bool:
    return any(same_file(final, folder / entry.file) for entry in m.epochs.values())


def _copy(chosen: Path, target_folder: Path, m: Manifest, epoch: int) -> Path:
    """Copy the LoRA into a copy_to folder under <token>.safetensors, unless a file there of
    that name is not the copy lorad made for this lineage: then under <token>.job-<root>."""
    token = m.token or chosen.parent.name
    target = target_folder / final_name(token)
    if target.exists() and not _ours(target, m):
        target = target_folder / f"{token}.job-{m.root_job}.safetensors"
        if target.exists() and not _ours(target, m):
            target = unique_path(target)
    if not (_ours(target, m) and same_file(chosen, target)):
        atomic_copy(chosen, target)
    found = os.stat(target)
    m.copies = [c for c in m.copies if c.path != str(target)]
    m.copies.append(Copy(path=str(target), epoch=epoch, size=found.st_size,
                         mtime_ns=found.st_mtime_ns))
    return target


def _ours(path: Path, m: Manifest) -> bool:
    """The file is still the copy lorad made there for this lineage (unchanged since)."""
    try:
        found = os.stat(path)
    except OSError:
        return False
    return any(c.path == str(path) and c.size == found.st_size and c.mtime_ns == found.st_mtime_ns
               for c in m.copies)
