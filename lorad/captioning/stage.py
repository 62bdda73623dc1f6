"""Caption: a .txt beside every training image, from BLIP (in a child process) or the user.

Images with a caption supplied by the user keep it (prepare wrote it). The others are captioned by
BLIP, all waiting jobs in one child process that loads the model once; with captioning switched
off they get the prefix alone. The captions are published to the outbox for a person to read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from lorad.captioning.client import (
    CaptionCancelled,
    CaptionError,
    CaptionJob,
    CaptionOutcome,
    run_captioner,
)
from lorad.captioning.text import caption_path, prefix_only, write_caption
from lorad.context import Context
from lorad.errors import Cancelled, StageFailed
from lorad.store import Job
from lorad.subject import subject_of
from lorad.system import children
from lorad.system.fsutil import atomic_write_text


def training_images(ctx: Context, job: Job) -> list[tuple[Path, bool]]:
    """(image, has a user caption) for every image of the prepared dataset."""
    paths = ctx.paths(job)
    manifest = json.loads(paths.manifest.read_text())
    folder = paths.dataset / manifest["train_dir"]
    return [(folder / item["name"], bool(item["user_caption"])) for item in manifest["images"]]


def uses_blip(ctx: Context, job: Job) -> bool:
    return subject_of(job).captions_or(ctx.settings.caption.enabled)


def request(ctx: Context, job: Job) -> CaptionJob:
    images = [image for image, user in training_images(ctx, job) if not user]
    return CaptionJob(job_id=job.id, prefix=subject_of(job).prefix, images=images)


def without_blip(ctx: Context, job: Job) -> None:
    """Captioning switched off: the prefix alone for every image without a user caption."""
    text = prefix_only(subject_of(job).prefix)
    for image, user in training_images(ctx, job):
        if not user:
            write_caption(caption_path(image), text)
    ctx.store.event(job.id, "captioning is off: images without a caption of their own get "
                            f"{text!r}")
    publish(ctx, job)


def with_blip(ctx: Context, jobs: list[Job], env: dict[str, str],
              should_stop: Callable[[], bool],
              on_done: Callable[[Job, Exception | None], None]) -> None:
    """Caption several jobs in one BLIP process (the model loads once). Each job is handed to
    on_done with None or the exception it ended with, as soon as its own captions are written."""
    store = ctx.store
    by_id = {job.id: job for job in jobs}
    requests = [request(ctx, job) for job in jobs]
    totals = {r.job_id: len(r.images) for r in requests}
    finished: set[int] = set()

    def progress(job_id: int, done: int, total: int) -> None:
        store.set_progress(job_id, done / max(total, 1), f"{done}/{total} images captioned")

    def job_done(outcome: CaptionOutcome) -> None:
        job = by_id[outcome.job_id]
        finished.add(job.id)
        if not outcome.ok:
            on_done(job, StageFailed(f"captioning failed: {outcome.error}"))
            return
        for warning in outcome.warnings:
            store.event(job.id, warning, level="warning")
        store.event(job.id, f"captioned {totals[job.id]} images with {ctx.settings.caption.model}")
        publish(ctx, job)
        on_done(job, None)

    for job_id, total in totals.items():  # until the first caption: the model is loading
        store.set_progress(job_id, 0.0, f"loading the captioning model (0/{total} images "
                                        "captioned)")
    error: Exception | None = None
    try:
        with children.tracked(store, "caption", list(by_id)) as spawn:
            outcomes = run_captioner(requests, ctx.settings.caption, env=env,
                                     on_progress=progress, should_stop=should_stop,
                                     on_job_done=job_done, spawn=spawn)
    except CaptionCancelled:
        error = Cancelled("captioning stopped")
    except CaptionError as caught:
        error = StageFailed(str(caught))
    else:  # jobs with nothing to caption are never started in the child
        for job_id, outcome in outcomes.items():
            if job_id not in finished:
                job_done(outcome)
    for job in jobs:
        if job.id not in finished:
            on_done(job, error or StageFailed("the captioning process gave no result"))


def publish(ctx: Context, job: Job) -> None:
    """captions.txt in the outbox: every image's caption, one line each, to read and correct."""
    job = ctx.store.get(job.id)
    if not job.outbox_dir:
        return
    lines = []
    for image, user in training_images(ctx, job):
        caption_file = image.with_suffix(".txt")
        text = caption_file.read_text(encoding="utf-8").strip() if caption_file.exists() else ""
        lines.append(f"{image.name}{' (yours)' if user else ''}: {text}")
    atomic_write_text(Path(job.outbox_dir) / "captions.txt", "\n".join(lines) + "\n")
