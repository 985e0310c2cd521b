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
  ``--ready-fd`` (then closed) when given;
* ``--parent-fd``: the read end of a pipe whose write end the parent holds;
  when it becomes readable (the parent wrote, or died: EOF) we shut down;
* SIGTERM/SIGINT: graceful shutdown, exit 0; a second one cuts the wait short.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from wire import sched

from . import access_log
from . import config as cfg
from .server import serve

EXIT_USAGE = 2
EXIT_RUNTIME = 1


def _opt(*names: str, **kwargs: Any) -> Callable[[Any], Any]:
    env = "ZASGI_" + names[0].split("/")[0].lstrip("-").replace("-", "_").upper()
    return click.option(*names, envvar=env, show_envvar=True, **kwargs)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_opt("--host", default="127.0.0.1", show_default=True, help="HTTP listen address.")
@_opt(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="HTTP port; 0: any free port.",
)
@_opt(
    "--backend",
    default=None,
    help="ZeroMQ endpoint workers connect to [default: ipc:///tmp/zasgi-UID/frontend-PORT.sock].",
)
@_opt("--insecure", is_flag=True, help="Allow a non-loopback tcp:// backend without CurveZMQ.")
@_opt("--curve-secret-key", default=None, help="CurveZMQ: this front end's key_secret file (zasgi keygen).")
@_opt("--authorized-keys", default=None, help="CurveZMQ: directory of the workers' public .key files.")
@_opt("--root-path", default="", help="ASGI root_path (mount point behind a proxy).")
@_opt(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@_opt(
    "--log-format",
    type=click.Choice(cfg.LOG_FORMATS),
    default="text",
    show_default=True,
    help="text: access log in combined format; json: every log line (access included) as JSON.",
)
@_opt("--access-log/--no-access-log", default=True, show_default=True, help="One line per request (stdout).")
@_opt(
    "--sched-batch/--no-sched-batch", default=True, show_default=True,
    help="Run under Linux's SCHED_BATCH policy: fewer context switches per request (wire/sched.py).",
)  # fmt: skip
@_opt("--admin/--no-admin", default=True, show_default=True, help="Serve /healthz /readyz /metrics /workers.")
@_opt("--admin-host", default="127.0.0.1", show_default=True, help="Admin endpoint address.")
@_opt(
    "--admin-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Admin endpoint port; 0: any free port [default: 9000; any free port with --port 0].",
)
@_opt(
    "--queue-size",
    type=int,
    default=None,
    help="Requests that may wait for a worker; more get 503 at once [default: no bound but connections].",
)
@_opt(
    "--queue-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a request waits for a worker before 503, at most.",
)
@_opt(
    "--queue-target",
    type=float,
    default=0.25,
    show_default=True,
    help="Queueing delay target (CoDel): past it the queue serves newest first, and standing above it "
    "for --queue-interval it refuses (503) every request waiting longer. 0: off (FIFO, --queue-timeout).",
)
@_opt(
    "--queue-interval",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds the queue may stay above --queue-target (a burst draining) before it sheds.",
)
@_opt("--heartbeat-ms", type=int, default=1000, show_default=True)
@_opt("--liveness", type=int, default=3, show_default=True, help="Silent heartbeats before a worker is gone.")
@_opt(
    "--timeout-worker-blocked", type=click.FloatRange(0), default=0.0, show_default=True,
    help="Seconds a worker's event loop may stay blocked (a synchronous call in async code) before its "
    "requests get 504 and it is replaced; 0: never, the front end waits for it.",
)  # fmt: skip
@_opt("--window-bytes", type=int, default=2 * 1024 * 1024, show_default=True,
      help="Response window per stream: what one response may have in flight from its worker.")
@_opt("--max-payload-bytes", type=int, default=64 * 1024 * 1024, show_default=True)
@_opt("--limit-max-line-size", type=int, default=16 * 1024, show_default=True, help="Request line bytes.")
@_opt(
    "--limit-max-header-size", type=int, default=16 * 1024, show_default=True, help="Bytes per header field."
)
@_opt("--limit-max-headers", type=int, default=100, show_default=True, help="Header fields per request.")
@_opt("--limit-max-body-size", type=int, default=None, help="Request body bytes [default: unlimited].")
@_opt("--timeout-keep-alive", type=float, default=5.0, show_default=True, help="Idle keep-alive seconds.")
@_opt(
    "--timeout-request-header",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a request's head (and a TLS handshake) may take to arrive (slowloris); then 408 and close.",
)
@_opt(
    "--limit-concurrency",
    type=int,
    default=None,
    help="Client connections served at once; beyond it each gets 503 + Retry-After [default: no limit].",
)
@_opt("--ssl-certfile", default=None, help="TLS: certificate (chain) PEM file; enables https/wss.")
@_opt("--ssl-keyfile", default=None, help="TLS: private key PEM file [default: in --ssl-certfile].")
@_opt("--ssl-keyfile-password", default=None, help="TLS: password of an encrypted --ssl-keyfile.")
@_opt("--ssl-ca-certs", default=None, help="TLS: CA file that client certificates must chain to.")
@_opt(
    "--ssl-cert-reqs",
    type=click.IntRange(0, 2),
    default=0,
    show_default=True,
    help="TLS client certificates: 0 not asked, 1 optional, 2 required (ssl.CERT_*).",
)
@_opt("--ssl-ciphers", default=None, help="TLS: OpenSSL cipher list [default: OpenSSL's].")
@_opt(
    "--proxy-headers/--no-proxy-headers",
    default=True,
    show_default=True,
    help="Take client, scheme and host from Forwarded / X-Forwarded-* sent by a trusted proxy.",
)
@_opt(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    help="Comma-separated proxy addresses or networks whose proxy headers are trusted; '*' for all.",
)
@_opt(
    "--ws-max-size",
    type=int,
    default=16 * 1024 * 1024,
    show_default=True,
    help="Largest WebSocket message (bytes); a bigger one closes the connection with 1009.",
)
@_opt(
    "--ws-ping-interval", type=float, default=20.0, show_default=True, help="WebSocket ping seconds; 0: off."
)
@_opt(
    "--ws-ping-timeout",
    type=float,
    default=20.0,
    show_default=True,
    help="Seconds without a pong before a WebSocket is dropped.",
)
@_opt(
    "--ws-per-message-deflate/--no-ws-per-message-deflate",
    default=True,
    show_default=True,
    help="Offer permessage-deflate compression to WebSocket clients.",
)
@_opt(
    "--shutdown-timeout",
    "--timeout-graceful-shutdown",  # uvicorn's name
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get on SIGTERM.",
)
@_opt("--ready-fd", type=int, default=None, help="Also write the ready line to this fd, then close it.")
@_opt("--parent-fd", type=int, default=None, help="Shut down when this fd becomes readable (parent died).")
def command(**options: Any) -> None:
    """The zasgi front end: HTTP in, wire events to app-server workers over ZeroMQ."""
    config = build_config(options)
    for name in ("ready_fd", "parent_fd"):
        fd = options[name]
        if fd is not None:
            _check_fd(fd, "--" + name.replace("_", "-"))
    _setup_logging(options["log_level"], options["log_format"])
    if config.sched_batch:
        sched.use_batch_scheduling()  # before uvloop and ZeroMQ start their threads
    _run(_main(config, ready_fd=options["ready_fd"], parent_fd=options["parent_fd"]))


def build_config(options: dict[str, Any]) -> cfg.FrontendConfig:
    try:
        return cfg.FrontendConfig(
            host=options["host"],
            port=options["port"],
            root_path=options["root_path"],
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
            ),
            queue=cfg.Queue(
                size=options["queue_size"],
                timeout_s=options["queue_timeout"],
                target_s=options.get("queue_target", 0.25) or None,
                interval_s=options.get("queue_interval") or 2.0,
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
            access_log=options.get("access_log", True),
            log_format=options.get("log_format") or "text",
            sched_batch=options.get("sched_batch", True),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _admin(options: dict[str, Any]) -> cfg.Admin | None:
    """The admin endpoint; a defaulted port (9000, or any free one beside --port 0) may be busy."""
    if not options.get("admin", True):
        return None
    port = options.get("admin_port")
    required = port is not None
    if port is None:
        port = 9000 if options["port"] else 0
    return cfg.Admin(host=options.get("admin_host") or "127.0.0.1", port=port, required=required)


def _curve(options: dict[str, Any]) -> dict[str, Any]:
    """The backend's CurveZMQ settings; key files are read here, once (a bad one: a usage error)."""
    secret, authorized = options.get("curve_secret_key"), options.get("authorized_keys")
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


def _setup_logging(level: str, log_format: str = "text") -> None:
    access_log.configure(level, log_format)


def _run(coro: Any) -> None:
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
        # What was built up to now lives as long as the process: out of the collector's sight,
        # a full collection no longer walks every imported module (~16 ms each, 10 per 80k requests).
        gc.freeze()
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if ready_fd is not None:
            try:
                os.write(ready_fd, (line + "\n").encode())
            finally:
                os.close(ready_fd)

    await serve(config, ready=ready, shutdown=shutdown)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click in non-standalone mode so every failure is one line."""
    try:
        command.main(args=argv, prog_name="python -m frontend", standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"frontend: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(EXIT_RUNTIME)
    except KeyboardInterrupt:
        sys.exit(EXIT_RUNTIME)
    except Exception as exc:  # bind failures and the like: one line, not a traceback
        click.echo(f"frontend: error: {_describe(exc)}", err=True)
        sys.exit(EXIT_RUNTIME)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text
