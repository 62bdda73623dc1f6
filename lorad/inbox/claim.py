"""Claiming a settled inbox folder as a job.

Claiming is crash-safe: the job row is written as 'claiming' before the folder moves, and the
start-up recovery finishes or undoes any claim a crash interrupted. After recovery a folder is
either still in the inbox with no job, or in the job's work folder with its job: never both, never
neither.

On one filesystem the move is one rename. Across filesystems the folder is first renamed aside to
a hidden name in the inbox (`.lorad-claim-<job id>`, which the watcher skips, and which frees the
name for a new drop), then copied, verified, renamed into place, and only then removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path

from lorad.context import Context
from lorad.inbox.refuse import refuse_claim
from lorad.inbox.shape import FolderTooLarge, check_shape
from lorad.store import Job
from lorad.system.fsutil import (
    DiskFull,
    copy_tree_verified,
    fsync_dir,
    unique_path,
)
from lorad.system.logs import for_job, log
from lorad.system.walk import remove_tree
from lorad.workspace import JobPaths

CLAIM_PREFIX = ".lorad-claim-"

Heartbeat = Callable[[], None]


def _no_heartbeat() -> None:
    """The heartbeat of callers that have no watchdog to feed."""


def parked_path(folder: Path, job_id: int) -> Path:
    """Where a cross-filesystem claim keeps the inbox folder while it copies it."""
    return folder.with_name(f"{CLAIM_PREFIX}{job_id}")


def _take(folder: Path, paths: JobPaths, job_id: int, heartbeat: Heartbeat = _no_heartbeat
          ) -> None:
    """Move folder to paths.source (see the module's docstring). On one filesystem the caller
    syncs the folders afterwards; across filesystems every step is synced here, and heartbeat()
    is called between the files copied."""
    try:
        os.rename(folder, paths.source)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    parked = parked_path(folder, job_id)
    os.rename(folder, parked)
    fsync_dir(folder.parent)
    check_shape(parked, folder.name, regular_only=True)  # what a copy can never take
    if paths.source_partial.exists():
        remove_tree(paths.source_partial)
    copy_tree_verified(parked, paths.source_partial, heartbeat=heartbeat)
    os.rename(paths.source_partial, paths.source)
    fsync_dir(paths.root)
    _remove_parked(parked)


def _remove_parked(parked: Path) -> None:
    """Remove the inbox copy of a folder whose verified copy is in the work area."""
    if not (parked.exists() or parked.is_symlink()):
        return
    try:
        remove_tree(parked)
    except OSError as error:  # the job has its copy; the hidden leftover is never taken again
        log.warning("could not remove %s after copying it (%s); delete it by hand", parked, error)


def claim_all(ctx: Context, folders: list[Path], heartbeat: Heartbeat = _no_heartbeat
              ) -> list[int | None]:
    """Claim settled folders: for each, its job id, or None if it could not be taken (it stays
    in the inbox, and the watcher offers it again after its next rescan). A folder that a copy
    from another filesystem can never take (lorad.inbox.shape) is refused: its job id is given,
    and that job is already rejected.

    heartbeat() is called between folders and, when a folder is copied from another
    filesystem, between its files: the daemon passes its systemd watchdog ping, so that a long
    claim never looks like a hung daemon.

    Each step is taken for all the folders before the next: the 'claiming' rows (one durable
    commit), the moves, the directory syncs, the rows queued (one commit). Every folder still
    goes through the steps in order, which is all that recovery needs, and a burst of folders
    costs one round of syncs instead of one per folder.
    """
    if not folders:
        return []
    job_ids = _claiming_rows(ctx, folders)
    taken: list[tuple[int, JobPaths]] = []
    refused: set[int] = set()
    for folder, job_id in zip(folders, job_ids, strict=True):
        heartbeat()
        paths = JobPaths(ctx.settings.job_dir(job_id), None)
        moved = _move_in(ctx, folder, paths, job_id, heartbeat)
        if moved is True:
            taken.append((job_id, paths))
        elif moved is None:
            refused.add(job_id)
    _sync_dirs([paths.root for _, paths in taken] + sorted({f.parent for f in folders}))
    _finish_claims(ctx, taken)
    done = {job_id for job_id, _ in taken} | refused
    return [job_id if job_id in done else None for job_id in job_ids]


def _move_in(ctx: Context, folder: Path, paths: JobPaths, job_id: int,
             heartbeat: Heartbeat) -> bool | None:
    """Move one claimed folder into its job's work folder (True); undo the claim if it cannot
    be now (False), refuse it if it never can be (None)."""
    ours = False  # whether paths.root is the folder this claim made
    try:
        _set_aside_stale(paths.root)
        paths.root.mkdir(parents=True)
        ours = True
        _take(folder, paths, job_id, heartbeat)
    except FolderTooLarge as error:  # never taken: refused now, not tried again forever
        try:
            remove_tree(paths.root)
            refuse_claim(ctx, job_id, folder, parked_path(folder, job_id), str(error))
        except OSError as why:  # the job is rejected: recover_rejections finishes at the start
            log.error("refused %s (%s), but could not move it (%s); lorad tries again at its "
                      "next start", folder, error, why)
        return None
    except OSError as error:
        if ours and paths.source.exists():
            # The folder did move (a later step failed): the job has it, so keep the job.
            for_job(job_id).warning("took %s, but then: %s", folder, error)
            _remove_parked(parked_path(folder, job_id))
            return True
        _undo_claim(ctx, job_id, folder, paths.root if ours else None)
        reason = f"{error.where}; free some space there" if isinstance(error, DiskFull) else error
        log.warning("could not take %s from the inbox (%s); it stays there and is tried again",
                    folder, reason)
        return False
    return True


def _claiming_rows(ctx: Context, folders: list[Path]) -> list[int]:
    """The 'claiming' rows, committed durably: the store runs with synchronous=NORMAL, whose last
    commits a power cut may undo, and the moves that follow must never outlive these rows."""
    store = ctx.store
    store.conn.execute("PRAGMA synchronous=FULL")
    try:
        with store.transaction():
            return [store.create_job(folder.name, state="claiming", stage="prepare",
                                     inbox_path=str(folder)) for folder in folders]
    finally:
        store.conn.execute("PRAGMA synchronous=NORMAL")


def _set_aside_stale(root: Path) -> None:
    """A work folder already there for a new job id is a leftover (of a job whose row was lost
    while its id was the highest): never claim into it; keep it, renamed, for a person to see."""
    if root.exists() or root.is_symlink():
        stale = unique_path(root.with_name(root.name + ".orphaned"))
        os.rename(root, stale)
        log.warning("%s was left over from an earlier job; moved it to %s", root, stale)


def _sync_dirs(folders: list[Path]) -> None:
    """Make the moves durable before the jobs are queued (one sync per folder, not per move)."""
    for folder in folders:
        try:
            fsync_dir(folder)
        except OSError as error:  # the moves are done; a power cut could still undo them
            log.warning("could not sync %s (%s)", folder, error)


def _finish_claims(ctx: Context, taken: list[tuple[int, JobPaths]]) -> None:
    """Queue the claimed jobs whose folders have arrived. A job cancelled while its folder was
    moving (`lorad cancel` accepts a 'claiming' job) stays cancelled: it records where its
    folder now is, and the folder is kept there."""
    if not taken:
        return
    store = ctx.store
    with store.transaction():  # BEGIN IMMEDIATE: no cancel can slip between reading and writing
        for job_id, paths in taken:
            where = {"source_dir": str(paths.source), "work_dir": str(paths.root)}
            if store.get(job_id).state == "claiming":
                store.update(job_id, state="queued", **where)
                store.event(job_id, f"claimed from the inbox into {paths.source}")
            else:
                store.update(job_id, **where)
                store.event(job_id, f"cancelled while it was being claimed; the folder is kept "
                                    f"in {paths.source}")
                for_job(job_id).info("cancelled while it was being claimed; its folder is kept "
                                     "in %s", paths.source)


def _undo_claim(ctx: Context, job_id: int, folder: Path, root: Path | None) -> None:
    """Put the folder back where it was dropped and remove the claim's work folder (see
    _put_back), then forget the job."""
    _put_back(folder, job_id, root)
    ctx.store.delete_job(job_id)


def _put_back(folder: Path, job_id: int, root: Path | None) -> None:
    """Put the folder back where it was dropped (if it was parked) and remove the job's work
    folder (root, when it is the claim's own)."""
    parked = parked_path(folder, job_id)
    if parked.exists() or parked.is_symlink():
        back = unique_path(folder)  # the name may have been taken by a new drop meanwhile
        os.rename(parked, back)
        fsync_dir(back.parent)
    if root is not None:
        with contextlib.suppress(OSError):
            remove_tree(root)


def _interrupted_claims(ctx: Context) -> list[Job]:
    """Claims a crash interrupted: 'claiming' rows, and rows cancelled during their claim whose
    folder was never recorded (only a claim leaves a job with an inbox path but no work folder)."""
    cancelled = [job for job in ctx.store.jobs(("cancelled",))
                 if job.inbox_path and job.work_dir is None and job.source_dir is None]
    return ctx.store.jobs(("claiming",)) + cancelled


def recover_claims(ctx: Context) -> None:
    """Finish or undo every claim that a crash interrupted.

    The job's source folder exists only once the whole folder is there (a rename of the folder
    itself or of its verified copy), so it decides: there, the claim is finished; not there, the
    claim is undone. A folder found in the inbox under the dropped name is never touched: it is
    either the original (claim undone) or a new drop (a new job later).

    A job cancelled during its claim keeps its row either way (a person asked for it by its id):
    finished, it records its folder in the work area; undone, its folder is back in the inbox,
    where the watcher takes it as a new job.
    """
    for job in _interrupted_claims(ctx):
        paths = JobPaths(ctx.settings.job_dir(job.id), None)
        folder = Path(job.inbox_path or ctx.settings.inbox / job.name)
        jlog = for_job(job.id)
        try:
            if paths.source.exists():
                _remove_parked(parked_path(folder, job.id))
                _sync_dirs([paths.root])
                _finish_claims(ctx, [(job.id, paths)])
                jlog.info("finished the interrupted claim of %s", job.name)
            elif job.state == "cancelled":
                _put_back(folder, job.id, paths.root)
                with ctx.store.transaction():  # its work_dir marks the claim as dealt with
                    ctx.store.update(job.id, work_dir=str(paths.root))
                    ctx.store.event(job.id, f"its claim was interrupted; {job.name} is back in "
                                            "the inbox")
                jlog.info("cancelled during an interrupted claim; %s is back in the inbox, where "
                          "it is taken as a new job: remove it if it is not wanted", job.name)
            else:
                _undo_claim(ctx, job.id, folder, paths.root)
                jlog.info("undid the interrupted claim of %s; it is still in the inbox", job.name)
        except OSError as error:  # left as it is, for the next start: the daemon starts anyway
            jlog.error("could not finish or undo the interrupted claim of %s (%s); it is tried "
                       "again at the next start", folder, error)
