"""Scoring a job's epochs ([score]) when it is delivered: one face process describes the training
photos and the samples of every epoch not scored yet; each epoch's likeness goes into the outbox
manifest and the job's events, the suggestion into the manifest and the job's `train` record,
and with `[score] auto_pick` the suggested epoch becomes the LoRA.

Scoring never fails a delivery: a failure is a warning in the job's events. Without the faces
extra, or when the training photos hold no single face, it says so once and stays out of the way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorad import actions
from lorad.context import Context
from lorad.delivery import manifest
from lorad.delivery.publish import WHOLE_EPOCH, sample_key
from lorad.likeness.client import LikenessError, describe_faces
from lorad.likeness.protocol import Face, Image, faces_installed
from lorad.likeness.score import Likeness, Suggestion, reference_problem, score_epoch, suggest
from lorad.store import Job
from lorad.system import children

NOT_INSTALLED = ("[score] is on, but the faces extra is not installed, so the epochs are not "
                 "scored: pip install 'lorad[faces]' into lorad's environment")


def score_job(ctx: Context, job: Job, folder: Path) -> Suggestion | None:
    """Score every epoch in `folder` that has samples and no score yet; the suggestion."""
    if not ctx.settings.score.enabled:
        return None
    if not faces_installed():
        _say_once(ctx, job, NOT_INSTALLED, "warning")
        return None
    todo = _unscored(folder)
    if not todo:
        return manifest.read(folder).suggestion
    references = reference_images(ctx, job, folder)
    images = [Image(path=path) for path in references] + [
        Image(path=path) for paths in todo.values() for path in paths]
    try:
        with children.tracked(ctx.store, "likeness", [job.id]) as spawn:
            faces = describe_faces(images, should_stop=ctx.stopping.is_set, spawn=spawn)
    except (LikenessError, OSError) as error:
        ctx.store.event(job.id, f"the epochs' likeness could not be scored: {error}",
                        level="warning")
        return None
    problem = reference_problem([faces[path].faces for path in references])
    if problem:
        _say_once(ctx, job, problem)
        return _record(folder, {}, Suggestion(reason=problem, scored=False), ctx)
    known = [faces[path].descriptor for path in references if faces[path].faces == 1]
    refs = [vector for vector in known if vector is not None]
    scores = {number: score_epoch(refs, [_vector(faces[path]) for path in paths],
                                  ctx.settings.score)
              for number, paths in todo.items()}
    suggestion = _record(folder, scores, None, ctx)
    _tell(ctx, job, scores, suggestion)
    return suggestion


def pick_suggested(ctx: Context, job: Job, folder: Path, person_picked: bool) -> None:
    """With `[score] auto_pick`, make the suggested epoch the LoRA (unless a person picked one
    while the job ran: the person decides)."""
    if not (ctx.settings.score.enabled and ctx.settings.score.auto_pick) or person_picked:
        return
    m = manifest.read(folder)
    suggestion = m.suggestion
    if suggestion is None or suggestion.epoch is None or (
            m.final is not None and m.final.epoch == suggestion.epoch):
        return
    actions.pick(ctx, job, suggestion.epoch)
    ctx.store.event(job.id, f"lorad picked epoch {suggestion.epoch} itself ([score] auto_pick): "
                            f"{suggestion.reason}")


def reference_images(ctx: Context, job: Job, folder: Path) -> list[Path]:
    """The training photos as lorad prepared them (the work folder's, else the outbox's copy)."""
    found = sorted(ctx.paths(job).training_images.glob("*/*.png"))
    return found or sorted((folder / "dataset").glob("*.png"))


def _unscored(folder: Path) -> dict[int, list[Path]]:
    """The samples of each epoch not scored yet: its end-of-epoch samples (its step samples
    where it has none)."""
    todo = {}
    for number, entry in manifest.read(folder).epochs.items():
        if entry.likeness is not None or not entry.samples:
            continue
        keys = {sample: sample_key(Path(sample).name) for sample in entry.samples}
        whole = [s for s, key in keys.items() if key is not None and key[1] == WHOLE_EPOCH]
        todo[number] = [folder / sample for sample in sorted(whole or entry.samples)]
    return todo


def _vector(face: Face) -> list[float] | None:
    return face.descriptor if face.faces else None


def _record(folder: Path, scores: dict[int, Likeness], given: Suggestion | None,
            ctx: Context) -> Suggestion:
    """The scores into the manifest, and the suggestion over all of its scored epochs."""
    with manifest.updating(folder) as m:
        for number, likeness in scores.items():
            if number in m.epochs:
                m.epochs[number].likeness = likeness
        m.suggestion = given or suggest(
            {n: e.likeness for n, e in m.epochs.items() if e.likeness is not None},
            ctx.settings.score)
        return m.suggestion


def _tell(ctx: Context, job: Job, scores: dict[int, Likeness], suggestion: Suggestion) -> None:
    """An event per epoch scored and one for the suggestion; both into the job's train record."""
    store = ctx.store
    for number, likeness in sorted(scores.items()):
        spread = "" if likeness.spread is None else f" (spread {likeness.spread:.2f})"
        store.event(job.id, f"epoch {number}: {likeness.label()}{spread}",
                    data={"likeness": {"epoch": number, **likeness.model_dump()}})
    store.event(job.id, f"likeness: {suggestion.reason}",
                data={"suggestion": suggestion.model_dump()})
    with store.transaction():
        train = store.get(job.id).train
        record: dict[str, Any] = dict(train.get("likeness") or {})
        record["epochs"] = {**record.get("epochs", {}),
                            **{str(n): s.model_dump() for n, s in scores.items()}}
        record["suggestion"] = suggestion.model_dump()
        store.update(job.id, train={**train, "likeness": record})


def _say_once(ctx: Context, job: Job, message: str, level: str = "info") -> None:
    """An event the job gets once, however often it is delivered."""
    with ctx.store.transaction():
        train = ctx.store.get(job.id).train
        record = dict(train.get("likeness") or {})
        if record.get("said") == message:
            return
        record["said"] = message
        ctx.store.update(job.id, train={**train, "likeness": record})
        ctx.store.event(job.id, message, level=level)
