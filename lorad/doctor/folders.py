"""The folders: each exists (or can be made) and is writable, none inside another, and a folder
moves from the inbox into the work area with one rename (claiming, tried for real)."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import pwd
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lorad.doctor.check import FAIL, OK, WARN, Check, existing
from lorad.settings import Settings

PROBE_PREFIX = ".lorad-doctor-"  # a hidden name: a running daemon's watcher never takes it


def user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return f"uid {os.geteuid()}"


def contains(parent: Path, child: Path) -> bool:
    parent, child = parent.resolve(), child.resolve()
    return parent == child or parent in child.parents


def folder_paths(settings: Settings) -> dict[str, Path]:
    return {"inbox": settings.inbox, "outbox": settings.outbox, "state_dir": settings.state_dir,
            "failed": settings.failed_dir}


def folders(settings: Settings) -> Iterator[Check]:
    for key, path in folder_paths(settings).items():
        yield folder(key, path, in_state_dir=contains(settings.state_dir, path))
    found = layout(settings)
    yield found
    if found.status == OK:
        yield claim_move(settings)


def folder(key: str, path: Path, in_state_dir: bool) -> Check:
    if path.is_dir():
        if os.access(path, os.W_OK | os.X_OK):
            return Check(OK, key, f"{path} exists and {user()} can write to it")
        return Check(FAIL, key, f"{path} is not writable by {user()}; give that user write "
                                "access (chown or chmod), or run lorad as its owner")
    if path.exists():
        return Check(FAIL, key, f"{path} is a file, not a folder; remove it or point {key} "
                                "elsewhere")
    parent = existing(path)
    creatable = os.access(parent, os.W_OK | os.X_OK)
    if in_state_dir and creatable:
        return Check(OK, key, f"{path} does not exist yet; lorad creates it when it starts")
    if in_state_dir:
        return Check(WARN, key, f"{path} does not exist and {user()} cannot create it in "
                                f"{parent}; the systemd unit's StateDirectory= creates it, "
                                f"otherwise create it (mkdir -p) for {user()}")
    if creatable:
        return Check(WARN, key, f"{path} does not exist yet; create it now (lorad would when it "
                                "starts, but the systemd unit's ReadWritePaths= needs it first)")
    return Check(FAIL, key, f"{path} does not exist and {user()} cannot create it in {parent}; "
                            f"create it (mkdir -p) and give {user()} write access")


def layout(settings: Settings) -> Check:
    """No folder inside another (failed inside state_dir, its default, excepted)."""
    named = folder_paths(settings)
    clashes = []
    for (key_a, a), (key_b, b) in itertools.combinations(named.items(), 2):
        nested_failed = key_a == "state_dir" and key_b == "failed" and a.resolve() != b.resolve()
        if (contains(a, b) or contains(b, a)) and not nested_failed:
            clashes.append(f"{key_a} ({a}) and {key_b} ({b})")
    if clashes:
        return Check(FAIL, "folder layout", f"{'; '.join(clashes)} overlap; give each its own "
                                            "folder, none inside another")
    return Check(OK, "folder layout", "inbox, outbox, state_dir and failed do not overlap")


def claim_move(settings: Settings) -> Check:
    """Claiming's move, tried for real: an empty folder renamed from the inbox into the work area
    and back. A rename can fail across filesystems, and also across two mounts of one (a bind
    mount), which comparing device numbers cannot tell."""
    inbox = settings.inbox
    area = settings.work_dir if settings.work_dir.is_dir() else settings.state_dir
    if not (inbox.is_dir() and area.is_dir()):
        return Check(WARN, "claiming", f"cannot try moving a folder from the inbox ({inbox}) "
                                       f"into {area} before both exist; create them, then run "
                                       "lorad doctor again")
    try:
        probe = Path(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=inbox))
    except OSError as error:
        return Check(FAIL, "claiming", f"cannot create a folder in the inbox ({inbox}): "
                                       f"{error.strerror}; give {user()} write access to it")
    moved = area / probe.name
    try:
        os.rename(probe, moved)
        os.rename(moved, probe)
    except OSError as error:
        return claim_move_failed(error, inbox, area)
    finally:
        for leftover in (probe, moved):
            with contextlib.suppress(FileNotFoundError):
                leftover.rmdir()
    return Check(OK, "claiming", f"a folder moved from the inbox ({inbox}) into {area} with one "
                                 "rename, so claiming is instant (this runs outside the systemd "
                                 "unit's sandbox: there, the inbox and state_dir must share one "
                                 "ReadWritePaths= entry)")


def claim_move_failed(error: OSError, inbox: Path, area: Path) -> Check:
    if error.errno == errno.EXDEV:
        return Check(WARN, "claiming", f"a folder cannot be renamed from the inbox ({inbox}) "
                                       f"into {area}: they are on different filesystems or "
                                       "mounts, so each folder is copied, verified and then "
                                       "deleted instead (slower, and twice the space meanwhile); "
                                       "put the inbox and state_dir on one filesystem to make "
                                       "claiming instant")
    return Check(FAIL, "claiming", f"moving a folder from the inbox ({inbox}) into {area} "
                                   f"failed: {error.strerror or error}; lorad could not take any "
                                   f"folder, so give {user()} write access to both")
