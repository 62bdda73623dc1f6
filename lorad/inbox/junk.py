"""Files and folders that operating systems, sync tools and downloads leave behind.

They never count as photos and never hold up a folder: the watcher fingerprints them (a growing
`.part` file still means "arriving") but a leftover one does not stop the folder from settling.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

JUNK_FILES = ("*.ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", ".localized",
              "._*")  # ._name: macOS AppleDouble resource forks, written next to copied files
JUNK_DIRS = ("__macosx", "@eadir", ".appledouble", ".spotlight-v100", ".trashes", ".fseventsd",
             "$recycle.bin", ".stfolder", ".stversions", ".sync", ".thumbnails",
             # what NAS shares and filesystems keep at their top level (the inbox may be one)
             "lost+found", "#recycle", "#snapshot", "system volume information")
# In-progress downloads and copies: their presence means the folder may still be arriving.
PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".filepart",
                    ".!qb", ".opdownload", ".aria2", ".syncthing.tmp", ".sb-")
PARTIAL_PATTERNS = (
    "~$*",  # Office lock files
    ".~lock.*#",  # LibreOffice lock files
    ".syncthing.*.tmp",
    "*.sb-*",  # Safari downloads in progress
)
# rsync writes "name" as ".name.XXXXXX" (six random characters) and renames it when complete.
RSYNC_TEMP = re.compile(r"^\..+\.[A-Za-z0-9]{6}$")


def _matches(name: str, patterns: Iterable[str]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def is_junk_dir(name: str) -> bool:
    return name.lower() in JUNK_DIRS


def is_partial(name: str) -> bool:
    """A file that is a download or copy in progress (it will be renamed or removed)."""
    lowered = name.lower()
    return (
        lowered.endswith(PARTIAL_SUFFIXES)
        or _matches(name, PARTIAL_PATTERNS)
        or bool(RSYNC_TEMP.match(name))
    )


def is_junk(name: str, extra: Iterable[str] = ()) -> bool:
    """A file that is never a photo nor a caption: system litter, partial downloads, ignores."""
    return _matches(name, JUNK_FILES) or is_partial(name) or _matches(name, extra)


def is_arriving_folder(name: str) -> bool:
    """A top-level folder whose name says it is still being written (hidden or temporary)."""
    return name.startswith(".") or is_partial(name)
