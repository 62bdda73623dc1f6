"""`lorad web`: the command. Only click here; the web stack is loaded when it runs."""

from __future__ import annotations

import sys

import click

from lorad.errors import CannotStart


@click.command("web")
@click.option("--host", default=None, help="address to listen on (default: [web] host, "
                                           "127.0.0.1); any other needs [web] token or password")
@click.option("--port", type=int, default=None, help="port (default: [web] port, 8765)")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the web page: watch jobs, compare epochs, pick, resume, drop a folder.

    \b
    Examples:
      lorad web
      lorad web --host 0.0.0.0 --port 8080
    """
    from lorad.web.server import serve

    settings = ctx.find_root().obj.settings  # cli.Env: loads lorad.toml, or fails saying why
    try:
        serve(settings, host, port)
    except CannotStart as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
