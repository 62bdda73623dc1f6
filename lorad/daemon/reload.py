"""SIGHUP: the configuration read again, merged with the running one.

`merge` is pure: it returns the settings to run with and the warnings to log; the daemon's loop
applies them to its parts.
"""

from __future__ import annotations

from lorad.settings import Settings

# Folders, GPUs, the watch mode and the log level (set up once, maybe by --log-level) are fixed
# for the daemon's lifetime.
NEEDS_RESTART = ("inbox", "outbox", "state_dir", "failed", "gpus", "log_level")


def merge(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """The new settings, with what needs a restart kept as it was; and a warning for each key
    that changed but is kept."""
    kept = {}
    warnings = []
    for key in NEEDS_RESTART:
        if getattr(new, key) != getattr(old, key):
            warnings.append(f"{key} changed in the configuration; restart lorad to apply it")
            kept[key] = getattr(old, key)
    if new.watch.mode != old.watch.mode:
        warnings.append("watch.mode changed; restart lorad to apply it")
    return new.model_copy(update=kept), warnings
