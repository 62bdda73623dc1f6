"""Prepare: read lora.toml, check and convert the photos, lay out the dataset, refuse duplicates.

Reads work/<id>/source (never changes it); writes work/<id>/dataset and the report to the outbox.
The conversion runs in a child process (lorad.dataset.child), so the image libraries never load
here.
"""

from __future__ import annotations

from pathlib import Path

from lorad.context import Context
from lorad.dataset.child import PrepareFailed, run_preparer
from lorad.dataset.protocol import PrepareRequest
from lorad.delivery.outbox import take_folder
from lorad.errors import Rejected, StageFailed
from lorad.inbox.shape import FolderTooLarge, check_shape
from lorad.likeness.protocol import faces_installed
from lorad.store import Job
from lorad.subject import SubjectError, load_subject, read_subject_file
from lorad.system import children
from lorad.system.fsutil import atomic_copy


def run(ctx: Context, job: Job) -> None:
    settings, store = ctx.settings, ctx.store
    paths = ctx.paths(job)
    try:
        check_shape(paths.source, job.name)
        subject = load_subject(paths.source, settings, name=job.name)
    except (FolderTooLarge, SubjectError) as error:
        raise Rejected(str(error)) from None
    assert subject.token and subject.model
    store.update(job.id, settings=subject.model_dump(mode="json"), token=subject.token,
                 model=subject.model)
    ctx.log(job).info("preparing %s as token %s for model %s", paths.source, subject.token,
                      subject.model)

    def progress(done: int, total: int) -> None:
        store.set_progress(job.id, done / max(total, 1), f"{done}/{total} images checked")

    req = PrepareRequest(source=paths.source, dest=paths.dataset, token=subject.token,
                         prefix=subject.prefix, repeats=subject.repeats,
                         strict=subject.strict_or(settings.prepare.strict),
                         settings=settings.prepare, ignore=list(settings.watch.ignore),
                         faces=settings.score.enabled and faces_installed())
    try:
        with children.tracked(store, "prepare", [job.id]) as spawn:
            result = run_preparer(req, on_progress=progress, should_stop=ctx.stopping.is_set,
                                  spawn=spawn)
    except PrepareFailed as error:
        raise StageFailed(str(error)) from None
    written = read_subject_file(paths.source)  # what lora.toml itself asks for
    earlier = store.register_content(
        job.id, result.fingerprint, subject.token, subject.model,
        allow_duplicate=subject.allow_duplicate, token_asked=written.token is not None,
        model_asked=written.model is not None,
    )
    if earlier is not None:
        raise Rejected(duplicate_message(earlier))
    for line in result.warnings:
        store.event(job.id, line, level="warning")
    if not result.usable:  # the message holds the first problem; the others follow it
        raise Rejected("\n".join([result.message, *result.problems[1:]]))
    for line in result.problems:
        store.event(job.id, line, level="warning")
    outbox, aside = take_folder(settings.outbox, subject.token, job.id, job.id)
    if aside is not None:
        moved = store.move_outbox(str(outbox), str(aside))
        store.event(job.id, f"{outbox} held the results of job(s) {moved}; moved to {aside}")
    atomic_copy(Path(result.report_path), outbox / "report.json")
    atomic_copy(Path(result.sheet_path), outbox / "dataset.png")
    store.update(job.id, outbox_dir=str(outbox),
                 train={**job.train, "images": result.accepted, "repeats": result.repeats})
    store.event(job.id, result.message)


def duplicate_message(earlier: Job) -> str:
    """Why a set is refused as a duplicate of `earlier`, and what to do about it."""
    said = (f"these photos were already dropped as job {earlier.id} ({earlier.name}, token "
            f"{earlier.token}, model {earlier.model}, now {earlier.state})")
    if earlier.state == "failed":
        said += f"; to go on with that job, run `lorad retry {earlier.id}`"
    elif earlier.state == "done":
        said += f"; its results are in {earlier.outbox_dir or 'the outbox'}"
    else:
        said += f"; it is still being worked on (`lorad show {earlier.id}`)"
    return (said + ". To train them again anyway, add allow_duplicate = true to lora.toml, or "
            "set another token or model there")
