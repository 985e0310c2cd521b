"""``zasgi reload``: a rolling restart of a running ``run``/``appserver`` (SIGHUP to its supervisor)."""

from __future__ import annotations

import sys

import click

from ..control import PidFileError, send_reload


@click.command("reload")
@click.option("--pid-file", default=None, envvar="ZASGI_PID_FILE", type=click.Path(dir_okay=False),
              help="The pid file given to `zasgi run` / `zasgi appserver`.")  # fmt: skip
def command(pid_file: str | None) -> None:
    """Rolling restart: replace every worker, new ones first (SIGHUP to the supervisor)."""
    if not pid_file:
        click.echo("zasgi reload: no pid file: pass --pid-file PATH or set ZASGI_PID_FILE "
                   "(the same one `zasgi run/appserver --pid-file` writes)", err=True)  # fmt: skip
        sys.exit(1)
    try:
        pid = send_reload(pid_file)
    except PidFileError as exc:
        click.echo(f"zasgi reload: {exc}", err=True)
        sys.exit(1)
    click.echo(f"zasgi: reload requested (SIGHUP sent to pid {pid})")
