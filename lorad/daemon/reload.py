"""SIGHUP: read the configuration again and apply what can change while jobs run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorad.delivery.notify import build_apprise
from lorad.settings import ConfigError, Settings, load_settings
from lorad.system.logs import log

if TYPE_CHECKING:
    from lorad.daemon.loop import Daemon

# Folders, GPUs, the watch mode and the log level (set up once, maybe by --log-level) are fixed
# for the daemon's lifetime.
NEEDS_RESTART = ("inbox", "outbox", "state_dir", "failed", "gpus", "log_level")


def reload_settings(daemon: Daemon) -> Settings:
    old = daemon.settings
    try:
        new = load_settings(daemon.config_path)
    except ConfigError as error:
        problems = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        log.error("configuration not reloaded, the running one stays: %s", problems)
        return old
    kept = {}
    for key in NEEDS_RESTART:
        if getattr(new, key) != getattr(old, key):
            log.warning("%s changed in the configuration; restart lorad to apply it", key)
            kept[key] = getattr(old, key)
    if new.watch.mode != old.watch.mode:
        log.warning("watch.mode changed; restart lorad to apply it")
    merged = new.model_copy(update=kept)
    assert daemon.ctx is not None
    daemon.ctx.settings = merged
    daemon.inbox.settings = merged.watch
    daemon.sender.settings = merged.notify
    daemon.sender.apprise = build_apprise(merged.notify)
    log.info("configuration reloaded from %s (new jobs and runs use it)", daemon.config_path)
    return merged
