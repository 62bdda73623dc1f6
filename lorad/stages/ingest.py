"""Claiming a settled inbox folder as a job, and handing refused folders over to failed/.

Claiming is crash-safe: the job row is written as 'claiming' before the folder moves, and the
start-up recovery finishes or undoes any claim a crash interrupted. After recovery a folder is
either still in the inbox with no job, or in the job's work folder with its job: never both, never
neither.

On one filesystem the move is one rename. Across filesystems the folder is first renamed aside to
a hidden name in the inbox (`.lorad-claim-<job id>`, which the watcher skips, and which frees the
name for a new drop), then copied, verified, renamed into place, and only then removed.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from lorad.context import Context
from lorad.fsutil import DiskFull, atomic_write_text, copy_tree_verified, fsync_dir, unique_path
from lorad.logs import log
from lorad.store import Job
from lorad.workspace import JobPaths

ERROR_FILE = "error.txt"
CLAIM_PREFIX = ".lorad-claim-"


def _move_tree(source: Path, target: Path, partial: Path) -> None:
    """One rename on the same filesystem; otherwise copy, verify, rename, then remove."""
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        if partial.exists():
            shutil.rmtree(partial)
        copy_tree_verified(source, partial)
        os.rename(partial, target)
        fsync_dir(target.parent)
        _remove_tree(source)
        return
    fsync_dir(target.parent)
    fsync_dir(source.parent)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


def parked_path(folder: Path, job_id: int) -> Path:
    """Where a cross-filesystem claim keeps the inbox folder while it copies it."""
    return folder.with_name(f"{CLAIM_PREFIX}{job_id}")


def _take(folder: Path, paths: JobPaths, job_id: int) -> None:
    """Move folder to paths.source (see the module's docstring). On one filesystem the caller
    syncs the folders afterwards; across filesystems every step is synced here."""
    try:
        os.rename(folder, paths.source)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    parked = parked_path(folder, job_id)
    os.rename(folder, parked)
    fsync_dir(folder.parent)
    if paths.source_partial.exists():
        shutil.rmtree(paths.source_partial)
    copy_tree_verified(parked, paths.source_partial)
    os.rename(paths.source_partial, paths.source)
    fsync_dir(paths.root)
    _remove_parked(parked)


def _remove_parked(parked: Path) -> None:
    """Remove the inbox copy of a folder whose verified copy is in the work area."""
    if not (parked.exists() or parked.is_symlink()):
        return
    try:
        _remove_tree(parked)
    except OSError as error:  # the job has its copy; the hidden leftover is never taken again
        log.warning("could not remove %s after copying it (%s); delete it by hand", parked, error)


def claim(ctx: Context, folder: Path) -> int | None:
    """Move a settled folder out of the inbox into a new job's work folder; the job id, or None."""
    return claim_all(ctx, [folder])[0]


def claim_all(ctx: Context, folders: list[Path]) -> list[int | None]:
    """Claim settled folders: for each, its job id, or None if it could not be taken (it stays
    in the inbox, and the watcher offers it again after its next rescan).

    Each step is taken for all the folders before the next: the 'claiming' rows (one durable
    commit), the moves, the directory syncs, the rows queued (one commit). Every folder still
    goes through the steps in order, which is all that recovery needs, and a burst of folders
    costs one round of syncs instead of one per folder.
    """
    if not folders:
        return []
    job_ids = _claiming_rows(ctx, folders)
    taken: list[tuple[int, JobPaths]] = []
    for folder, job_id in zip(folders, job_ids, strict=True):
        paths = JobPaths(ctx.settings.job_dir(job_id), None)
        if _move_in(ctx, folder, paths, job_id):
            taken.append((job_id, paths))
    _sync_dirs([paths.root for _, paths in taken] + sorted({f.parent for f in folders}))
    _finish_claims(ctx, taken)
    done = {job_id for job_id, _ in taken}
    return [job_id if job_id in done else None for job_id in job_ids]


def _move_in(ctx: Context, folder: Path, paths: JobPaths, job_id: int) -> bool:
    """Move one claimed folder into its job's work folder; undo the claim if it cannot be."""
    ours = False  # whether paths.root is the folder this claim made
    try:
        _set_aside_stale(paths.root)
        paths.root.mkdir(parents=True)
        ours = True
        _take(folder, paths, job_id)
    except OSError as error:
        if ours and paths.source.exists():
            # The folder did move (a later step failed): the job has it, so keep the job.
            log.warning("job %d: took %s, but then: %s", job_id, folder, error)
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
    if not taken:
        return
    with ctx.store.transaction():
        for job_id, paths in taken:
            ctx.store.update(job_id, state="queued", source_dir=str(paths.source),
                             work_dir=str(paths.root))
            ctx.store.event(job_id, f"claimed from the inbox into {paths.source}")


def _undo_claim(ctx: Context, job_id: int, folder: Path, root: Path | None) -> None:
    """Put the folder back where it was dropped (if it was parked), remove the job's work
    folder (root, when it is the claim's own), then forget the job."""
    parked = parked_path(folder, job_id)
    if parked.exists() or parked.is_symlink():
        back = unique_path(folder)  # the name may have been taken by a new drop meanwhile
        os.rename(parked, back)
        fsync_dir(back.parent)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
    ctx.store.delete_job(job_id)


def recover_claims(ctx: Context) -> None:
    """Finish or undo every claim that a crash interrupted.

    The job's source folder exists only once the whole folder is there (a rename of the folder
    itself or of its verified copy), so it decides: there, the claim is finished; not there, the
    claim is undone. A folder found in the inbox under the dropped name is never touched: it is
    either the original (claim undone) or a new drop (a new job later).
    """
    for job in ctx.store.jobs(("claiming",)):
        paths = JobPaths(ctx.settings.job_dir(job.id), None)
        folder = Path(job.inbox_path or ctx.settings.inbox / job.name)
        try:
            if paths.source.exists():
                _remove_parked(parked_path(folder, job.id))
                _sync_dirs([paths.root])
                _finish_claims(ctx, [(job.id, paths)])
                log.info("finished the interrupted claim of %s as job %d", job.name, job.id)
            else:
                _undo_claim(ctx, job.id, folder, paths.root)
                log.info("undid the interrupted claim of %s; it is still in the inbox", job.name)
        except OSError as error:  # left as it is, for the next start: the daemon starts anyway
            log.error("job %d: could not finish or undo the interrupted claim of %s (%s); "
                      "it is tried again at the next start", job.id, folder, error)


def reject_link(ctx: Context, link: Path, target: Path) -> int | None:
    """A symlinked subject folder pointing out of the inbox: record it and move the link aside.

    The job id, or None when the link could not be moved (it is gone, or failed/ cannot be
    written): then nothing is recorded, and the next rescan tries again.
    """
    message = (f"{link.name} is a symbolic link to {target}, outside the inbox; lorad only takes "
               "folders that are really in the inbox: copy the photos in instead")
    job_id = ctx.store.create_job(link.name, state="rejected", stage="prepare",
                                  inbox_path=str(link), error=message)
    failed = unique_path(ctx.settings.failed_dir / link.name)
    try:
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.rename(link, failed)
    except OSError as error:
        ctx.store.delete_job(job_id)
        if link.is_symlink():
            log.warning("could not move the link %s to %s (%s)", link, failed, error)
        return None
    atomic_write_text(failed.with_name(failed.name + "." + ERROR_FILE), message + "\n")
    ctx.store.update(job_id, options={"failed_path": str(failed)})
    ctx.store.event(job_id, message, level="error")
    log.warning("job %d: %s", job_id, message)
    return job_id


def failed_target(ctx: Context, job: Job) -> Path:
    return unique_path(ctx.settings.failed_dir / job.name)


def hand_to_failed(ctx: Context, job: Job) -> Path | None:
    """Move a rejected job's subject folder, whole and unchanged, to failed/<name>/ + error.txt."""
    paths = ctx.paths(job)
    target = Path(job.options.get("failed_path") or failed_target(ctx, job))
    if not job.options.get("failed_path"):
        ctx.store.update(job.id, options={**job.options, "failed_path": str(target)})
    if paths.source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _move_tree(paths.source, target, target.with_name("." + target.name + ".partial"))
    if not target.is_dir():
        return None
    note = target / ERROR_FILE
    if note.exists() and not note.read_text(errors="replace").startswith("lorad:"):
        note = target / ("lorad-" + ERROR_FILE)
    atomic_write_text(note, f"lorad: job {job.id} could not use this folder.\n\n{job.error}\n\n"
                            "Fix what is named above, then move the folder back into the inbox.\n")
    return target


def recover_rejections(ctx: Context) -> None:
    """Finish moving rejected folders that a crash left in the work area."""
    for job in ctx.store.jobs(("rejected",)):
        if job.source_dir and Path(job.source_dir).exists():
            hand_to_failed(ctx, job)
