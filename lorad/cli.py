"""The `lorad` command: parsing and printing only; the work is done by the library."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from lorad import actions
from lorad.errors import RequestError
from lorad.settings import ConfigError, Settings, load_settings
from lorad.setup.commands import doctor, init, kohya
from lorad.store import Job, JobNotFound, Store
from lorad.store.commands import db
from lorad.store.damage import damage_line, is_damage
from lorad.views import job_summary, job_text, ordered, print_status
from lorad.web.command import web

# Long lines (paths, messages) are never broken: they are often copied and pasted.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Env:
    def __init__(self, config: Path | None = None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except ConfigError as error:
                fail(str(error))
        return self._settings

    def store(self) -> Store:
        return Store(self.settings.db_path)

    def job(self, ref: str) -> tuple[Store, Job]:
        store = self.store()
        return store, self.find(store, ref)

    @staticmethod
    def find(store: Store, ref: str) -> Job:
        try:
            return store.find(ref)
        except JobNotFound as error:
            return fail(str(error))


def fail(message: str, code: int = 1) -> Any:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)
    sys.exit(code)


pass_env = click.make_pass_decorator(Env, ensure=True)


def _set_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(Env).config = value


# Accepted before the command and after it (`lorad -c F run`, `lorad run -c F`); the one that
# comes last wins.
config_option = click.option(
    "--config", "-c", type=click.Path(path_type=Path), default=None, expose_value=False,
    callback=_set_config, help="lorad.toml (default: ./lorad.toml, else "
    "~/.config/lorad/lorad.toml, else /etc/lorad/lorad.toml, else the defaults)",
)


JOB_HELP = "JOB is a job id or a token (the newest job with it)."


class _Group(click.Group):
    """Every command of the group gets --config as well, and says what JOB may be."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        config_option(cmd)
        if cmd.help and any(param.name == "job" for param in cmd.params):  # before the example
            cmd.help = cmd.help.replace("\n\n    \b\n", f"\n\n    {JOB_HELP}\n\n    \b\n", 1)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        """A damaged database is said in one line, with what to do, never as a traceback."""
        try:
            return super().invoke(ctx)
        except sqlite3.DatabaseError as error:
            if not is_damage(error):
                raise
            fail(damage_line(ctx.ensure_object(Env).settings.db_path, error))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(package_name="lorad")
@click.pass_context
def main(ctx: click.Context) -> None:
    """lorad: a folder of photos in, a trained LoRA out."""
    ctx.ensure_object(Env)


@main.command()
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              default=None, help="overrides log_level of the configuration")
@pass_env
def run(env: Env, log_level: str | None) -> None:
    """Run the daemon in the foreground (logs go to stderr).

    \b
    Examples:
      lorad -c /etc/lorad/lorad.toml run
      lorad run --log-level DEBUG
    """
    from lorad.daemon.loop import Daemon
    from lorad.errors import CannotStart
    from lorad.setup.where import startup_lines
    from lorad.system import logs
    from lorad.system.pidlock import AlreadyRunning

    settings = env.settings
    logs.setup(log_level or settings.log_level)
    for line in startup_lines(env.config, settings):
        logs.log.info("%s", line)
    try:
        sys.exit(Daemon(settings, env.config).run())
    except (AlreadyRunning, CannotStart) as error:
        fail(str(error))


# ---- looking at jobs --------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@click.option("--watch", "-w", is_flag=True, help="keep refreshing (Ctrl-C to leave)")
@click.option("--active", is_flag=True, help="only the jobs still queued or running")
@click.option("--recent", type=click.IntRange(min=0), default=None, metavar="N",
              help="the active jobs and the N most recently finished ones")
@pass_env
def status(env: Env, as_json: bool, watch: bool, active: bool, recent: int | None) -> None:
    """Every job on one line each: the running ones first, then the queued ones, then the
    finished ones, newest first. On a terminal only as many as fit; a last line counts the
    others. A job's full reason is in `lorad show JOB`.

    \b
    Examples:
      lorad status --watch
      lorad status --active
      lorad status --recent 5
      lorad status --json
    """
    settings = env.settings
    if not settings.db_path.exists():
        click.echo("[]" if as_json else f"no jobs yet (no database at {settings.db_path})")
        return
    store = env.store()
    if as_json:
        kept = {j.id for j in ordered(store.jobs(), active_only=active, recent=recent)}
        click.echo(json.dumps([job_summary(j) for j in store.jobs() if j.id in kept], indent=2))
        return
    print_status(console, store.jobs, watch=watch, active_only=active, recent=recent)


@main.command()
@click.argument("job")
@click.option("--json", "as_json", is_flag=True)
@pass_env
def show(env: Env, job: str, as_json: bool) -> None:
    """One job in full: settings, training, events, notifications.

    \b
    Examples:
      lorad show 12
      lorad show alice --json
    """
    store = env.store()
    with store.snapshot():
        found = env.find(store, job)
        events = store.events(found.id)
        notes = store.notifications(found.id)  # targets are kept as Apprise privacy URLs only
    if as_json:
        data = {**found.as_dict(), "events": [e.__dict__ for e in events],
                "notifications": notes}
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console.print(job_text(found, events, notes), highlight=False)


@main.command()
@click.argument("job")
@pass_env
def command(env: Env, job: str) -> None:
    """The exact training command of a job's running (or last) run, one argument a line; for a
    job that has not trained yet, a preview from the current configuration. What it is goes to
    stderr, so stdout is the command alone.

    \b
    Example:
      lorad command 12
    """
    from lorad.context import Context
    from lorad.errors import StageFailed
    from lorad.training.stage import shown_command

    store, found = env.job(job)
    if not found.token or not found.settings.get("token"):
        fail(f"job {found.id} has not been prepared yet; its command is not known")
    try:
        argv, what = shown_command(Context(env.settings, store), found)
    except StageFailed as error:
        fail(str(error))
    click.echo(f"# {what}", err=True)
    click.echo("\n".join(argv))


@main.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until the job ends")
@click.option("--lines", "-n", type=int, default=0, help="only the last N lines")
@pass_env
def logs(env: Env, job: str, follow: bool, lines: int) -> None:
    """Print a job's train.log (the trainer's output).

    \b
    Examples:
      lorad logs 12 -f
      lorad logs alice -n 50
    """
    from lorad.workspace import JobPaths

    store, found = env.job(job)
    path = JobPaths.of(env.settings, found).train_log
    if not path.exists() and not follow:
        fail(f"job {found.id} has no training log yet ({path}); lorad show {found.id} lists its "
             "events")
    position = 0
    if path.exists():
        text = path.read_text(encoding="utf-8", errors="replace")
        shown = text.splitlines()[-lines:] if lines else text.splitlines()
        if shown:
            click.echo("\n".join(shown))
        position = len(text.encode("utf-8"))
    while follow:
        if path.exists() and path.stat().st_size > position:
            with open(path, "rb") as handle:
                handle.seek(position)
                chunk = handle.read()
            position += len(chunk)
            click.echo(chunk.decode("utf-8", errors="replace"), nl=False)
        elif store.get(found.id).is_final:
            break
        time.sleep(0.5)


# ---- acting on jobs ---------------------------------------------------------------------
def _act(env: Env, ref: str, action: Callable[[Store, Job], Any],
         done: Callable[[Any], str]) -> None:
    """Run one action on a job; print what it did, or its reason for refusing."""
    store, found = env.job(ref)
    try:
        result = action(store, found)
    except RequestError as error:
        fail(str(error))
    console.print(escape(done(result)), highlight=False)


@main.command()
@click.argument("job")
@pass_env
def retry(env: Env, job: str) -> None:
    """Run a failed job again from the stage it failed in.

    \b
    Example:
      lorad retry 12
    """
    _act(env, job, actions.retry, lambda j: f"job {j.id} queued again at the {j.stage} stage")


@main.command()
@click.argument("job")
@pass_env
def cancel(env: Env, job: str) -> None:
    """Stop a job (a running training gets SIGTERM, then SIGKILL).

    \b
    Example:
      lorad cancel 12
    """
    _act(env, job, actions.cancel, lambda j: f"job {j.id} cancelled" if j.state == "cancelled"
         else f"job {j.id}: cancel requested; the running {j.stage} stage stops within seconds "
              "(finished epochs are kept)")


@main.command()
@click.argument("job")
@pass_env
def recaption(env: Env, job: str) -> None:
    """Caption a job's images again with the current settings.

    \b
    Example:
      lorad recaption 12
    """
    _act(env, job, actions.recaption, lambda j: f"job {j.id} queued for captioning")


@main.command()
@click.argument("job")
@click.option("--epochs", type=int, required=True, help="how many more epochs")
@click.option("--from", "from_epoch", type=int, default=None,
              help="start from this epoch (default: the newest)")
@pass_env
def resume(env: Env, job: str, epochs: int, from_epoch: int | None) -> None:
    """Train an undertrained LoRA for more epochs (results land in the same outbox folder).

    \b
    Examples:
      lorad resume 12 --epochs 2
      lorad resume alice --epochs 3 --from 4
    """
    from lorad.context import Context

    _act(env, job, lambda store, found: actions.resume(Context(env.settings, store), found, epochs,
                                                     from_epoch),
         lambda child: f"job {child.id} queued: epochs {child.train['start_epoch'] + 1} to "
                       f"{child.train['target']} of {child.token}, from epoch "
                       f"{child.train['start_epoch']}")


@main.command()
@click.argument("job")
@click.option("--epoch", type=int, required=True, help="the epoch to use")
@pass_env
def pick(env: Env, job: str, epoch: int) -> None:
    """Make an earlier epoch the LoRA (<token>.safetensors and the copy_to folders).

    \b
    Example:
      lorad pick 12 --epoch 4
    """
    from lorad.context import Context

    _act(env, job, lambda store, found: actions.pick(Context(env.settings, store), found, epoch),
         lambda final: f"epoch {epoch} is now {final}")


# ---- without the daemon -----------------------------------------------------------------
@main.command()
@click.argument("subject_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="where the dataset is written")
@click.option("--token", default=None, help="the LoRA token (default: lora.toml, else the "
                                            "folder name)")
@click.option("--no-caption", is_flag=True, help="skip BLIP (user captions are still used)")
@click.option("--zip", "make_zip", is_flag=True, help="also write dataset.zip for hosted "
                                                       "trainers")
@pass_env
def prepare(env: Env, subject_dir: Path, out: Path, token: str | None, no_caption: bool,
            make_zip: bool) -> None:
    """Check, convert, lay out and caption one subject folder; exit 1 if it is refused.

    \b
    Example:
      lorad prepare ~/photos/alice --out /tmp/alice-dataset --zip
    """
    from lorad.dataset.oneshot import OneShotError, prepare_folder

    try:
        result = prepare_folder(env.config, subject_dir, out, token=token,
                                caption=not no_caption, make_zip=make_zip,
                                echo=lambda line: console.print(escape(line), highlight=False))
    except OneShotError as error:
        fail(str(error))
    sys.exit(0 if result.usable else 1)


main.add_command(init)
main.add_command(doctor)
main.add_command(kohya)
main.add_command(web)
main.add_command(db)

if __name__ == "__main__":
    main()
