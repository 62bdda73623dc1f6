"""After training: resume an undertrained LoRA for more epochs, or pick an earlier epoch.

Both work as a command (`lorad resume`, `lorad pick`) or as a small file a person drops into the
outbox folder (`resume.toml`, `pick.toml`), which the daemon acts on and renames to
`*.done.toml`, or answers with `*.error.txt`.
"""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path
from typing import Any

from lorad.context import Context
from lorad.errors import StageFailed
from lorad.fsutil import (
    atomic_copy,
    atomic_write_json,
    atomic_write_text,
    link_or_copy,
    same_file,
    unique_path,
)
from lorad.logs import log
from lorad.outbox import read_owner, write_owner
from lorad.store import FINAL, Job
from lorad.workspace import epoch_file_name

MAX_EXTRA_EPOCHS = 100
REQUEST_SETTLE_SECONDS = 1.0


class RequestError(Exception):
    """A resume or pick that cannot be done; the message says why and what would work."""


def outbox_epochs(job: Job) -> list[int]:
    folder = Path(job.outbox_dir or "")
    found = []
    for path in folder.glob(f"{job.token}-*.safetensors"):
        number = path.stem.rsplit("-", 1)[-1]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def lineage(ctx: Context, job: Job) -> list[Job]:
    """Every job whose results share this job's outbox folder, oldest first."""
    if not job.outbox_dir:
        return [job]
    return [j for j in ctx.store.jobs() if j.outbox_dir == job.outbox_dir]


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


def seed_followup(ctx: Context, job: Job, train: dict[str, Any]) -> None:
    """Give a follow-up job its dataset, its starting epoch and the parent's saved states."""
    from lorad.stages.train import saved_states

    parent = ctx.store.get(job.options["resume"]["parent"])
    start = train["start_epoch"]
    paths, parent_paths = ctx.paths(job), ctx.paths(parent)
    token = job.token or ""
    outbox = Path(job.outbox_dir or "")
    if not paths.training_images.is_dir():
        _copy_dataset(parent_paths.dataset, outbox / "dataset", paths.dataset, token,
                      train.get("repeats") or parent.train.get("repeats") or 1)
    weights = parent_paths.epochs / epoch_file_name(token, start)
    if not weights.is_file():
        weights = outbox / epoch_file_name(token, start)
    if not weights.is_file():
        raise StageFailed(f"the weights of epoch {start} are gone from {outbox}; pick another "
                          "epoch to resume from")
    link_or_copy(weights, paths.epochs / epoch_file_name(token, start))
    train["inherited_states"] = [s for s in saved_states(ctx, parent, parent.train)
                                 if s["epoch"] == start]
    train["seeded"] = True


def _copy_dataset(work_dataset: Path, outbox_dataset: Path, target: Path, token: str,
                  repeats: int) -> None:
    """The parent's prepared dataset (hard links), or, if its work folder is gone, the outbox's."""
    source_dir = next(iter(sorted((work_dataset / "training_images").glob("*_*"))), None)
    if source_dir is None or not source_dir.is_dir():
        source_dir = outbox_dataset
    files = sorted(p for p in source_dir.glob("*") if p.suffix in (".png", ".txt"))
    if not any(p.suffix == ".png" for p in files):
        raise StageFailed(f"the dataset of this LoRA is gone (neither the work folder nor "
                          f"{outbox_dataset} has it); drop the photos into the inbox again")
    folder_name = source_dir.name if source_dir != outbox_dataset else f"{repeats}_{token}"
    for path in files:
        link_or_copy(path, target / "training_images" / folder_name / path.name)
    manifest = work_dataset / "manifest.json"
    if source_dir != outbox_dataset and manifest.is_file():
        link_or_copy(manifest, target / "manifest.json")
        return
    images = [{"name": p.name, "source": p.name, "user_caption": False}
              for p in files if p.suffix == ".png"]
    atomic_write_json(target / "manifest.json", {
        "token": token, "repeats": repeats, "images": images,
        "train_dir": f"training_images/{folder_name}"})


def pick(ctx: Context, job: Job, epoch: int) -> Path:
    """Make epoch `epoch` the LoRA: <token>.safetensors in the outbox and the copy_to folders."""
    outbox = Path(job.outbox_dir or "")
    chosen = outbox / epoch_file_name(job.token or "", epoch)
    if not chosen.is_file():
        have = ", ".join(map(str, outbox_epochs(job))) or "none"
        raise RequestError(f"there is no epoch {epoch} of {job.token} in {outbox} "
                           f"(epochs there: {have})")
    final = outbox / f"{job.token}.safetensors"
    if final.exists() and not any(same_file(final, outbox / epoch_file_name(job.token or "", n))
                                  for n in outbox_epochs(job)):
        os.rename(final, unique_path(outbox / "replaced" / final.name))
    atomic_copy(chosen, final)
    for folder in ctx.settings.deliver.copy_to:
        atomic_copy(chosen, Path(folder) / final.name)
    write_owner(outbox, {"picked_epoch": epoch})
    ctx.store.event(job.id, f"epoch {epoch} picked as {final}")
    return final


# ---- request files in the outbox ------------------------------------------------------------
def _newest_done(ctx: Context, folder: Path) -> Job | None:
    ids = read_owner(folder).get("jobs", [])
    for job_id in sorted(ids, reverse=True):
        try:
            job = ctx.store.get(job_id)
        except LookupError:
            continue
        if job.state == "done":
            return job
    return None


def _read_request(path: Path, allowed: dict[str, type]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise RequestError(f"{path.name} is not valid TOML: {error}") from None
    for key, value in data.items():
        if key not in allowed:
            raise RequestError(f"{path.name}: unknown key {key!r} (allowed: "
                               f"{', '.join(allowed)})")
        if type(value) is not allowed[key]:
            raise RequestError(f"{path.name}: {key} must be a whole number (got {value!r})")
    return data


def _answer(path: Path, error: str | None, result: str) -> None:
    stem = path.name.removesuffix(".toml")
    if error is None:
        done = unique_path(path.with_name(f"{stem}.done.toml"))
        text = path.read_text(encoding="utf-8", errors="replace")
        atomic_write_text(done, f"# lorad: {result}\n{text}")
        path.unlink()
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        atomic_write_text(path.with_name(f"{stem}.error.txt"),
                          f"lorad could not act on {path.name}: {error}\n\nIt said:\n{text}")
        path.unlink()


def handle_request(ctx: Context, path: Path) -> None:
    folder = path.parent
    job = _newest_done(ctx, folder)
    error, result = None, ""
    try:
        if job is None:
            raise RequestError(f"no finished training owns {folder}")
        if path.name == "resume.toml":
            data = _read_request(path, {"epochs": int, "from": int})
            if "epochs" not in data:
                raise RequestError("resume.toml needs epochs = N (how many more epochs)")
            child = resume(ctx, job, data["epochs"], data.get("from"))
            result = f"queued as job {child.id} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        else:
            data = _read_request(path, {"epoch": int})
            if "epoch" not in data:
                raise RequestError("pick.toml needs epoch = N")
            final = pick(ctx, job, data["epoch"])
            result = f"epoch {data['epoch']} copied to {final.name}"
    except RequestError as caught:
        error = str(caught)
        log.warning("%s: %s", path, error)
    else:
        log.info("%s: %s", path, result)
    _answer(path, error, result)


def scan_requests(ctx: Context) -> None:
    """Act on resume.toml / pick.toml files that people have put into outbox folders."""
    try:
        folders = [e for e in os.scandir(ctx.settings.outbox) if e.is_dir()]
    except FileNotFoundError:
        return
    now = time.time()
    for entry in folders:
        for name in ("resume.toml", "pick.toml"):
            path = Path(entry.path) / name
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age >= REQUEST_SETTLE_SECONDS:
                handle_request(ctx, path)
