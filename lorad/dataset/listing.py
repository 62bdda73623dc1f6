"""Listing a subject folder: which files are photos, captions, lorad's own or junk.

`list_source` walks the folder (hidden, system and ignored files and folders skipped; links
followed only when they stay inside it) and gives one `Entry` per file that matters, with the
reason strings that say why a file is skipped or refused. `pair_captions` and
`attach_captions` give each photo the user's caption file of the same name;
`content_fingerprint` identifies a set of photos by their bytes alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lorad.captioning.text import apply_prefix
from lorad.dataset.formats import IMAGE_EXTENSIONS
from lorad.dataset.image import ImageVerdict
from lorad.inbox.junk import is_junk, is_junk_dir
from lorad.inbox.shape import FolderTooLarge, limit_problem, within_depth
from lorad.subject import SUBJECT_FILE
from lorad.system.fsutil import file_hash
from lorad.system.walk import Found, walk

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
    """Every file under `source` that matters, classified, sorted by relative path.

    Raises FolderTooLarge when the folder crosses a limit of lorad.inbox.shape."""
    source, ignore = Path(source), tuple(ignore)
    root = source.resolve()
    entries = []
    for count, found in enumerate(walk(source, lambda found: _entered(found, ignore)), start=1):
        problem = limit_problem(found, count)
        if problem is not None:
            raise FolderTooLarge(f"{source.name} cannot be used: {problem}")
        entry = _entry(found, root, ignore)
        if entry is not None:
            entries.append(entry)
    return sorted(entries, key=lambda entry: entry.rel)


def _entered(found: Found, ignore: tuple[str, ...]) -> bool:
    name = found.path.name
    skipped = name.startswith(".") or is_junk_dir(name) or is_junk(name, ignore)
    return within_depth(found) and not skipped


def _entry(found: Found, root: Path, ignore: tuple[str, ...]) -> Entry | None:
    if found.kind == "unreadable":
        why = found.error.strerror if found.error else "unknown"
        return Entry(found.rel + "/", found.path, "refused",
                     f"is a folder that cannot be read ({why})")
    if found.kind != "dir":
        return _classify(found, found.path, found.rel, root, ignore)
    if not _entered(found, ignore):
        return Entry(found.rel + "/", found.path, "ignored", SKIPPED_FOLDER)
    return None


def _classify(
    item: Found, path: Path, rel: str, root: Path, ignore: tuple[str, ...]
) -> Entry | None:
    name = item.path.name
    if name.lower() in CONTROL_FILES:
        return None
    if name.startswith(".") or is_junk(name, ignore):
        return Entry(rel, path, "ignored", SKIPPED_FILE)
    kind = _kind(name)
    if item.kind == "link":
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
            digests.append(file_hash(entry.path))
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
