"""What ``run`` and ``appserver`` do once configured: set up logging and the CPU policy, hold the
pid file, start the front end (run) and the workers, print the banner, run until stopped."""

from __future__ import annotations

import sys
from typing import Any

import click

from wire import logsetup

from .. import sched
from ..control import PidFile, PidFileError, remove_reload_result
from ..supervisor import EXIT_APP_LOAD, EXIT_BOOT, Supervisor, SupervisorError

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"

Banner = Any  # (url, ready-line facts) -> text


def setup_logging(level: str, log_format: str = "text", log_config: str | None = None) -> None:
    """The supervisor's logging: what its workers and front end do too (wire/logsetup.py)."""
    global _json
    _json = log_format == "json" and log_config is None
    try:
        logsetup.configure(level, log_format, LOG_FORMAT, log_config=log_config)
    except logsetup.LogConfigError as exc:
        raise click.UsageError(str(exc)) from None


_json = False  # --log-format json: the banner is a JSON line too


def say(text: str, *, err: bool = False) -> None:
    """A line for the operator (banner, a boot error), as JSON under --log-format json."""
    if _json:
        text = logsetup.json_line(text, level="error" if err else "info")
    click.echo(text, err=err)


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
        say(f"zasgi: {exc}", err=True)
        return EXIT_BOOT
    try:
        if pid_file is not None:
            remove_reload_result(pid_file.path)  # a former run's outcomes are not ours
        return _start_and_run(supervisor, banner=banner)
    finally:
        if pid_file is not None:
            remove_reload_result(pid_file.path)
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
            say(f"zasgi: {exc}", err=True)
        supervisor.stop()
        return exc.exit_code
    say(banner(url, facts))
    sys.stdout.flush()
    return supervisor.run()
