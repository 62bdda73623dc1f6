"""The daemon's side of captioning: runs `python -m lorad.captioning.blip` and follows its progress.

This module never imports torch or transformers: the model lives in the child process alone,
which exits after the run, so that its RAM and GPU memory are free again before training.
The protocol (a request on stdin, JSON lines on stdout) is `lorad.captioning.protocol`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lorad.captioning.protocol import (
    Event,
    Fatal,
    Generation,
    Job,
    JobDone,
    JobError,
    Loaded,
    Progress,
    Request,
    parse_event,
)
from lorad.captioning.text import caption_path, compile_phrases
from lorad.settings import CaptionSettings
from lorad.system.jsonchild import ChildStopped, JsonChild, describe_exit

logger = logging.getLogger(__name__)


ProgressCallback = Callable[[int, int, int], None]


@dataclass
class CaptionJob:
    job_id: int
    prefix: str
    images: list[Path]  # PNGs to caption (user-captioned ones are not passed)


@dataclass
class CaptionOutcome:
    job_id: int
    ok: bool
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


class CaptionError(Exception):
    """The whole run failed (the model could not load, the child crashed); names the model.

    `outcomes` holds what the child reported for the jobs it finished before the failure.
    """

    def __init__(self, message: str, outcomes: dict[int, CaptionOutcome] | None = None):
        super().__init__(message)
        self.outcomes = outcomes or {}


class CaptionCancelled(Exception):
    """should_stop() turned True: the child was terminated (SIGTERM, then SIGKILL)."""


def build_request(jobs: list[CaptionJob], settings: CaptionSettings) -> Request:
    """The request that `lorad.captioning.blip` reads on stdin."""
    return Request(
        model=settings.model,
        device=settings.device,
        precision=settings.precision,
        batch_size=settings.batch_size,
        generation=Generation(
            num_beams=settings.num_beams,
            min_length=settings.min_length,
            max_length=settings.max_length,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
        ),
        remove=list(settings.remove),
        jobs=[
            Job(job_id=job.job_id, prefix=job.prefix,
                images=[path.absolute() for path in job.images])
            for job in jobs
        ],
    )


def _apply_event(
    event: Event,
    outcomes: dict[int, CaptionOutcome],
    on_progress: ProgressCallback | None,
) -> str | None:
    """Record one event; return the error of a fatal event."""
    if isinstance(event, Loaded):
        logger.info(
            "captioning with %s on %s (%s), loaded in %.1f s",
            event.model, event.device, event.dtype, event.seconds,
        )
    elif isinstance(event, Progress) and on_progress is not None:
        on_progress(event.job, event.done, event.total)
    elif isinstance(event, JobDone):
        outcomes[event.job] = CaptionOutcome(event.job, True, None, event.warnings)
    elif isinstance(event, JobError):
        outcomes[event.job] = CaptionOutcome(event.job, False, event.error, [])
    elif isinstance(event, Fatal):
        return event.error
    return None


def _follow(
    child: JsonChild,
    settings: CaptionSettings,
    outcomes: dict[int, CaptionOutcome],
    should_stop: Callable[[], bool] | None,
    on_progress: ProgressCallback | None,
    on_job_done: Callable[[CaptionOutcome], None] | None,
) -> str | None:
    """Record the child's events until it closes stdout; return the error of a fatal event."""
    fatal = None
    for data in child.events(should_stop):
        try:
            event = parse_event(data)
        except ValueError as error:
            raise CaptionError(
                f"the captioning process for {settings.model!r} sent an {error}", outcomes
            ) from None
        if event is None:
            continue
        fatal = _apply_event(event, outcomes, on_progress) or fatal
        if on_job_done is not None and isinstance(event, JobDone | JobError):
            on_job_done(outcomes[event.job])
    return fatal


def _check_finished(
    child: JsonChild,
    settings: CaptionSettings,
    pending: list[CaptionJob],
    outcomes: dict[int, CaptionOutcome],
    returncode: int,
) -> None:
    """CaptionError when the child left a job without an outcome (it crashed, say)."""
    missing = [job.job_id for job in pending if job.job_id not in outcomes]
    if missing:
        raise CaptionError(
            f"the captioning process for {settings.model!r} {describe_exit(returncode)} "
            f"before finishing job(s) {', '.join(map(str, missing))}; "
            f"its last output:\n{child.stderr_text()}",
            outcomes,
        )
    if returncode != 0:  # e.g. a crash while exiting: every caption is written all the same
        logger.warning(
            "the captioning process %s after reporting every job", describe_exit(returncode)
        )


def _start(settings: CaptionSettings, env: dict[str, str] | None,
           spawn: Callable[..., subprocess.Popen] | None) -> JsonChild:
    python = settings.python or sys.executable
    try:
        return JsonChild(python, "lorad.captioning.blip", env,
                         **({"spawn": spawn} if spawn else {}))
    except OSError as error:
        raise CaptionError(
            f"cannot start the captioning process for {settings.model!r} with {python!r}: {error} "
            "(check caption.python)"
        ) from error


def run_captioner(
    jobs: list[CaptionJob],
    settings: CaptionSettings,
    *,
    env: dict[str, str] | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_job_done: Callable[[CaptionOutcome], None] | None = None,
    spawn: Callable[..., subprocess.Popen] | None = None,
) -> dict[int, CaptionOutcome]:
    """Caption the images of all `jobs` in one child process (the model is loaded once).

    Returns an outcome for every job: a job whose image cannot be read fails alone. Raises
    CaptionError when the run as a whole fails, CaptionCancelled when should_stop() turns True.
    `env` is the child's whole environment (None: the daemon's own); its CUDA_VISIBLE_DEVICES
    picks the GPU the child sees ("" = the CPU only).
    `on_start` gets the child's pid, which is also its process group, as soon as it runs (to
    record it); the child has exited when run_captioner returns or raises. `on_job_done` gets
    each job's outcome as soon as the child reports it (its captions are written by then), so
    a job can go on to training while the others are still being captioned.
    """
    try:
        compile_phrases(settings.remove)
    except ValueError as error:
        raise CaptionError(str(error)) from None
    outcomes = {job.job_id: CaptionOutcome(job.job_id, True) for job in jobs if not job.images}
    pending = [job for job in jobs if job.images]
    if not pending:
        return outcomes
    child = _start(settings, env, spawn)
    try:
        if on_start is not None:
            on_start(child.process.pid)
        child.send(build_request(pending, settings).model_dump(mode="json"))
        fatal = _follow(child, settings, outcomes, should_stop, on_progress, on_job_done)
    except ChildStopped:
        child.terminate()
        raise CaptionCancelled("captioning was cancelled") from None
    except BaseException:  # cancelled, a callback failed, the daemon is stopping
        child.terminate()
        raise
    finally:
        returncode = child.finish()
    if fatal is not None:
        raise CaptionError(fatal, outcomes)
    _check_finished(child, settings, pending, outcomes, returncode)
    return outcomes


def images_to_caption(folder: Path, skip_existing: bool = True) -> list[Path]:
    """The PNGs of a folder, sorted; with skip_existing, only those without a caption file."""
    images = sorted(
        path for path in folder.iterdir()
        if path.suffix.lower() == ".png" and path.is_file() and not path.name.startswith(".")
    )
    if skip_existing:
        images = [path for path in images if not caption_path(path).exists()]
    return images


def caption_folder(
    folder: Path,
    prefix: str,
    settings: CaptionSettings,
    skip_existing: bool = True,
    *,
    on_progress: ProgressCallback | None = None,
) -> CaptionOutcome:
    """Caption every PNG in `folder` (for `lorad prepare`); CaptionError if the run fails."""
    job = CaptionJob(0, prefix, images_to_caption(folder, skip_existing))
    return run_captioner([job], settings, on_progress=on_progress)[0]
