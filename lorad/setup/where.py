"""What `lorad run` says first: which configuration it read (or where it looked), and which
folders it uses."""

from __future__ import annotations

from pathlib import Path

from lorad.settings import Settings, default_config_paths, find_config


def startup_lines(config: Path | None, settings: Settings) -> list[str]:
    found = find_config(config)
    if found is None:
        looked = ", ".join(map(str, default_config_paths()))
        first = (f"no configuration file (looked for {looked}): running on the defaults; "
                 "`lorad init` writes one to edit")
    else:
        first = f"configuration: {found.absolute()}"
    return [first, f"inbox {settings.inbox}, outbox {settings.outbox}, state_dir "
                   f"{settings.state_dir}"]
