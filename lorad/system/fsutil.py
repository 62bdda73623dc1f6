"""File operations that leave nothing half-done: atomic writes and copies, crash-safe moves."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from lorad.system.groups import process_alive
from lorad.system.walk import walk

TEMP_PREFIX = ".lorad-tmp-"


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# ENOSPC and EDQUOT in text, as Python (OSError), safetensors (Rust's io::Error) and the shell
# say them: for errors that arrive as text (a trainer's log, shutil's per-file reasons).
FULL_DISK_TEXT = re.compile(r"No space left on device|Disk quota exceeded|StorageFull"
                            r"|\[Errno (?:28|122)\]|code: (?:28|122),")


class DiskFull(OSError):
    """A write ran out of space. `where` says which disk; the message adds what to do ("JOB"
    stands for the job's id, which the daemon fills in)."""

    def __init__(self, number: int, where: str) -> None:
        super().__init__(number, f"{where}; free some space there, then run: lorad retry JOB")
        self.where = where

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[type[DiskFull], tuple[int, str]]:
        # Rebuilt from `where`, not from the message (which would get the advice twice): a
        # DiskFull raised in a worker process arrives whole.
        return DiskFull, (self.errno, self.where)


def disk_full(folder: Path, error: OSError | None = None) -> DiskFull:
    number = error.errno if error is not None and error.errno else errno.ENOSPC
    reason = "quota exceeded" if number == errno.EDQUOT else "no space left"
    return DiskFull(number, f"the disk holding {folder} is full ({reason})")


def _raise_disk_full(error: OSError, target: Path) -> None:
    if error.errno in FULL_ERRNOS:
        raise disk_full(target.parent, error) from error


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(target: Path) -> Path:
    return target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{target.name}")


def _atomic(target: Path, write: Callable[[Path], None]) -> Path:
    """write() fills a temporary file beside target, which is synced and renamed into place:
    target is either absent, the old file, or the whole new file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        _raise_disk_full(error, target)
        raise
    return target


def atomic_write_with(target: Path, write: Callable[[Path], None]) -> Path:
    """Like atomic_write_bytes, for writers that need a file name (an image library's save)."""
    return _atomic(target, write)


def atomic_write_bytes(target: Path, data: bytes) -> Path:
    return _atomic(target, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(target: Path, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, data: Any) -> Path:
    return atomic_write_text(target, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_copy(source: Path, target: Path) -> Path:
    """Copy a file so that `target` is either absent, the old file, or the whole new file."""
    return _atomic(target, lambda tmp: shutil.copyfile(source, tmp))


def link_or_copy(source: Path, target: Path) -> Path:
    """A hard link when both are on one filesystem (no extra space), else an atomic copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        return atomic_copy(source, target)
    os.replace(tmp, target)
    return target


def same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.stat(), b.stat()
    except FileNotFoundError:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    return sa.st_size == sb.st_size and file_hash(a) == file_hash(b)


class NotRegularFile(OSError):
    """A file that is not a regular file (a pipe, socket or device): never read, never copied."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EINVAL, "is not a regular file (a pipe, socket or device)",
                         str(path))


def open_regular(path: Path) -> BinaryIO:
    """path opened for reading, if it is a regular file (not a link, a pipe, a socket or a
    device): opening never blocks and reads nothing but the file's bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def file_hash(path: Path) -> str:
    with open_regular(path) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tree_manifest(root: Path, heartbeat: Callable[[], None] | None = None
                  ) -> dict[str, tuple[int, str]]:
    """Relative path -> (size, sha256) of every regular file below root; heartbeat() is called
    after each file is read."""
    manifest = {}
    for found in walk(root):
        if found.kind != "file":
            continue
        manifest[found.rel] = (found.path.stat(follow_symlinks=False).st_size,
                               file_hash(found.path))
        if heartbeat:
            heartbeat()
    return manifest


def _copy_regular(source: Path, target: Path) -> None:
    with open_regular(source) as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    shutil.copystat(source, target)


def _copy_entries(source: Path, target: Path, beat: Callable[[], None]) -> list[Path]:
    """Copy what is below source into the new folder target; the regular files copied."""
    target.mkdir()
    files, folders = [], [(source, target)]
    for found in walk(source):
        dest = target / found.rel
        if found.kind == "dir":
            dest.mkdir()
            folders.append((found.path, dest))
        elif found.kind == "link":
            os.symlink(os.readlink(found.path), dest)
        elif found.kind == "file":
            _copy_regular(found.path, dest)
            files.append(dest)
            beat()
        elif found.kind == "special":
            raise NotRegularFile(found.path)
        else:
            raise found.error or OSError(f"cannot read {found.path}")
    for folder, dest in reversed(folders):  # after their contents, which change the times
        shutil.copystat(folder, dest)
    return files


def copy_tree_verified(source: Path, target: Path,
                       heartbeat: Callable[[], None] | None = None) -> None:
    """Copy a folder (links kept as links), then check every file arrived byte for byte.

    Only regular files are read: a pipe, socket or device raises NotRegularFile. Any depth.
    heartbeat() is called after each file is copied, read back or synced: a caller that must
    show it is alive (the daemon's systemd watchdog) keeps doing so through a long copy.
    """
    beat = heartbeat or (lambda: None)
    try:
        files = _copy_entries(source, target, beat)
    except NotRegularFile:
        raise
    except OSError as error:
        _raise_disk_full(error, target)
        raise
    if tree_manifest(source, beat) != tree_manifest(target, beat):
        raise OSError(f"copy of {source} to {target} does not match the original")
    for path in files:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        beat()
    fsync_dir(target.parent)


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete the temporary files (TEMP_PREFIX + pid) below root that a killed process left:
    those of this process (a daemon that starts has written none yet, whatever pid it had
    before) and of processes that are gone. Another running lorad's are left alone."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for found in walk(root):
        name = found.path.name
        if found.kind in ("dir", "unreadable") or not name.startswith(TEMP_PREFIX):
            continue
        pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and 0 < int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            found.path.unlink()
            removed.append(found.path)
    return removed


def unique_path(path: Path) -> Path:
    """path, or path-2, path-3... whichever does not exist yet."""
    if not path.exists() and not path.is_symlink():
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.name}-{n}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        n += 1
