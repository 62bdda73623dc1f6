"""Claiming a settled inbox folder as a job, and handing refused folders over to failed/.

Claiming is crash-safe: the job row is written as 'claiming' before the folder moves, and the
start-up recovery finishes or undoes any claim a crash interrupted. After recovery a folder is
either still in the inbox with no job, or in the job's work folder with its job: never both, never
neither.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lorad.context import Context
from lorad.fsutil import atomic_write_text, copy_tree_verified, fsync_dir, unique_path
from lorad.logs import log
from lorad.store import Job
from lorad.workspace import JobPaths

ERROR_FILE = "error.txt"


def _move_tree(source: Path, target: Path, partial: Path) -> None:
    """One rename on the same filesystem; otherwise copy, verify, rename, then remove."""
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno != 18:  # EXDEV: another filesystem
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


def claim(ctx: Context, folder: Path) -> int | None:
    """Move a settled folder out of the inbox into a new job's work folder; the job id, or None."""
    store = ctx.store
    with store.transaction():
        job_id = store.create_job(folder.name, state="claiming", stage="prepare",
                                  inbox_path=str(folder))
    paths = JobPaths(ctx.settings.job_dir(job_id), None)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        _move_tree(folder, paths.source, paths.source_partial)
    except OSError as error:
        shutil.rmtree(paths.root, ignore_errors=True)
        store.delete_job(job_id)
        log.warning("could not take %s from the inbox (%s); will try again", folder, error)
        return None
    _finish_claim(ctx, job_id, paths)
    return job_id


def _finish_claim(ctx: Context, job_id: int, paths: JobPaths) -> None:
    with ctx.store.transaction():
        ctx.store.update(job_id, state="queued", source_dir=str(paths.source),
                         work_dir=str(paths.root))
        ctx.store.event(job_id, f"claimed from the inbox into {paths.source}")


def recover_claims(ctx: Context) -> None:
    """Finish or undo every claim that a crash interrupted."""
    for job in ctx.store.jobs(("claiming",)):
        paths = JobPaths(ctx.settings.job_dir(job.id), None)
        inbox_copy = Path(job.inbox_path or "")
        if paths.source.exists():
            if job.inbox_path and (inbox_copy.exists() or inbox_copy.is_symlink()):
                # A cross-filesystem claim died while removing the verified inbox copy.
                _remove_tree(inbox_copy)
            _finish_claim(ctx, job.id, paths)
            log.info("finished the interrupted claim of %s as job %d", job.name, job.id)
        else:
            shutil.rmtree(paths.root, ignore_errors=True)
            ctx.store.delete_job(job.id)
            log.info("undid the interrupted claim of %s; it is still in the inbox", job.name)


def reject_link(ctx: Context, link: Path, target: Path) -> int:
    """A symlinked subject folder pointing out of the inbox: record it and move the link aside."""
    message = (f"{link.name} is a symbolic link to {target}, outside the inbox; lorad only takes "
               "folders that are really in the inbox: copy the photos in instead")
    job_id = ctx.store.create_job(link.name, state="rejected", stage="prepare",
                                  inbox_path=str(link), error=message)
    failed = unique_path(ctx.settings.failed_dir / link.name)
    failed.parent.mkdir(parents=True, exist_ok=True)
    os.rename(link, failed)
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
