"""Request files in the outbox: `resume.toml` and `pick.toml`, dropped by a person into a LoRA's
folder, acted on by the daemon through the same actions as `lorad resume` and `lorad pick`, and
answered with `*.done.toml` or `*.error.txt`.

Anyone who can write to the outbox can put a file there, so a request is read with care: only a
small regular file is read (never through a symbolic link, which could point at lorad's own
secrets), and only a request that parsed is ever quoted back.
"""

from __future__ import annotations

import os
import stat
import time
import tomllib
from pathlib import Path
from typing import Any

from lorad import actions
from lorad.context import Context
from lorad.delivery import manifest
from lorad.errors import RequestError
from lorad.store import Job
from lorad.system.fsutil import atomic_write_text, unique_path
from lorad.system.logs import for_job, log

REQUEST_SETTLE_SECONDS = 1.0
REQUEST_NAMES = ("resume.toml", "pick.toml")
MAX_REQUEST_BYTES = 4096


def _newest_done(ctx: Context, folder: Path) -> Job | None:
    for job_id in sorted(manifest.read(folder).jobs, reverse=True):
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
        child = actions.resume(ctx, job, data["epochs"], data.get("from"))
        return f"queued as job {child.id} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if "epoch" not in data:
        raise RequestError("pick.toml needs epoch = N")
    final = actions.pick(ctx, job, data["epoch"])
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
