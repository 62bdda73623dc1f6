"""Watching the inbox: the mode the watcher will use on the inbox's filesystem, SQLite's on
state_dir's, and inotify's limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lorad.doctor.check import OK, WARN, Check, existing
from lorad.inbox.watcher import filesystem_type, needs_polling
from lorad.settings import Settings

# Below the usual defaults; lorad itself needs one watch and one instance.
INOTIFY_MINIMUM = {"max_user_watches": 8192, "max_user_instances": 128}


def watch_mode(settings: Settings) -> tuple[str | None, str]:
    """The inbox's filesystem type and the mode the watcher will use ("native" or "poll")."""
    fs_type = filesystem_type(existing(settings.inbox))
    mode = settings.watch.mode
    if mode == "auto":
        mode = "poll" if needs_polling(fs_type) else "native"
    return fs_type, mode


def watching(settings: Settings) -> Iterator[Check]:
    fs_type, mode = watch_mode(settings)
    how = ("watched with inotify" if mode == "native"
           else f"polled every {settings.watch.poll_seconds:g} s")
    configured = f'watch.mode = "{settings.watch.mode}"'
    if fs_type is None:
        yield Check(WARN, "watching", f"cannot tell the inbox's filesystem type, so it is {how} "
                                      f"({configured}); set watch.mode = \"poll\" if it is a "
                                      "network share")
    elif mode == "native" and needs_polling(fs_type):
        yield Check(WARN, "watching", f"the inbox is on {fs_type}, where inotify misses changes "
                                      f"made by other machines, but {configured}; set it to "
                                      '"auto" or "poll"')
    else:
        yield Check(OK, "watching", f"the inbox is on {fs_type}: {how} ({configured})")
    state_fs = filesystem_type(existing(settings.state_dir))
    if needs_polling(state_fs):
        yield Check(WARN, "state_dir", f"{settings.state_dir} is on {state_fs}, where SQLite's "
                                       "locking is unreliable; put state_dir on a local disk")
    yield inotify_limits(mode)


def inotify_limits(mode: str, proc: Path = Path("/proc/sys/fs/inotify")) -> Check:
    if mode == "poll":
        return Check(OK, "inotify", "not needed: the inbox is polled")
    try:
        found = {name: int((proc / name).read_text()) for name in INOTIFY_MINIMUM}
    except (OSError, ValueError):
        return Check(WARN, "inotify", f"cannot read the limits in {proc}; if inotify cannot be "
                                      "used lorad says so in its log and polls instead")
    shown = ", ".join(f"{name} = {value}" for name, value in found.items())
    low = [name for name, value in found.items() if value < INOTIFY_MINIMUM[name]]
    if low:
        return Check(WARN, "inotify", f"{shown}: low, and shared by every program of the same "
                                      "user; raise them with sysctl (e.g. fs.inotify."
                                      f"{low[0]}={INOTIFY_MINIMUM[low[0]] * 4}), else lorad "
                                      "falls back to polling when they run out")
    return Check(OK, "inotify", f"{shown}; lorad needs one of each (it watches the inbox itself, "
                                "not its subfolders)")
