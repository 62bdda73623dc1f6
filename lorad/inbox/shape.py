"""What a subject folder may hold, whatever else is in it: folders at most MAX_DEPTH deep, at
most MAX_ENTRIES files, folders and links in all, and (to be copied from another filesystem)
nothing but regular files, folders and links.

A LoRA needs 11 to 50 photos: these bounds are far above any real subject folder, and they keep
a hostile or mistaken one (a folder nested a thousand deep, a whole photo library, a device
named like a photo) from exhausting the daemon. Such a folder is refused whole, with the limit it
crossed and what to do.
"""

from __future__ import annotations

from pathlib import Path

from lorad.system.walk import Found, walk

MAX_DEPTH = 32  # folders inside a subject folder, one inside the other
MAX_ENTRIES = 10_000  # files, folders and links in a subject folder, at all levels
AGAIN = "then drop the folder into the inbox again"


class FolderTooLarge(ValueError):
    """A subject folder over MAX_DEPTH or MAX_ENTRIES; the message says which and what to do."""


def _short(rel: str) -> str:
    parts = rel.split("/")
    shown = "/".join(parts[:3]) + ("/.../" + parts[-1] if len(parts) > 3 else "")
    return shown if shown.isprintable() else repr(shown)


def limit_problem(found: Found, count: int) -> str | None:
    """Why the walk of a subject folder must stop at `found`, its count-th entry, if it must."""
    if count > MAX_ENTRIES:
        return (f"it holds more than {MAX_ENTRIES:,} files and folders, the most lorad takes in "
                f"one subject folder (a LoRA needs 11 to 50 photos): keep only the photos to "
                f"train, {AGAIN}")
    if found.kind == "dir" and found.depth >= MAX_DEPTH:
        return (f"it holds folders nested more than {MAX_DEPTH} deep ({_short(found.rel)}), "
                f"the most lorad takes in one subject folder: put the photos in fewer levels of "
                f"folders, {AGAIN}")
    return None


def within_depth(found: Found) -> bool:
    """A walk's `descend`: never below MAX_DEPTH."""
    return found.depth < MAX_DEPTH


def check_shape(folder: Path, name: str, *, regular_only: bool = False) -> None:
    """Raise FolderTooLarge when folder (dropped as `name`) crosses a limit or, with
    regular_only, holds a pipe, a socket or a device (a claim from another filesystem never
    copies one)."""
    for count, found in enumerate(walk(folder, within_depth), start=1):
        problem = limit_problem(found, count)
        if problem is None and regular_only and found.kind == "special":
            problem = (f"{_short(found.rel)} is not a regular file (a pipe, socket or device), "
                       "which lorad never copies from the inbox to its work area on another "
                       f"disk: remove it (copy the photo itself in), {AGAIN}")
        if problem is not None:
            raise FolderTooLarge(f"{name} cannot be taken: {problem}")
