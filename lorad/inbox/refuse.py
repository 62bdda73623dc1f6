"""Refused folders: handed over, whole and unchanged, to failed/<name>/ with an error.txt that
says what was wrong and what to do; a symbolic link out of the inbox is refused as it is found.

A folder is handed over after its job is recorded as rejected, so a crash between the two is
finished at the next start (`recover_rejections`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from lorad.context import Context
from lorad.store import Job
from lorad.system.fsutil import (
    atomic_copy,
    atomic_write_text,
    copy_tree_verified,
    fsync_dir,
    unique_path,
)
from lorad.system.logs import for_job, log
from lorad.system.walk import remove_tree

ERROR_FILE = "error.txt"
REPORT_FILE = "lorad-report.json"  # the work area's report.json, beside error.txt
REFUSED_PREFIX = ".lorad-refused-"  # a refused folder left in the inbox, hidden


def _move_tree(source: Path, target: Path, partial: Path) -> None:
    """One rename on the same filesystem; otherwise copy, verify, rename, then remove."""
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        if partial.exists():
            remove_tree(partial)
        copy_tree_verified(source, partial)
        os.rename(partial, target)
        fsync_dir(target.parent)
        remove_tree(source)
        return
    fsync_dir(target.parent)
    fsync_dir(source.parent)


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
        _move_link(link, failed)
    except OSError as error:
        ctx.store.delete_job(job_id)
        if link.is_symlink():
            log.warning("could not move the link %s to %s (%s); fix what the error names (lorad "
                        "tries again at each rescan), or remove the link", link, failed, error)
        return None
    atomic_write_text(failed.with_name(failed.name + "." + ERROR_FILE), message + "\n")
    ctx.store.update(job_id, options={"failed_path": str(failed)})
    ctx.store.event(job_id, message, level="error")
    for_job(job_id).warning("%s", message)
    return job_id


def _move_link(link: Path, target: Path) -> None:
    """Rename a symbolic link; across filesystems (or systemd's bind mounts), make the same link
    at target and then remove the original."""
    try:
        os.rename(link, target)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    os.symlink(os.readlink(link), target)
    try:
        link.unlink()
    except OSError:
        target.unlink()  # one link, never two: the next rescan tries again
        raise


def failed_target(ctx: Context, job: Job) -> Path:
    return unique_path(ctx.settings.failed_dir / job.name)


def hand_to_failed(ctx: Context, job: Job) -> Path | None:
    """Move a rejected job's subject folder, whole and unchanged, to failed/<name>/, with an
    error.txt and, when the photos were checked, the check's report as lorad-report.json."""
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
    text = f"lorad: job {job.id} could not use this folder.\n\n{job.error}\n\n"
    if paths.report.is_file():  # everything error.txt names is in this folder
        atomic_copy(paths.report, target / REPORT_FILE)
        text += f"{REPORT_FILE}, beside this file, has the check of every file.\n"
    atomic_write_text(note, text + "Fix what is named above, then move the folder back into "
                                   "the inbox.\n")
    return target


def refuse_claim(ctx: Context, job_id: int, folder: Path, parked: Path, message: str) -> None:
    """A folder that a claim from another filesystem can never take (lorad.inbox.shape says
    why): its job is rejected, and the folder, parked in the inbox, is never copied.

    It goes to failed/<name>/ in one rename where failed/ is on the inbox's filesystem, else
    it stays in the inbox as `.lorad-refused-<job id>` (hidden: never taken again); either way
    failed/<name>.error.txt says what was wrong and where the folder is."""
    target = unique_path(ctx.settings.failed_dir / folder.name)
    store = ctx.store
    with store.transaction():
        store.end(job_id, "rejected", message)
        store.event(job_id, message, level="error")
        store.update(job_id, options={"failed_path": str(target), "parked": str(parked)})
    for_job(job_id).warning("refused: %s", message)
    place_refused_claim(ctx, store.get(job_id))


def place_refused_claim(ctx: Context, job: Job) -> None:
    """Move a refused claim's parked folder to failed/ by rename, else aside in the inbox."""
    parked, target = Path(job.options["parked"]), Path(job.options["failed_path"])
    if not parked.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(parked, target)
        where = f"The folder is beside this file: {target.name}/."
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        target = parked.with_name(f"{REFUSED_PREFIX}{job.id}")
        os.rename(parked, target)
        where = (f"failed/ is on another disk than the inbox, so the folder was left in the "
                 f"inbox, hidden, as {target}: move it out of there to fix it.")
    fsync_dir(parked.parent)
    ctx.store.update(job.id, options={"failed_path": str(target)})
    note = ctx.settings.failed_dir / f"{Path(job.options['failed_path']).name}.{ERROR_FILE}"
    atomic_write_text(note, f"lorad: job {job.id} could not take {job.name}.\n\n{job.error}"
                            f"\n\n{where}\n")


def recover_rejections(ctx: Context) -> None:
    """Finish moving rejected folders that a crash left in the work area or parked in the
    inbox."""
    for job in ctx.store.jobs(("rejected",)):
        if job.source_dir and Path(job.source_dir).exists():
            hand_to_failed(ctx, job)
        elif job.options.get("parked"):
            place_refused_claim(ctx, job)
