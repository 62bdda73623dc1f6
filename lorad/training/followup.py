"""After training: resume an undertrained LoRA for more epochs, or pick an earlier epoch.

Both work as a command (`lorad resume`, `lorad pick`) or as a small file a person drops into the
outbox folder (`resume.toml`, `pick.toml`), which the daemon acts on and renames to
`*.done.toml`, or answers with `*.error.txt`.
"""

from __future__ import annotations

import os
import stat
import time
import tomllib
from pathlib import Path
from typing import Any

from lorad.context import Context
from lorad.delivery.outbox import read_owner, write_owner
from lorad.errors import StageFailed
from lorad.store import FINAL, Job
from lorad.system.fsutil import (
    atomic_copy,
    atomic_write_json,
    atomic_write_text,
    link_or_copy,
    same_file,
    unique_path,
)
from lorad.system.logs import for_job, log
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
    from lorad.training.stage import saved_states

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
# Anyone who can write to the outbox can put a file there, so a request is read with care: only
# a small regular file is read (never through a symbolic link, which could point at lorad's own
# secrets), and only a request that parsed is ever quoted back.
REQUEST_NAMES = ("resume.toml", "pick.toml")
MAX_REQUEST_BYTES = 4096


def _newest_done(ctx: Context, folder: Path) -> Job | None:
    ids = read_owner(folder).get("jobs", [])
    if not isinstance(ids, list):
        return None
    for job_id in sorted((i for i in ids if type(i) is int), reverse=True):
        try:
            job = ctx.store.get(job_id)
        except LookupError:
            continue
        if job.state == "done":
            return job
    return None


def _refuse_kind(path: Path, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise RequestError(f"{path.name} is a symbolic link, which lorad does not follow; write "
                           "the request itself into the folder as a small text file")
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise RequestError(f"{path.name} is {kind}; remove it and write the request as a small "
                           "text file of that name")


def _too_large(path: Path, size: int) -> RequestError:
    return RequestError(f"{path.name} is {size} bytes; a request is one or two lines (at most "
                        f"{MAX_REQUEST_BYTES} bytes)")


def read_request_text(path: Path) -> str:
    """The text of a request file: a regular file (not a link) of at most MAX_REQUEST_BYTES,
    UTF-8. Every problem, an OSError included, is a RequestError that says what to do."""
    try:
        _refuse_kind(path, os.lstat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            opened = os.fstat(handle.fileno())
            _refuse_kind(path, opened.st_mode)  # in case it was swapped since the lstat
            if opened.st_size > MAX_REQUEST_BYTES:
                raise _too_large(path, opened.st_size)
            raw = handle.read(MAX_REQUEST_BYTES + 1)
    except RequestError:
        raise
    except OSError as error:
        raise RequestError(f"{path.name} cannot be read ({error.strerror or error}); make it a "
                           "plain file that the user lorad runs as can read") from None
    if len(raw) > MAX_REQUEST_BYTES:  # it grew while being read
        raise _too_large(path, len(raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"{path.name} is not UTF-8 text; save it as plain UTF-8") from None


def _parse_request(path: Path, text: str, allowed: dict[str, type]) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RequestError(f"{path.name} is not valid TOML: {error}") from None
    for key, value in data.items():
        if key not in allowed:
            raise RequestError(f"{path.name}: unknown key {key!r} (allowed: "
                               f"{', '.join(allowed)})")
        if type(value) is not allowed[key]:
            raise RequestError(f"{path.name}: {key} must be a whole number (got {value!r:.40})")
    return data


def _act(ctx: Context, job: Job, path: Path, data: dict[str, Any]) -> str:
    """Do what the parsed request asks; returns what was done, for the done file."""
    if path.name == "resume.toml":
        if "epochs" not in data:
            raise RequestError("resume.toml needs epochs = N (how many more epochs)")
        child = resume(ctx, job, data["epochs"], data.get("from"))
        return f"queued as job {child.id} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if "epoch" not in data:
        raise RequestError("pick.toml needs epoch = N")
    final = pick(ctx, job, data["epoch"])
    return f"epoch {data['epoch']} copied to {final.name}"


ALLOWED_KEYS = {"resume.toml": {"epochs": int, "from": int}, "pick.toml": {"epoch": int}}


def _answer_done(path: Path, text: str, result: str) -> None:
    done = unique_path(path.with_name(f"{path.name.removesuffix('.toml')}.done.toml"))
    atomic_write_text(done, f"# lorad: {result}\n{text}")
    path.unlink()


def _answer_error(path: Path, error: str, parsed_text: str | None) -> None:
    """<stem>.error.txt with the reason; the request's text only if it was read and parsed (what
    could not be parsed, or was not read, is never copied). A regular file or a link is then
    removed; anything else (a folder) is left for its owner, and answered only once."""
    text = f"lorad could not act on {path.name}: {error}\n"
    if parsed_text is not None:
        text += f"\nIt said:\n{parsed_text}"
    atomic_write_text(_error_file(path), text)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        path.unlink()


def _error_file(path: Path) -> Path:
    return path.with_name(f"{path.name.removesuffix('.toml')}.error.txt")


def handle_request(ctx: Context, path: Path) -> None:
    """Act on one request file and answer it (done file or error file)."""
    job = _newest_done(ctx, path.parent)
    say = for_job(job.id, job.token) if job else log
    parsed_text: str | None = None
    try:
        text = read_request_text(path)
        data = _parse_request(path, text, ALLOWED_KEYS[path.name])
        parsed_text = text
        if job is None:
            raise RequestError(f"no finished training owns {path.parent}")
        result = _act(ctx, job, path, data)
    except RequestError as caught:
        say.warning("%s: %s", path, caught)
        _answer_error(path, str(caught), parsed_text)
        return
    say.info("%s: %s", path, result)
    _answer_done(path, parsed_text, result)


def _settled(path: Path, now: float) -> os.stat_result | None:
    """The request's own status (a link's, not its target's) once it has been left alone for
    REQUEST_SETTLE_SECONDS; None while it is absent or still being written."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    return found if now - found.st_mtime >= REQUEST_SETTLE_SECONDS else None


def _answered_before(path: Path, found: os.stat_result) -> bool:
    """A folder (or other entry lorad cannot remove) under a request's name was answered once
    already: its error file is newer than it."""
    if stat.S_ISREG(found.st_mode) or stat.S_ISLNK(found.st_mode):
        return False
    try:
        return os.lstat(_error_file(path)).st_mtime >= found.st_mtime
    except OSError:
        return False


def _check_request(ctx: Context, path: Path, now: float) -> None:
    """Handle one request if it is ready; a failure is logged (with the job's id) and the scan
    goes on: one bad file must not stop the daemon."""
    try:
        found = _settled(path, now)
        if found is None or _answered_before(path, found):
            return
        handle_request(ctx, path)
    except Exception as error:
        _logger_for(ctx, path.parent).error(
            "%s: could not act on it: %s (%s); lorad goes on and looks again later", path, error,
            type(error).__name__)


def _logger_for(ctx: Context, folder: Path) -> Any:
    """The log of the job that owns folder (its lines carry the job's id), else lorad's."""
    try:
        job = _newest_done(ctx, folder)
    except Exception:
        job = None
    return for_job(job.id, job.token) if job else log


def scan_requests(ctx: Context) -> None:
    """Act on resume.toml / pick.toml files that people have put into outbox folders."""
    try:
        folders = [Path(e.path) for e in os.scandir(ctx.settings.outbox)
                   if e.is_dir(follow_symlinks=False)]
    except OSError as error:
        if not isinstance(error, FileNotFoundError):
            log.error("cannot look for requests in %s: %s", ctx.settings.outbox, error)
        return
    now = time.time()
    for folder in folders:
        for name in REQUEST_NAMES:
            _check_request(ctx, folder / name, now)
