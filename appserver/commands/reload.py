"""``zasgi reload``: a rolling restart of a running ``run``/``appserver`` (SIGHUP to its supervisor)."""

from __future__ import annotations

import sys

import click

from ..control import FRONTEND_ROLL_SIGNAL, RELOAD_SIGNAL, PidFileError, send_reload


@click.command("reload")
@click.option("--pid-file", default=None, envvar="ZASGI_PID_FILE", type=click.Path(dir_okay=False),
              help="The pid file given to `zasgi run` / `zasgi appserver`.")  # fmt: skip
@click.option(
    "--frontends",
    is_flag=True,
    help="Replace `zasgi run`'s front ends instead, one at a time, new one first (SIGUSR2).",
)
def command(pid_file: str | None, frontends: bool) -> None:
    """Rolling restart: replace every worker, new ones first (SIGHUP to the supervisor); with
    --frontends, every front end of `zasgi run` (SIGUSR2)."""
    if not pid_file:
        click.echo("zasgi reload: no pid file: pass --pid-file PATH or set ZASGI_PID_FILE "
                   "(the same one `zasgi run/appserver --pid-file` writes)", err=True)  # fmt: skip
        sys.exit(1)
    try:
        pid = send_reload(pid_file, FRONTEND_ROLL_SIGNAL if frontends else RELOAD_SIGNAL)
    except PidFileError as exc:
        click.echo(f"zasgi reload: {exc}", err=True)
        sys.exit(1)
    what = "front-end roll requested (SIGUSR2" if frontends else "reload requested (SIGHUP"
    click.echo(f"zasgi: {what} sent to pid {pid})")
