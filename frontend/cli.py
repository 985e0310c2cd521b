"""``python -m frontend``: argv and ZASGI_* environment -> FrontendConfig -> serve().

The only module that configures logging or picks the event loop (uvloop).
Every option can also come from ``ZASGI_<OPTION>`` (dashes as underscores),
so containers need no wrapper script. Any bad option, unusable fd or
unbindable address ends the process with one line on stderr and a non-zero
status, never a traceback.

Process contract (used by ``zasgi run`` and the tests):
* stdout gets exactly one line once HTTP listens and the backend is bound:
  ``zasgi-ready frontend http://HOST:PORT backend=ENDPOINT [admin=http://HOST:PORT]``
  (admin= only while the admin endpoint is on); the same line goes to
  ``--ready-fd`` when given, followed there by ``zasgi-workers PID...`` each
  time the set of READY workers changes (``zasgi run`` waits for every worker
  to join a new front end before retiring the old one; appserver/fleet.py);
* SIGUSR1: retire (frontend/retire.py: a successor serves the port), exit 0;
* ``--parent-fd``: the read end of a pipe whose write end the parent holds;
  when it becomes readable (the parent wrote, or died: EOF) we shut down;
* SIGTERM/SIGINT: graceful shutdown, exit 0; a second one cuts the wait short.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import click

from wire import frontend_options as fo
from wire import gcpolicy
from wire import logsetup
from wire.heap import tune_malloc

from . import access_log
from . import config as cfg
from .listen import ListenError
from .server import serve

EXIT_USAGE = 2
EXIT_RUNTIME = 1


def _params() -> list[click.Parameter]:
    # Every option comes from the one table (wire/frontend_options.py); none is declared here.
    return [opt.click_option() for opt in fo.OPTIONS]


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, params=_params()
)
def command(**options: Any) -> None:
    """The zasgi front end: HTTP in, wire events to app-server workers over ZeroMQ."""
    global _json_errors
    _json_errors = options["log_format"] == "json" and options["log_config"] is None
    config = build_config(options)
    for name in ("ready_fd", "parent_fd", "fd"):
        fd = options[name]
        if fd is not None:
            _check_fd(fd, "--" + name.replace("_", "-"))
    _setup_logging(options["log_level"], options["log_format"], options["log_config"])
    _run(_main(config, ready_fd=options["ready_fd"], parent_fd=options["parent_fd"]))


def build_config(options: dict[str, Any]) -> cfg.FrontendConfig:
    try:
        return cfg.FrontendConfig(
            host=options["host"],
            port=options["port"],
            root_path=options["root_path"],
            uds=options["uds"],
            uds_mode=options["uds_mode"],
            fd=options["fd"],
            backlog=options["backlog"],
            backend=cfg.Backend(
                endpoint=options["backend"] or cfg.default_backend(options["port"]),
                insecure=options["insecure"],
                **_curve(options),
                window_bytes=options["window_bytes"],
                max_payload_bytes=options["max_payload_bytes"],
            ),
            http=cfg.HttpLimits(
                max_line_bytes=options["limit_max_line_size"],
                max_field_bytes=options["limit_max_header_size"],
                max_headers=options["limit_max_headers"],
                keepalive_timeout_s=options["timeout_keep_alive"],
                max_body_bytes=options["limit_max_body_size"],
                header_timeout_s=options["timeout_request_header"],
                max_connections=options["limit_concurrency"],
                early_hints=options["early_hints"],
            ),
            queue=cfg.Queue(
                size=options["queue_size"],
                timeout_s=options["queue_timeout"],
                target_s=options["queue_target"] or None,
                interval_s=options["queue_interval"],
            ),
            heartbeat=cfg.Heartbeat(
                interval_ms=options["heartbeat_ms"], liveness=options["liveness"],
                blocked_timeout_s=options["timeout_worker_blocked"] or None,
            ),  # fmt: skip
            websocket=cfg.WebSocket(
                max_message_bytes=options["ws_max_size"],
                ping_interval_s=options["ws_ping_interval"],
                ping_timeout_s=options["ws_ping_timeout"],
                per_message_deflate=options["ws_per_message_deflate"],
            ),
            shutdown_timeout_s=options["shutdown_timeout"],
            tls=cfg.Tls(
                certfile=options["ssl_certfile"],
                keyfile=options["ssl_keyfile"],
                keyfile_password=options["ssl_keyfile_password"],
                ca_certs=options["ssl_ca_certs"],
                cert_reqs=options["ssl_cert_reqs"],
                ciphers=options["ssl_ciphers"],
            ),
            proxy=cfg.Proxy(enabled=options["proxy_headers"], trusted=options["forwarded_allow_ips"]),
            admin=_admin(options),
            headers=cfg.Headers(
                server=options["server_header"],
                date=options["date_header"],
                extra=cfg.Headers.parse(options["header"]),
            ),
            access_log=options["access_log"],
            log_format=options["log_format"],
            http2=cfg.http2_limits(options["http2"], options["http2_max_concurrent_streams"]),
            reuse_port=options["reuse_port"],
            name=options["name"] or "",
            handoff_path=options["handoff_path"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _admin(options: dict[str, Any]) -> cfg.Admin | None:
    """The admin endpoint; a defaulted port (9000, or any free one beside --port 0) may be busy."""
    if not options["admin"]:
        return None
    port = options["admin_port"]
    required = port is not None
    if port is None:
        port = 9000 if options["port"] else 0
    return cfg.Admin(host=options["admin_host"], port=port, required=required,
                     fleet_fd=options["admin_fd"], peers_path=options["admin_peers"])  # fmt: skip


def _curve(options: dict[str, Any]) -> dict[str, Any]:
    """The backend's CurveZMQ settings; key files are read here, once (a bad one: a usage error)."""
    secret, authorized = options["curve_secret_key"], options["authorized_keys"]
    if (secret is None) != (authorized is None):
        raise click.UsageError("CurveZMQ needs both --curve-secret-key and --authorized-keys, or neither")
    if secret is None:
        return {}
    from wire import curve  # imports zmq; only when asked for

    try:
        curve.load_authorized(authorized)
        return {"curve": curve.load_server_keys(secret), "authorized_keys": authorized}
    except curve.KeyFileError as exc:
        raise click.UsageError(str(exc)) from None


def _check_fd(fd: int, option: str) -> None:
    try:
        os.fstat(fd)
    except OSError as exc:
        raise click.UsageError(f"{option} {fd}: {exc.strerror}") from None


def _setup_logging(level: str, log_format: str, log_config: str | None) -> None:
    try:
        access_log.configure(level, log_format, log_config)
    except logsetup.LogConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _run(coro: Any) -> None:
    tune_malloc()  # large body buffers reuse their pages (wire/heap.py)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _main(config: cfg.FrontendConfig, *, ready_fd: int | None, parent_fd: int | None) -> None:
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()
    if parent_fd is not None:

        def parent_gone() -> None:
            loop.remove_reader(parent_fd)
            logging.getLogger(__name__).info("parent fd %d readable: shutting down", parent_fd)
            shutdown.set()

        loop.add_reader(parent_fd, parent_gone)

    def ready(line: str) -> None:
        gcpolicy.settle(gcpolicy.FRONTEND_YOUNG)
        if ready_fd is None:  # a parent reads it from the fd: not a line for users to see
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        else:
            report(line)
            if reporting:
                os.set_blocking(ready_fd, False)  # later reports never block the loop: a full pipe ends them

    reporting = ready_fd is not None

    def report(line: str) -> None:
        """A line to --ready-fd; a reader gone (EPIPE) or stuck (a full pipe) ends the reports."""
        nonlocal reporting
        if not reporting or ready_fd is None:
            return
        try:
            os.write(ready_fd, (line + "\n").encode())
        except OSError:
            reporting = False
            os.close(ready_fd)

    try:
        await serve(config, ready=ready, shutdown=shutdown, report=report if reporting else None)
    finally:
        if reporting and ready_fd is not None:
            os.close(ready_fd)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click in non-standalone mode so every failure is one line."""
    try:
        command.main(args=argv, prog_name="python -m frontend", standalone_mode=False)
    except click.ClickException as exc:
        _error(exc.format_message())
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(EXIT_RUNTIME)
    except KeyboardInterrupt:
        sys.exit(EXIT_RUNTIME)
    except ListenError as exc:  # names the address; a boot error
        _error(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:  # bind failures and the like: one line, not a traceback
        _error(_describe(exc))
        sys.exit(EXIT_RUNTIME)


def _error(message: str) -> None:
    """The one line a failed start ends with; a JSON record once --log-format json was read."""
    line = f"frontend: error: {message}"
    click.echo(logsetup.json_line(line, level="error", logger="frontend") if _json_errors else line, err=True)


_json_errors = False  # set once the options are read: --log-format json


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text
