"""Deliver: the end of a training, into <outbox>/<token>/, one atomic file at a time.

The epochs and their samples are already there (published as they were saved); delivery adds what
the training left last, makes the newest epoch the LoRA (`<token>.safetensors`, unless a person
picked one while it trained), puts copies into the `deliver.copy_to` folders, and adds the log, the
command, the dataset report and the dataset itself.

Each file is written under a hidden temporary name in the same folder and renamed into place, so
the outbox never shows a half-written file. (A whole-folder swap would hide the dataset report that
preparation already put there, and the epochs of earlier trainings of the same subject.) A file
that would replace a different one of the same name first moves the old one to replaced/.
"""

from __future__ import annotations

from lorad.captioning.stage import publish as publish_captions
from lorad.context import Context
from lorad.delivery import manifest
from lorad.delivery.final import make_final
from lorad.delivery.manifest import Manifest
from lorad.delivery.publish import draw_sheets, outbox_of, publish_epochs, put
from lorad.likeness import judge as likeness
from lorad.store import Job
from lorad.system.fsutil import atomic_copy, atomic_write_text


def run(ctx: Context, job: Job) -> None:
    store, paths = ctx.store, ctx.paths(job)
    outbox = outbox_of(ctx, job)
    replaced = outbox / "replaced" / f"by-job-{job.id}"
    store.set_progress(job.id, 0.1, "publishing the last epochs")
    publish_epochs(ctx, job, job.train)
    likeness.score_job(ctx, job, outbox)  # [score]: each new epoch's likeness; never fails here
    how = "newest"
    with manifest.updating(outbox) as m:
        epoch = final_epoch(m, store.get(job.id))
        if epoch is not None:
            how = "picked" if m.final and m.final.epoch == epoch and m.final.how == "picked" \
                else "newest"
            copies = make_final(outbox, m, epoch, how, ctx.settings.deliver.copy_to)
            for copy in copies:
                store.event(job.id, f"epoch {epoch} copied to {copy}")
        m.samples_sheet = draw_sheets(outbox, m)
    likeness.pick_suggested(ctx, store.get(job.id), outbox, person_picked=how == "picked")
    store.set_progress(job.id, 0.6, "copying the log, the command and the dataset")
    log_name = "train.log" if job.kind == "new" else f"train-job{job.id}.log"
    if paths.train_log.exists():
        atomic_copy(paths.train_log, outbox / log_name)
    runs = job.train.get("runs", [])
    if runs:
        atomic_write_text(outbox / "command.txt", "\n".join(runs[-1]["argv"]) + "\n")
    for source, name in ((paths.report, "report.json"), (paths.dataset_sheet, "dataset.png")):
        if source.exists():
            put(source, outbox / name, replaced)
    if paths.training_images.is_dir():
        for image in sorted(paths.training_images.glob("*/*")):
            if image.suffix in (".png", ".txt"):
                put(image, outbox / "dataset" / image.name, replaced / "dataset")
    publish_captions(ctx, job)
    store.set_progress(job.id, 1.0, f"delivered to {outbox}")
    store.event(job.id, f"delivered to {outbox}")


def final_epoch(m: Manifest, job: Job) -> int | None:
    """The epoch that is the LoRA once this job is delivered: one a person picked since the job
    was made (while it trained), else the newest; a job that trained nothing (new captions
    only) leaves it as it was."""
    own = [n for n, entry in m.epochs.items() if entry.job == job.id]
    if not own:
        return m.final.epoch if m.final and m.final.epoch in m.epochs else m.newest()
    picked_meanwhile = (m.final is not None and m.final.how == "picked"
                        and m.final.at >= job.created_at and m.final.epoch in m.epochs)
    return m.final.epoch if picked_meanwhile and m.final else m.newest()
