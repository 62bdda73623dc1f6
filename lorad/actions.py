"""What a person can ask of a job: retry, cancel, recaption, resume for more epochs, pick an epoch.

The command line, the outbox's request files and the web page all act through these functions.
Each is one conditional change in the store (or one atomic copy, for a pick); the daemon notices
it within a second.
"""

from __future__ import annotations

from pathlib import Path

from lorad.context import Context
from lorad.delivery import manifest
from lorad.delivery.final import final_name, make_final
from lorad.delivery.outbox import lineage
from lorad.delivery.publish import draw_sheets
from lorad.errors import RequestError
from lorad.store import FINAL, RUNNING, Job, Store

MAX_EXTRA_EPOCHS = 100


def retry(store: Store, job: Job) -> Job:
    if job.state == "rejected":
        where = job.options.get("failed_path", "failed/")
        raise RequestError(f"job {job.id} was refused for its input ({job.error}); fix the "
                           f"folder in {where} and drop it into the inbox again")
    if job.state not in ("failed", "cancelled"):
        raise RequestError(f"job {job.id} is {job.state}; only failed or cancelled jobs can be "
                           "retried")
    if not store.requeue(job.id, job.stage, ("failed", "cancelled"), attempts=0):
        raise RequestError(f"job {job.id} changed meanwhile; look again with lorad show")
    store.event(job.id, f"retry requested: continues at the {job.stage} stage")
    return store.get(job.id)


def cancel(store: Store, job: Job) -> Job:
    if job.is_final:
        raise RequestError(f"job {job.id} is already {job.state}")
    return store.request_cancel(job.id)


def recaption(store: Store, job: Job) -> Job:
    if job.state in RUNNING.values() or job.state == "claiming":
        raise RequestError(f"job {job.id} is {job.state}; wait until it is done or failed")
    if job.state == "rejected" or job.stage == "prepare":
        raise RequestError(f"job {job.id} has no prepared dataset to caption")
    if job.state == "queued" and job.stage == "caption":
        return job
    options = dict(job.options)
    if job.state == "done":
        options["recaption_only"] = True
    if not store.requeue(job.id, "caption", (job.state,), options=options, attempts=0):
        raise RequestError(f"job {job.id} changed meanwhile; look again with lorad show")
    store.event(job.id, "recaption requested with the current caption settings")
    return store.get(job.id)


def outbox_epochs(job: Job) -> list[int]:
    """The epochs of this job's LoRA in its outbox folder, as its manifest lists them."""
    folder = Path(job.outbox_dir or "")
    return sorted(n for n, entry in manifest.read(folder).epochs.items()
                  if (folder / entry.file).is_file())


def resume(ctx: Context, job: Job, epochs: int, from_epoch: int | None = None) -> Job:
    """Queue a follow-up training of `epochs` more epochs, starting from an epoch of `job`."""
    if job.state != "done":
        raise RequestError(f"job {job.id} is {job.state}; only a finished training can be "
                           "resumed (lorad retry continues a failed one)")
    if not 1 <= epochs <= MAX_EXTRA_EPOCHS:
        raise RequestError(f"epochs must be 1 to {MAX_EXTRA_EPOCHS} (got {epochs})")
    running = [j for j in lineage(ctx, job) if j.state not in FINAL]
    if running:
        raise RequestError(f"job {running[0].id} is still working on this LoRA; wait until it "
                           "is done")
    available = outbox_epochs(job)
    start = from_epoch if from_epoch is not None else (max(available) if available else None)
    if start is None or start not in available:
        have = ", ".join(map(str, available)) or "none"
        raise RequestError(f"epoch {start} of {job.token} is not in {job.outbox_dir} "
                           f"(epochs there: {have})")
    store = ctx.store
    train = {"start_epoch": start, "target": start + epochs, "ladder": list(
        job.train.get("ladder", [])), "adjust": dict(job.train.get("adjust", {})),
        "images": job.train.get("images"), "repeats": job.train.get("repeats")}
    with store.transaction():
        child = store.create_job(
            job.name, state="queued", stage="train", kind="resume", parent_id=job.id,
            token=job.token, model=job.model, settings=job.settings, outbox_dir=job.outbox_dir,
            content_hash=job.content_hash, train=train,
            options={"resume": {"parent": job.id, "from": start, "epochs": epochs}},
        )
        store.update(child, work_dir=str(ctx.settings.job_dir(child)))
        store.event(child, f"follow-up of job {job.id}: epochs {start + 1} to {start + epochs}, "
                           f"starting from epoch {start}")
        store.event(job.id, f"resumed as job {child}: {epochs} more epochs from epoch {start}")
    return store.get(child)


def pick(ctx: Context, job: Job, epoch: int) -> Path:
    """Make epoch `epoch` the LoRA: <token>.safetensors in the outbox and the copy_to folders,
    the manifest's final epoch (picked), and the contact sheet's marked row."""
    outbox = Path(job.outbox_dir or "")
    if epoch not in outbox_epochs(job):
        have = ", ".join(map(str, outbox_epochs(job))) or "none"
        raise RequestError(f"there is no epoch {epoch} of {job.token} in {outbox} "
                           f"(epochs there: {have})")
    with manifest.updating(outbox) as m:
        copies = make_final(outbox, m, epoch, "picked", ctx.settings.deliver.copy_to)
        m.samples_sheet = draw_sheets(outbox, m)
    final = outbox / final_name(job.token or "")
    also = "".join(f"; copied to {copy}" for copy in copies)
    ctx.store.event(job.id, f"epoch {epoch} picked as {final}{also}")
    return final
