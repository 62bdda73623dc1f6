"""The daemon's side of face scoring: runs `python -m lorad.likeness.child` on a list of images
and collects one `Face` per image. dlib never loads in the daemon; the child exits after the run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lorad.likeness.protocol import Face, Fatal, Image, Request, parse_event
from lorad.system.jsonchild import JsonChild, describe_exit


class LikenessError(Exception):
    """The face process failed (dlib missing, a crash); the message says how."""


def describe_faces(images: list[Image], *, should_stop: Callable[[], bool] | None = None,
                   spawn: Callable[..., subprocess.Popen] | None = None) -> dict[Path, Face]:
    """Each image's faces (`Image.mirror`: and its face's mirror), by path, from one child run.
    LikenessError when the run fails; ChildStopped when should_stop() turns True."""
    if not images:
        return {}
    child = JsonChild(sys.executable, "lorad.likeness.child", None,
                      **({"spawn": spawn} if spawn else {}))
    found: dict[Path, Face] = {}
    fatal = None
    try:
        child.send(Request(images=images).model_dump(mode="json"))
        for data in child.events(should_stop):
            try:
                event = parse_event(data)
            except ValueError as error:
                raise LikenessError(f"the face process sent an {error}") from None
            if isinstance(event, Face):
                found[event.path] = event
            elif isinstance(event, Fatal):
                fatal = event.error
    except BaseException:  # stopped (ChildStopped), cancelled, the daemon is stopping
        child.terminate()
        raise
    finally:
        returncode = child.finish()
    if fatal is not None:
        raise LikenessError(fatal)
    missing = [image.path for image in images if image.path not in found]
    if missing:
        raise LikenessError(f"the face process {describe_exit(returncode)} before describing "
                            f"{missing[0]}; its last output:\n{child.stderr_text()}")
    return found
