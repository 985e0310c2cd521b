"""``zasgi reload``: a rolling restart of a running ``run``/``appserver`` (SIGHUP to its supervisor),
by default waiting for its outcome, so a deploy script (and ``systemctl reload``) can tell a
failed reload (the old workers still serving) from a done one.

The supervisor writes each roll's outcome next to its pid file (``PIDFILE.reload``,
control.py); we note the last one seen, send SIGHUP, and wait for a newer one.
"""

from __future__ import annotations

import sys
import time

import click

from ..control import (
    FRONTEND_ROLL_SIGNAL,
    RELOAD_SIGNAL,
    PidFileError,
    read_reload_result,
    running_pid,
    send_reload,
)

POLL_S = 0.1


@click.command("reload")
@click.option(
    "--pid-file",
    default=None,
    envvar="ZASGI_PID_FILE",
    type=click.Path(dir_okay=False),
    show_envvar=True,
    help="The pid file given to `zasgi run` / `zasgi appserver`.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the outcome: exit 0 once every worker is replaced, 1 with the reason if "
    "the reload failed (the old workers keep serving).",
)
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds --wait waits for the outcome.")  # fmt: skip
@click.option(
    "--frontends",
    is_flag=True,
    help="Replace `zasgi run`'s front ends instead, one at a time, new one first (SIGUSR2; "
    "not waited for: its log tells the outcome).",
)
def command(pid_file: str | None, wait: bool, timeout: float, frontends: bool) -> None:
    """Rolling restart: replace every worker, new ones first (SIGHUP to the supervisor); with
    --frontends, every front end of `zasgi run` (SIGUSR2)."""
    if not pid_file:
        _fail("no pid file: pass --pid-file PATH or set ZASGI_PID_FILE "
              "(the same one `zasgi run/appserver --pid-file` writes)")  # fmt: skip
    assert pid_file is not None
    before = read_reload_result(pid_file) or {}
    try:
        pid = send_reload(pid_file, FRONTEND_ROLL_SIGNAL if frontends else RELOAD_SIGNAL)
    except PidFileError as exc:
        _fail(str(exc))
    if frontends:  # (a front-end roll writes no outcome file)
        click.echo(f"zasgi: front-end roll requested (SIGUSR2 sent to pid {pid})")
        return
    seen = before.get("seq", 0) if before.get("pid") == pid else 0  # (another run's file: none seen)
    if not wait:
        click.echo(f"zasgi: reload requested (SIGHUP sent to pid {pid})")
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = read_reload_result(pid_file)
        if result is not None and result.get("pid") == pid and result.get("seq", 0) > seen:
            if result.get("ok"):
                click.echo(f"zasgi: reload complete (pid {pid}): {result.get('reason', '')}")
                return
            _fail(f"reload failed (pid {pid}): {result.get('reason', 'no reason given')}; "
                  "the old workers keep serving")  # fmt: skip
        try:
            running_pid(pid_file)
        except PidFileError as exc:
            _fail(f"the supervisor went away during the reload: {exc}")
        time.sleep(POLL_S)
    _fail(f"no outcome within {timeout:g}s (pid {pid}); see its log")


def _fail(message: str) -> None:
    click.echo(f"zasgi reload: {message}", err=True)
    sys.exit(1)
