"""How a stage ended, recorded: the job's next stage, or its final state with the reason, its
event and its notification, all in one transaction.

`conclude` is a function of (context, job, stage, error): the daemon calls it after every stage,
and tests can call it without a daemon. Retry hints and notifications live here, beside the
decision, not inside the stages.
"""

from __future__ import annotations

from pathlib import Path

from lorad.context import Context
from lorad.delivery import messages, notify
from lorad.errors import Cancelled, Rejected, StageFailed
from lorad.inbox import refuse
from lorad.store import RUNNING, Job
from lorad.system.fsutil import FULL_DISK_TEXT, DiskFull
from lorad.system.logs import for_job
from lorad.training.stage import Interrupted

PIPELINE = ("prepare", "caption", "train", "deliver")


def next_stage(job: Job, stage: str) -> str:
    if job.options.get("recaption_only") and stage == "caption":
        return "deliver"
    index = PIPELINE.index(stage)
    return PIPELINE[index + 1] if index + 1 < len(PIPELINE) else "done"


def with_retry_hint(message: str, job_id: int) -> str:
    """A failure's message with the job's own retry command; a full disk always says so."""
    message = message.replace("lorad retry JOB", f"lorad retry {job_id}")
    if FULL_DISK_TEXT.search(message) and "free some space" not in message:
        message += f"; the disk is full: free some space on it, then run: lorad retry {job_id}"
    return message


def conclude(ctx: Context, job: Job, stage: str, error: Exception | None) -> None:
    """Record how `stage` of `job` ended (`error` is None when it succeeded). Each outcome is one
    transaction: the job's new state, its event and its notification are all recorded or none
    is, so a crash never loses a notification, nor sends one for a state that was not recorded.
    The sender is woken once the rows are committed."""
    if isinstance(error, Interrupted) or (
        error is not None and ctx.stopping.is_set() and not isinstance(error, Rejected)
    ):
        _stopped(ctx, job, stage)
    elif error is None and ctx.store.cancel_requested(job.id):
        _cancelled(ctx, job, stage, Cancelled("cancelled by request"))
    elif error is None:
        _succeeded(ctx, job, stage)
    elif isinstance(error, Rejected):
        _rejected(ctx, job, error)
    elif isinstance(error, Cancelled):
        _cancelled(ctx, job, stage, error)
    else:
        _failed(ctx, job, stage, error)


def announce(ctx: Context, job: Job, event: str) -> None:
    """Queue the event's notification outside any transaction, and wake the sender."""
    if queue_notification(ctx, job, event):
        ctx.notify_wake.set()


def _stopped(ctx: Context, job: Job, stage: str) -> None:
    store = ctx.store
    with store.transaction():
        store.requeue(job.id, stage, (RUNNING[stage],))
        store.event(job.id, f"the daemon stopped during {stage}; it continues at the next start")
    for_job(job.id, job.token).info("stopped during %s; it continues there at the next start",
                                    stage)


def _succeeded(ctx: Context, job: Job, stage: str) -> None:
    store = ctx.store
    following = next_stage(job, stage)
    with store.transaction():
        store.finish_stage(job.id, stage, following)
        if stage == "prepare":
            queue_notification(ctx, store.get(job.id), "accepted")
        if following == "done" and job.options.get("recaption_only"):
            # new captions only: no "LoRA ready"
            options = {k: v for k, v in job.options.items() if k != "recaption_only"}
            store.update(job.id, options=options)
        elif following == "done":
            queue_notification(ctx, store.get(job.id), "done")
    if following == "done":
        for_job(job.id, job.token).info("done: %s", job.outbox_dir)
    ctx.notify_wake.set()


def _rejected(ctx: Context, job: Job, error: Rejected) -> None:
    store = ctx.store
    for_job(job.id, job.token).warning("refused: %s", error)
    with store.transaction():
        store.end(job.id, "rejected", str(error))
        store.event(job.id, str(error), level="error")
        if not job.options.get("failed_path"):  # where the folder goes, said first
            store.update(job.id, options={
                **job.options, "failed_path": str(refuse.failed_target(ctx, job))})
        queue_notification(ctx, store.get(job.id), "rejected")
    ctx.notify_wake.set()
    refuse.hand_to_failed(ctx, store.get(job.id))  # or at the next start, after a crash


def _cancelled(ctx: Context, job: Job, stage: str, error: Cancelled) -> None:
    store = ctx.store
    for_job(job.id, job.token).info("cancelled during %s", stage)
    with store.transaction():
        store.end(job.id, "cancelled", str(error))
        store.event(job.id, f"cancelled during {stage}")


def _failed(ctx: Context, job: Job, stage: str, error: Exception) -> None:
    store, jlog = ctx.store, for_job(job.id, job.token)
    if isinstance(error, StageFailed | DiskFull):
        message = str(error)
    else:
        jlog.error("internal error in the %s stage", stage, exc_info=error)
        message = (f"internal error in the {stage} stage: {error!r}; the daemon's log has the "
                   "details")
    message = with_retry_hint(message, job.id)
    jlog.error("failed: %s", message)
    with store.transaction():
        store.end(job.id, "failed", message, stage=stage)
        store.event(job.id, message, level="error")
        queue_notification(ctx, store.get(job.id), "failed")
    ctx.notify_wake.set()


def queue_notification(ctx: Context, job: Job, event: str) -> bool:
    """Add the event's notification to the store's queue. The sender is not woken here: inside a
    transaction, it would look before the row is committed."""
    settings = ctx.settings
    attach = None
    if event == "done":
        title, body = messages.done(job, settings)
        sheet = Path(job.outbox_dir or "") / "samples.png"
        attach = sheet if sheet.is_file() else None
    elif event == "failed":
        title, body = messages.failed(job, ctx.store, settings)
    elif event == "rejected":
        title, body = messages.rejected(job, settings)
    else:
        title, body = messages.accepted(job)
    return notify.enqueue(ctx.store, settings.notify, job, event, title, body,
                          attach) is not None
