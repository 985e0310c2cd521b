"""The ``zasgi`` command: ``run`` (everything on one machine), ``frontend``, ``appserver``.

Side effects (logging setup, processes) live here and in the supervisor only.
Every option also reads a ``ZASGI_*`` environment variable so containers need
no wrapper script. ``zasgi frontend`` hands its arguments to
``python -m frontend``: appserver never imports frontend.

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 boot error (front end or
worker could not start, handshake refused), 4 the app could not be loaded or
its lifespan startup failed.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from .config import WorkerConfig
from .supervisor import EXIT_APP_LOAD, Supervisor, SupervisorError

LOG_LEVELS = click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False)
LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def _check_app(ctx: click.Context, param: click.Parameter, value: str) -> str:
    module, _, attr = value.partition(":")
    if not module or not attr:
        raise click.BadParameter(f"{value!r} must look like 'module:attribute' (e.g. 'main:app')")
    return value


def _worker_options(func: Any) -> Any:
    """Options shared by ``run`` and ``appserver`` (one spelling, one env var each)."""
    options = [
        click.argument("app", envvar="ZASGI_APP", callback=_check_app),
        click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 512),
                     envvar="ZASGI_WORKERS", help="Worker processes."),
        click.option("--app-dir", default=".", show_default=True, envvar="ZASGI_APP_DIR",
                     help="Directory put first on sys.path to import APP from."),
        click.option("--factory", is_flag=True, envvar="ZASGI_FACTORY",
                     help="APP names a callable that returns the ASGI app."),
        click.option("--lifespan", type=click.Choice(["auto", "on", "off"]), default="auto",
                     show_default=True, envvar="ZASGI_LIFESPAN"),
        click.option("--capacity", default=256, show_default=True, type=click.IntRange(1),
                     envvar="ZASGI_CAPACITY", help="Concurrent HTTP requests per worker."),
        click.option("--timeout-graceful-shutdown", "graceful_timeout", default=30.0, show_default=True,
                     type=click.FloatRange(0), envvar="ZASGI_TIMEOUT_GRACEFUL_SHUTDOWN",
                     help="Seconds a draining worker lets in-flight requests finish."),
        click.option("--log-level", default="info", show_default=True, type=LOG_LEVELS, envvar="ZASGI_LOG_LEVEL"),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _worker_config(app: str, connect: tuple[str, ...], **opts: Any) -> WorkerConfig:
    try:
        return WorkerConfig(
            app=app,
            app_dir=str(Path(opts["app_dir"]).resolve()),
            connect=connect,
            capacity=opts["capacity"],
            graceful_timeout_s=opts["graceful_timeout"],
            factory=opts["factory"],
            lifespan=opts["lifespan"],
            log_level=opts["log_level"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _frontend_ws_args(opts: dict[str, Any]) -> list[str]:
    """The WebSocket options the user gave, handed to the front end (it owns their defaults)."""
    args: list[str] = []
    for name in ("ws_max_size", "ws_ping_interval", "ws_ping_timeout"):
        if opts.get(name) is not None:
            args += ["--" + name.replace("_", "-"), str(opts.pop(name))]
        opts.pop(name, None)
    deflate = opts.pop("ws_per_message_deflate", None)
    if deflate is not None:
        args.append("--ws-per-message-deflate" if deflate else "--no-ws-per-message-deflate")
    return args


def _supervise(supervisor: Supervisor, *, banner: str | None) -> int:
    """Start (front end, then) workers, print the ready line, run until stopped."""
    supervisor.install_signals()
    try:
        url = None
        if supervisor.frontend_argv is not None:
            line = supervisor.start_frontend()
            url = line.split()[2] if line.startswith("zasgi-ready frontend ") else line
        supervisor.start_workers()
        supervisor.wait_ready()
    except SupervisorError as exc:
        if exc.exit_code != EXIT_APP_LOAD:  # the worker already said why, in one line
            click.echo(f"zasgi: {exc}", err=True)
        supervisor.stop()
        return exc.exit_code
    if banner:
        click.echo(banner.format(url=url), nl=True)
        sys.stdout.flush()
    return supervisor.run()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zasgi")
def main() -> None:
    """zasgi: an ASGI server split into an HTTP front end and app-server workers over ZeroMQ."""


@main.command()
@_worker_options
@click.option("--host", default="127.0.0.1", show_default=True, envvar="ZASGI_HOST")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), envvar="ZASGI_PORT")
@click.option("--root-path", default="", envvar="ZASGI_ROOT_PATH", help="ASGI root_path (mounted under a prefix).")
@click.option("--backend", default=None, envvar="ZASGI_BACKEND",
              help="ZeroMQ endpoint between the tiers [default: a private ipc:// socket].")  # fmt: skip
@click.option("--ws-max-size", type=click.IntRange(1), default=None, envvar="ZASGI_WS_MAX_SIZE",
              help="Largest WebSocket message in bytes [front end default: 16 MiB].")
@click.option("--ws-ping-interval", type=click.FloatRange(0), default=None, envvar="ZASGI_WS_PING_INTERVAL")
@click.option("--ws-ping-timeout", type=click.FloatRange(0), default=None, envvar="ZASGI_WS_PING_TIMEOUT")
@click.option("--ws-per-message-deflate/--no-ws-per-message-deflate", default=None,
              envvar="ZASGI_WS_PER_MESSAGE_DEFLATE")  # fmt: skip
def run(app: str, host: str, port: int, root_path: str, backend: str | None, **opts: Any) -> None:
    """Serve APP ('module:attribute') with one front end and N workers on this machine."""
    _setup_logging(opts["log_level"])
    if backend is None:
        runtime = Path(tempfile.gettempdir()) / f"zasgi-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        backend = f"ipc://{runtime}/run-{os.getpid()}.sock"
    config = _worker_config(app, (backend,), **opts)
    frontend_argv = ["--host", host, "--port", str(port), "--backend", backend,
                     "--root-path", root_path, "--log-level", opts["log_level"], *_frontend_ws_args(opts)]  # fmt: skip
    supervisor = Supervisor(config=config, workers=opts["workers"], frontend_argv=frontend_argv,
                            graceful_timeout_s=opts["graceful_timeout"])  # fmt: skip
    workers = opts["workers"]
    banner = f"zasgi running on {{url}} ({workers} worker{'s' if workers > 1 else ''}); Ctrl-C to stop"
    sys.exit(_supervise(supervisor, banner=banner))


@main.command()
@_worker_options
@click.option("--connect", "connect", multiple=True, required=True, envvar="ZASGI_CONNECT",
              help="Front-end backend endpoint, e.g. tcp://10.0.0.5:7000 (repeatable; env: space-separated).")  # fmt: skip
def appserver(app: str, connect: tuple[str, ...], **opts: Any) -> None:
    """Run N app-server workers for APP, connected to every --connect front end."""
    _setup_logging(opts["log_level"])
    config = _worker_config(app, connect, **opts)
    supervisor = Supervisor(config=config, workers=opts["workers"], graceful_timeout_s=opts["graceful_timeout"])
    banner = f"zasgi appserver ready: {opts['workers']} worker(s) connected to {' '.join(connect)}"
    sys.exit(_supervise(supervisor, banner=banner))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def frontend(args: tuple[str, ...]) -> None:
    """Run a front end (HTTP listener + backend endpoint); see `zasgi frontend --help`."""
    os.execv(sys.executable, [sys.executable, "-m", "frontend", *args])


if __name__ == "__main__":
    main()
