"""Listing a subject folder: which files are photos, captions, lorad's own or junk.

`list_source` walks the folder (hidden, system and ignored files and folders skipped; links
followed only when they stay inside it) and gives one `Entry` per file that matters, with the
reason strings that say why a file is skipped or refused. `pair_captions` and
`attach_captions` give each photo the user's caption file of the same name;
`content_fingerprint` identifies a set of photos by their bytes alone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lorad.captioning.text import apply_prefix
from lorad.dataset.formats import IMAGE_EXTENSIONS
from lorad.dataset.image import ImageVerdict
from lorad.inbox.junk import is_junk, is_junk_dir
from lorad.subject import SUBJECT_FILE

# lorad's own files in a subject folder: never photos, never reported (a refused folder comes
# back from failed/ with error.txt, or lorad-error.txt, and lorad-report.json in it).
CONTROL_FILES = frozenset({SUBJECT_FILE, ".lorad-ready", "error.txt", "lorad-error.txt",
                           "lorad-report.json"})
CAPTION_EXTENSION = ".txt"

SKIPPED_FOLDER = "is a hidden, system or ignored folder: not read"
SKIPPED_FILE = "is a hidden, system or partial file, or matches an ignore pattern"
NOT_REGULAR = "is not a regular file (a pipe, socket or device): copy the photo itself in"
NOT_AN_IMAGE = "is not an image or a caption"


@dataclass
class Entry:
    """One listed file and what became of it.

    `status` is "image" or "caption" while listed, then "accepted", "refused", "ignored" or
    "caption" (a caption that was used). Reasons and warnings follow the file's name.
    """

    rel: str  # relative path inside the subject folder, with "/"
    path: Path  # what is read: the file, or the target of a link that stays inside the folder
    status: str
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    verdict: ImageVerdict | None = None
    caption: str | None = None
    caption_file: str | None = None
    converted: Path | None = None
    thumbnail: Path | None = None
    output: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)


def shown(rel: str) -> str:
    """A relative path fit for a message line: quoted when it holds control or odd characters."""
    return rel if rel.isprintable() else repr(rel)


# Listing --------------------------------------------------------------------------------------


def list_source(source: Path, ignore: Iterable[str] = ()) -> list[Entry]:
    """Every file under `source` that matters, classified, sorted by relative path."""
    entries = _scan(source, source, source.resolve(), tuple(ignore))
    return sorted(entries, key=lambda entry: entry.rel)


def _scan(folder: Path, source: Path, root: Path, ignore: tuple[str, ...]) -> Iterator[Entry]:
    try:
        with os.scandir(folder) as listing:
            items = list(listing)
    except OSError as error:
        if folder == source:
            raise
        rel = folder.relative_to(source).as_posix() + "/"
        yield Entry(rel, folder, "refused", f"is a folder that cannot be read ({error.strerror})")
        return
    for item in items:
        path = Path(item.path)
        rel = path.relative_to(source).as_posix()
        if not item.is_dir(follow_symlinks=False):
            entry = _classify(item, path, rel, root, ignore)
            if entry is not None:
                yield entry
        elif item.name.startswith(".") or is_junk_dir(item.name) or is_junk(item.name, ignore):
            yield Entry(rel + "/", path, "ignored", SKIPPED_FOLDER)
        else:
            yield from _scan(path, source, root, ignore)


def _classify(
    item: os.DirEntry, path: Path, rel: str, root: Path, ignore: tuple[str, ...]
) -> Entry | None:
    name = item.name
    if name.lower() in CONTROL_FILES:
        return None
    if name.startswith(".") or is_junk(name, ignore):
        return Entry(rel, path, "ignored", SKIPPED_FILE)
    kind = _kind(name)
    if item.is_symlink():
        try:
            path = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return Entry(rel, path, "refused", "is a broken link: copy the photo itself in")
        if not path.is_relative_to(root):
            return Entry(
                rel, path, "refused",
                "is a link to a place outside the subject folder, which lorad does not follow: "
                "copy the file itself in",
            )
        if path.is_dir():
            return Entry(rel, path, "ignored", "is a link to a folder inside the subject folder")
    if not path.is_file():
        status = "ignored" if kind == "other" else "refused"
        return Entry(rel, path, status, NOT_REGULAR)
    if kind == "other":
        return Entry(rel, path, "ignored", NOT_AN_IMAGE)
    return Entry(rel, path, kind)


def _kind(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "caption" if suffix == CAPTION_EXTENSION else "other"


# Captions -------------------------------------------------------------------------------------


def _stem_key(rel: str) -> tuple[str, str]:
    path = PurePosixPath(rel)
    return str(path.parent), path.stem


def pair_captions(entries: list[Entry]) -> dict[str, Entry]:
    """Each image's caption file (same folder and stem), by image; leftover captions are ignored."""
    captions: dict[tuple[str, str], Entry] = {}
    for entry in entries:
        if entry.status == "caption":
            captions.setdefault(_stem_key(entry.rel), entry)
    pairs: dict[str, Entry] = {}
    for entry in entries:
        caption = captions.get(_stem_key(entry.rel)) if entry.status == "image" else None
        if caption is not None:
            pairs[entry.rel] = caption
            entry.caption_file = caption.rel
            caption.reason = f"is the caption of {shown(entry.rel)}"
    used = {caption.rel for caption in pairs.values()}
    for entry in entries:
        if entry.status == "caption" and entry.rel not in used:
            entry.status = "ignored"
            entry.reason = (
                "is a .txt file with no photo of the same name"
                if captions[_stem_key(entry.rel)] is entry
                else "is a second caption file for the same photo"
            )
    return pairs


def _read_caption(caption: Entry) -> tuple[str | None, str | None]:
    """The caption text as one line, or None and the warning that says why it is not used."""
    name = shown(caption.rel)
    try:
        text = caption.path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, f"has a caption file {name} that is not UTF-8: ignored (save it as UTF-8)"
    except OSError as error:
        return None, f"has a caption file {name} that cannot be read ({error.strerror})"
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if not line:
        return None, f"has an empty caption file {name}: it is ignored"
    return line, None


def attach_captions(accepted: list[Entry], pairs: dict[str, Entry], prefix: str) -> None:
    for entry in accepted:
        if entry.rel not in pairs:
            continue
        text, warning = _read_caption(pairs[entry.rel])
        if text is None:
            entry.warnings.append(warning or "")
        else:
            entry.caption = apply_prefix(text, prefix)


# Fingerprint ----------------------------------------------------------------------------------


def content_fingerprint(source: Path, ignore: Iterable[str] = ()) -> str:
    """sha256 over the sorted sha256s of the image files' bytes: order- and name-independent."""
    digests = []
    for entry in list_source(Path(source), ignore):
        if entry.status == "image":
            with entry.path.open("rb") as file:
                digests.append(hashlib.file_digest(file, "sha256").hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
