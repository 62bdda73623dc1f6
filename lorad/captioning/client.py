"""The daemon's side of captioning: runs `python -m lorad.captioning.blip` and follows its progress.

This module never imports torch or transformers: the model lives in the child process alone,
which exits after the run, so that its RAM and GPU memory are free again before training.
The protocol (request on stdin, JSON lines on stdout) is described in `lorad.captioning.blip`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def build_request(jobs: list[CaptionJob], settings: CaptionSettings) -> dict[str, Any]:
    """The JSON request that `lorad.captioning.blip` reads on stdin."""
    return {
        "model": settings.model,
        "device": settings.device,
        "precision": settings.precision,
        "batch_size": settings.batch_size,
        "generation": {
            "num_beams": settings.num_beams,
            "min_length": settings.min_length,
            "max_length": settings.max_length,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size,
        },
        "remove": list(settings.remove),
        "jobs": [
            {
                "job": job.job_id,
                "prefix": job.prefix,
                "images": [str(path.absolute()) for path in job.images],
            }
            for job in jobs
        ],
    }


def _apply_event(
    event: dict[str, Any],
    outcomes: dict[int, CaptionOutcome],
    on_progress: ProgressCallback | None,
) -> str | None:
    """Record one event; return the error of a fatal event."""
    kind = event.get("event")
    if kind == "loaded":
        logger.info(
            "captioning with %s on %s (%s), loaded in %.1f s",
            event.get("model"), event.get("device"), event.get("dtype"), event.get("seconds", 0),
        )
    elif kind == "progress" and on_progress is not None:
        on_progress(event["job"], event["done"], event["total"])
    elif kind == "job_done":
        outcomes[event["job"]] = CaptionOutcome(event["job"], True, None, event.get("warnings", []))
    elif kind == "job_error":
        outcomes[event["job"]] = CaptionOutcome(event["job"], False, event.get("error"), [])
    elif kind == "fatal":
        return str(event.get("error"))
    return None


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
    fatal = None
    try:
        if on_start is not None:
            on_start(child.process.pid)
        child.send(build_request(pending, settings))
        for event in child.events(should_stop):
            fatal = _apply_event(event, outcomes, on_progress) or fatal
            if on_job_done is not None and event.get("event") in ("job_done", "job_error"):
                on_job_done(outcomes[event["job"]])
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
