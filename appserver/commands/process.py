"""What ``run`` and ``appserver`` do once configured: set up logging and the CPU policy, hold the
pid file, start the front end (run) and the workers, print the banner, run until stopped."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from .. import sched
from ..control import PidFile, PidFileError
from ..supervisor import EXIT_APP_LOAD, EXIT_BOOT, Supervisor, SupervisorError

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"

Banner = Any  # (url, ready-line facts) -> text


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def ready_facts(line: str) -> tuple[str, dict[str, str]]:
    """``zasgi-ready frontend URL key=value...`` -> (URL, {key: value})."""
    words = line.split()
    if len(words) < 3 or words[:2] != ["zasgi-ready", "frontend"]:
        return line, {}
    facts = dict(w.split("=", 1) for w in words[3:] if "=" in w)
    return words[2], facts


def fleet_facts(ready: list[tuple[str, dict[str, str]]]) -> tuple[str, dict[str, str]]:
    """The front ends' ready lines as one banner: the URL, and each fact (backend, admin) listed
    once per front end."""
    url, facts = ready[0]
    if len(ready) == 1:
        return url, facts
    keys = dict.fromkeys(k for _, f in ready for k in f)
    return url, {k: " ".join(f.get(k, "-") for _, f in ready) for k in keys}


def supervise(supervisor: Supervisor, *, banner: Banner) -> int:
    """Start (front end, then) workers, print the ready line, run until stopped."""
    if supervisor.pool.sched_batch:
        sched.use_batch_scheduling()  # before any thread or child starts: they all inherit it
    supervisor.install_signals()  # before the pid file: a reload must never meet the default SIGHUP
    pid_file = PidFile(supervisor.pool.pid_file) if supervisor.pool.pid_file else None
    try:
        if pid_file is not None:
            pid_file.acquire()
    except PidFileError as exc:
        click.echo(f"zasgi: {exc}", err=True)
        return EXIT_BOOT
    try:
        return _start_and_run(supervisor, banner=banner)
    finally:
        if pid_file is not None:
            pid_file.release()


def _start_and_run(supervisor: Supervisor, *, banner: Banner) -> int:
    try:
        url, facts = "", {}
        if supervisor.fleet is not None:
            url, facts = fleet_facts([ready_facts(line) for line in supervisor.start_fleet()])
        supervisor.start_workers()
        supervisor.wait_ready()
    except SupervisorError as exc:
        if exc.exit_code != EXIT_APP_LOAD:  # the worker already said why, in one line
            click.echo(f"zasgi: {exc}", err=True)
        supervisor.stop()
        return exc.exit_code
    click.echo(banner(url, facts))
    sys.stdout.flush()
    return supervisor.run()
