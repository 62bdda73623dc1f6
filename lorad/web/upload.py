"""A folder of photos dropped through the page, into the inbox without a half folder ever there.

The browser first says what it will send (`start`: the folder's name, each file's relative path
and size, and the optional token, model and epochs); everything is checked before a byte
arrives. The files then stream one by one (`receive`) into a hidden folder in the inbox, which
the watcher never takes (hidden names are still arriving). Only when every file has arrived whole
does `finish` write `lora.toml` (from the form) and the ready marker, and rename the folder into
place: the daemon sees the whole folder or nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from lorad.actions import MAX_EXTRA_EPOCHS
from lorad.dataset.formats import IMAGE_EXTENSIONS
from lorad.errors import RequestError
from lorad.inbox.junk import is_arriving_folder, is_junk, is_junk_dir
from lorad.inbox.lock import INBOX_LOCK
from lorad.settings import Settings
from lorad.subject import SUBJECT_FILE, TOKEN_RE, TOKEN_RULE, token_from_name

HIDDEN_PREFIX = ".lorad-upload-"
ABANDONED_SECONDS = 3600
MB = 1024 * 1024


@dataclass
class Upload:
    id: str
    name: str
    hidden: Path
    sizes: dict[str, int]  # relative path -> declared size, for the files that will be sent
    subject: dict[str, Any]
    received: dict[str, int] = field(default_factory=dict)
    touched: float = field(default_factory=time.monotonic)


def plain_parts(rel: str) -> list[str] | None:
    """The components of a relative path from the browser, or None if any is not a plain name."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") or "\0" in p or "\\" in p or len(p) > 255 for p in parts):
        return None
    return parts


class Uploads:
    """The folders being dropped through this web process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = settings.web
        self.open: dict[str, Upload] = {}

    def check_name(self, name: str, token: str | None) -> None:
        if (not name or "/" in name or "\0" in name or len(name) > 200 or name == INBOX_LOCK
                or is_arriving_folder(name) or is_junk_dir(name)):
            raise RequestError(f"{name!r} cannot be a subject folder's name: a plain name, not "
                               "hidden, not a temporary or system folder's")
        if token is None and token_from_name(name) is None:
            raise RequestError(f"no token can be made from the folder name {name!r}: give a "
                               f"token ({TOKEN_RULE})")
        if os.path.lexists(self.settings.inbox / name):
            raise RequestError(f"the inbox already holds {name!r}: rename the folder")

    def subject(self, token: str, model: str, epochs: str, has_file: bool) -> dict[str, Any]:
        """lora.toml's keys from the form (all optional), checked as the daemon would."""
        found: dict[str, Any] = {}
        if token:
            if not TOKEN_RE.fullmatch(token):
                raise RequestError(f"{token!r} is not a usable token: use {TOKEN_RULE}")
            found["token"] = token
        if model:
            if model not in self.settings.models:
                raise RequestError(f"no model {model!r} (lorad.toml's [models]: "
                                   f"{', '.join(sorted(self.settings.models))})")
            found["model"] = model
        if epochs:
            if not epochs.isdigit() or not 1 <= int(epochs) <= MAX_EXTRA_EPOCHS:
                raise RequestError(f"epochs must be 1 to {MAX_EXTRA_EPOCHS} (got {epochs!r})")
            found["epochs"] = int(epochs)
        if found and has_file:
            raise RequestError(f"the folder has its own {SUBJECT_FILE}: leave token, model and "
                               "epochs empty here, or remove the file")
        return found

    def start(self, name: str, files: list[dict[str, Any]], token: str = "", model: str = "",
              epochs: str = "") -> tuple[Upload, list[str]]:
        """Check the whole folder before any byte arrives. The upload, and the files that will
        not be sent (system litter, not photos), each with its reason."""
        self.expire()
        sizes: dict[str, int] = {}
        skipped: list[str] = []
        for item in files:
            rel, size = str(item.get("path", "")), item.get("size")
            parts = plain_parts(rel)
            if parts is None or type(size) is not int or size < 0:
                raise RequestError(f"{rel!r} is not a usable file name inside the folder")
            suffix = Path(parts[-1]).suffix.lower()
            if any(p.startswith(".") or is_junk_dir(p) for p in parts) or is_junk(parts[-1]):
                skipped.append(f"{rel}: hidden or system file, not sent")
            elif rel == SUBJECT_FILE or suffix in IMAGE_EXTENSIONS or suffix == ".txt":
                sizes[rel] = size
            else:
                skipped.append(f"{rel}: not a photo, a caption or {SUBJECT_FILE}, not sent")
        subject = self.subject(token, model, epochs, SUBJECT_FILE in sizes)
        self.check_name(name, subject.get("token"))
        self.check_limits(sizes)
        if not self.settings.inbox.is_dir():
            raise RequestError(f"the inbox {self.settings.inbox} does not exist (lorad run "
                               "creates it)")
        upload_id = secrets.token_hex(8)
        hidden = self.settings.inbox / f"{HIDDEN_PREFIX}{upload_id}"
        hidden.mkdir()
        upload = Upload(upload_id, name, hidden, sizes, subject)
        self.open[upload_id] = upload
        return upload, skipped

    def check_limits(self, sizes: dict[str, int]) -> None:
        limits = self.limits
        if not sizes:
            raise RequestError("the folder holds no photo")
        if len(sizes) > limits.max_files:
            raise RequestError(f"{len(sizes)} files; at most {limits.max_files} ([web] max_files)")
        big = [rel for rel, size in sizes.items() if size > limits.max_file_mb * MB]
        if big:
            raise RequestError(f"{big[0]} is larger than {limits.max_file_mb:g} MB "
                               "([web] max_file_mb)")
        if sum(sizes.values()) > limits.max_upload_mb * MB:
            raise RequestError(f"the folder is larger than {limits.max_upload_mb:g} MB "
                               "([web] max_upload_mb)")

    def get(self, upload_id: str) -> Upload:
        upload = self.open.get(upload_id)
        if upload is None:
            raise RequestError("no such upload (it finished, or was abandoned): start again")
        upload.touched = time.monotonic()
        return upload

    async def receive(self, upload_id: str, rel: str, body: AsyncIterator[bytes]) -> int:
        """Write one announced file, no longer than announced. Its size."""
        upload = self.get(upload_id)
        parts = plain_parts(rel)
        if parts is None or rel not in upload.sizes or rel in upload.received:
            raise RequestError(f"{rel!r} was not announced, or has already arrived")
        target = upload.hidden.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        expected, written = upload.sizes[rel], 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            async for chunk in body:
                written += len(chunk)
                if written > expected:
                    raise RequestError(f"{rel} is larger than announced ({expected} bytes)")
                await anyio.to_thread.run_sync(os.write, fd, chunk)
        except BaseException:
            os.close(fd)
            target.unlink(missing_ok=True)
            raise
        os.close(fd)
        if written != expected:
            target.unlink()
            raise RequestError(f"{rel} arrived with {written} of {expected} bytes: send it again")
        upload.received[rel] = written
        return written

    def finish(self, upload_id: str) -> Path:
        """lora.toml and the ready marker in, then one rename into the inbox."""
        upload = self.get(upload_id)
        missing = sorted(set(upload.sizes) - set(upload.received))
        if missing:
            raise RequestError(f"{len(missing)} files have not arrived yet ({missing[0]}, ...)")
        if upload.subject:
            text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in
                           upload.subject.items())
            (upload.hidden / SUBJECT_FILE).write_text(text, encoding="utf-8")
        if self.settings.watch.ready_marker:
            (upload.hidden / self.settings.watch.ready_marker).touch()
        target = self.settings.inbox / upload.name
        if os.path.lexists(target):
            self.abandon(upload_id)
            raise RequestError(f"the inbox has had a {upload.name!r} put into it meanwhile: "
                               "rename the folder and drop it again")
        os.rename(upload.hidden, target)
        del self.open[upload_id]
        return target

    def abandon(self, upload_id: str) -> None:
        upload = self.open.pop(upload_id, None)
        if upload is not None:
            shutil.rmtree(upload.hidden, ignore_errors=True)

    def expire(self) -> None:
        """Uploads untouched for an hour are given up, their files removed."""
        now = time.monotonic()
        for upload_id in [u.id for u in self.open.values()
                          if now - u.touched > ABANDONED_SECONDS]:
            self.abandon(upload_id)


def remove_leftovers(inbox: Path) -> list[Path]:
    """Hidden upload folders an earlier web process left (killed mid-upload), over an hour old."""
    removed: list[Path] = []
    if not inbox.is_dir():
        return removed
    for path in inbox.glob(f"{HIDDEN_PREFIX}*"):
        try:
            old = time.time() - path.lstat().st_mtime > ABANDONED_SECONDS
        except OSError:
            continue
        if old and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
