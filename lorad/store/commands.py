"""`lorad db recover`: parsing and printing over lorad.store.damage."""

from __future__ import annotations

import sys

import click

from lorad.settings import ConfigError, load_settings
from lorad.store import damage
from lorad.system.pidlock import AlreadyRunning


@click.group()
def db() -> None:
    """The job database (state_dir/lorad.db)."""


@db.command()
@click.pass_context
def recover(ctx: click.Context) -> None:
    """Rebuild a damaged lorad.db from what can be read; the damaged file is kept beside it.

    Stops if the daemon runs. Uses the sqlite3 command's .recover when it is installed, else
    Python's iterdump (which keeps less). The inbox, work area and outbox are not touched.

    \b
    Example:
      lorad db recover
    """
    try:
        settings = load_settings(getattr(ctx.find_root().obj, "config", None))
        found = damage.quick_check(settings.db_path)
        if found is None:
            click.echo(f"{settings.db_path} passes PRAGMA quick_check: nothing to recover")
            return
        done = damage.recover(settings.state_dir, settings.db_path)
    except (AlreadyRunning, ConfigError, OSError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    twice = f" ({done.skipped} rows found twice kept once)" if done.skipped else ""
    click.echo(f"{settings.db_path} was damaged ({found}); rebuilt with {done.method}{twice}; "
               f"the damaged file is kept as {done.kept}")
