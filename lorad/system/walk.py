"""Walking and removing folder trees without recursion: any depth, links never followed.

Python's own walkers (os.walk before 3.12, shutil.copytree, shutil.rmtree before 3.13) call
themselves once per level and raise RecursionError on a folder nested about 1000 deep; these
keep their own stack instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Found:
    """One entry below the root. `kind` is "dir", "file" (regular), "link", "special" (a pipe,
    socket or device) or "unreadable" (a folder that cannot be listed; `error` says why)."""

    path: Path
    rel: str  # relative to the root, with "/"
    depth: int  # how many folders lie between the root and this entry
    kind: str
    error: OSError | None = None


def _kind(item: os.DirEntry) -> str | None:
    try:
        if item.is_symlink():
            return "link"
        if item.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if item.is_file(follow_symlinks=False) else "special"
    except FileNotFoundError:
        return None  # gone since the folder was listed


def walk(root: Path, descend: Callable[[Found], bool] | None = None) -> Iterator[Found]:
    """Every entry below root, depth first in name order, a folder before its contents.

    A folder is entered when descend(found) is true (always, without descend); a subfolder that
    cannot be listed comes again as kind "unreadable". Raises OSError when root cannot be listed.
    """
    pending: list[tuple[Path, str, int]] = [(Path(root), "", 0)]
    while pending:
        folder, prefix, depth = pending.pop()
        try:
            with os.scandir(folder) as listing:
                items = sorted(listing, key=lambda item: item.name)
        except OSError as error:
            if not prefix:
                raise
            yield Found(folder, prefix, depth - 1, "unreadable", error)
            continue
        below = []
        for item in items:
            kind = _kind(item)
            if kind is None:
                continue
            found = Found(Path(item.path), prefix + item.name, depth, kind)
            yield found
            if kind == "dir" and (descend is None or descend(found)):
                below.append((found.path, found.rel + "/", depth + 1))
        pending.extend(reversed(below))


def remove_tree(path: Path) -> None:
    """Remove a file, a link (never its target) or a whole folder, at any depth."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    stack = [Path(path)]
    while stack:
        folder = stack[-1]
        folders = []
        with os.scandir(folder) as listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False):
                    folders.append(Path(item.path))
                else:
                    os.unlink(item.path)
        if folders:  # emptied first; this folder is looked at again after them
            stack.extend(folders)
        else:
            os.rmdir(folder)
            stack.pop()
