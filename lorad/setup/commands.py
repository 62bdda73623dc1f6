"""The commands of a first start, `lorad init`, `lorad kohya install` and `lorad doctor`: parsing
and printing over lorad.setup.init, lorad.training.kohya.install and lorad.doctor."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lorad.settings import user_config_path
from lorad.setup.init import InitError, write_config
from lorad.setup.tomledit import set_key, toml_string
from lorad.training.kohya import install as kohya_install


def stop(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="replace an existing lorad.toml")
def init(folder: Path | None, force: bool) -> None:
    """Write a commented lorad.toml with what this machine has (default: ~/.config/lorad/).

    \b
    Examples:
      lorad init
      lorad init /etc/lorad --force
    """
    folder = folder or user_config_path().parent
    try:
        written = write_config(folder, force=force)
    except (InitError, OSError) as error:
        stop(str(error))
    click.echo(f"wrote {written.path}")
    for note in written.notes:
        click.echo(f"  {note}")
    config = "" if folder == user_config_path().parent else f" -c {written.path}"
    click.echo(f"next: lorad{config} doctor, then lorad{config} run")


@click.group()
def kohya() -> None:
    """Kohya's sd-scripts, the trainer."""


@kohya.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ref", default=kohya_install.REF, show_default=True,
              help="the sd-scripts commit (or tag, branch) to check out")
@click.option("--repo", default=kohya_install.REPO, show_default=True, help="where to clone from")
@click.option("--torch", "torch_spec", default=kohya_install.TORCH, show_default=True,
              help='pip requirements for torch ("" skips the torch step)')
@click.option("--write-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="set [kohya] sd_scripts and python in this lorad.toml")
def install(folder: Path, ref: str, repo: str, torch_spec: str, write_config: Path | None
            ) -> None:
    """Clone sd-scripts, make its venv, install torch and its requirements, check it starts.

    \b
    Examples:
      lorad kohya install ~/sd-scripts --write-config ~/.config/lorad/lorad.toml
      lorad kohya install /opt/sd-scripts --torch "torch==2.6.0 torchvision==0.21.0"
    """
    if write_config is not None and not write_config.is_file():
        stop(f"{write_config} does not exist; write it first with lorad init")
    inst = kohya_install.Install(folder.absolute(), repo, ref, torch_spec)
    try:
        kohya_install.install(inst, click.echo)
    except kohya_install.InstallError as error:
        stop(str(error))
    if write_config is None:
        click.echo("put these lines into lorad.toml (or use --write-config FILE):\n"
                   + inst.kohya_lines())
        return
    text = write_config.read_text()
    for key, value in (("sd_scripts", inst.folder), ("python", inst.python)):
        text = set_key(text, "kohya", key, toml_string(value))
    write_config.write_text(text)
    click.echo(f"set [kohya] sd_scripts and python in {write_config}; reload a running lorad "
               "(SIGHUP, systemctl reload lorad) and its waiting jobs train")


@click.command()
@click.option("--send-test", is_flag=True, help="also send a test notification")
@click.pass_context
def doctor(ctx: click.Context, send_test: bool) -> None:
    """Check the configuration and the machine; exit 1 if anything fails.

    \b
    Example:
      lorad doctor --send-test
    """
    from rich.console import Console
    from rich.markup import escape

    from lorad.doctor.run import run_checks

    console = Console(soft_wrap=True)
    colours = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
    worst = "OK"
    for check in run_checks(ctx.find_root().obj.config, send_test=send_test):
        # One line per check, never wrapped (messages name keys like [models.sd15]: no markup).
        console.print(f"[{colours[check.status]}]{check.status:4}[/] {escape(check.name)}: "
                      f"{escape(check.message)}", highlight=False, soft_wrap=True)
        if check.status == "FAIL":
            worst = "FAIL"
    sys.exit(1 if worst == "FAIL" else 0)
