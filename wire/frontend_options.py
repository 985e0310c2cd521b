"""The front end's options, declared once: name, type, default, environment variable, help.

Not protocol. It lives in ``wire`` only because the two packages that read it may not
import each other: ``frontend/cli.py`` builds ``python -m frontend`` from it,
``appserver/commands`` builds ``zasgi run`` and ``zasgi frontend`` from it (run forwards
what was given), ``frontend/config.py`` takes its defaults from it, and the TOML
loader (``appserver/configfile.py``) its keys. Like ``wire.curve`` (zmq), this module
imports a library the sans-IO core does not (click); ``import wire`` never loads it.

Each option's environment variable is ``ZASGI_`` + its first long name in capitals
(``--queue-size`` -> ``ZASGI_QUEUE_SIZE``); its TOML key is any of its long names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import click

KIB = 1024
MIB = 1024 * KIB
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")


class Run(enum.Enum):
    """What ``zasgi run`` does with a front-end option."""

    FORWARD = "forward"  # run has it too (default None: unless given, the front end's default holds)
    OWN = "own"  # run has it with the same default and passes its value on (--host, --port, ...)
    WORKER = "worker"  # run takes it from an option it shares with the workers (--log-level, ...)
    SPLIT = "split"  # only `zasgi frontend`: CurveZMQ (run's workers are on a private socket)
    INTERNAL = "internal"  # the front end's contract with its parent process: hidden from help


@dataclass(frozen=True)
class Option:
    """One front-end option; ``decls`` as click spells them ("--a/--no-a" for a pair, aliases after)."""

    decls: tuple[str, ...]
    default: Any = None
    type: Any = None  # a click type, or None for text / flags
    help: str | None = None
    run: Run = Run.FORWARD
    is_flag: bool = False
    shown_default: str | None = None  # "[default: ...]" text when the default is None or needs words
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def long_names(self) -> tuple[str, ...]:
        return tuple(n for d in self.decls for n in d.split("/") if n.startswith("--"))

    @property
    def name(self) -> str:
        """The click parameter name (``--queue-size`` -> ``queue_size``)."""
        return self.decls[0].split("/")[0].lstrip("-").replace("-", "_")

    @property
    def envvar(self) -> str:
        return "ZASGI_" + self.name.upper()

    def argv(self, value: Any) -> list[str]:
        """``value`` spelled on a command line that this option parses (for passing it on)."""
        first, _, negative = self.decls[0].partition("/")
        if self.extra.get("multiple"):
            return [word for item in value for word in (first, str(item))]
        if self.is_flag or negative:
            return [first] if value else [negative] if negative else []
        return [first, format(value, "o") if isinstance(self.type, OctalMode) else str(value)]

    def click_option(self, *, forwarded: bool = False, **override: Any) -> click.Option:
        """This option as a click parameter. ``forwarded``: ``zasgi run``/``zasgi frontend``'s copy,
        default None (not given: not passed on, so the front end's own default applies)."""
        default = None if forwarded else self.default
        shown = self.shown_default
        single_flag = self.is_flag and "/" not in self.decls[0]
        if shown is None and self.default not in (None, "") and not single_flag:
            shown = _show(self.default)
        help_text = self.help or ""
        if shown is not None:
            help_text = f"{help_text} [default: {shown}]".strip()
        kwargs: dict[str, Any] = dict(
            default=default, type=self.type, envvar=self.envvar, show_envvar=True, help=help_text or None,
            hidden=self.run is Run.INTERNAL, **self.extra,
        )  # fmt: skip
        if self.is_flag or "/" in self.decls[0]:
            kwargs["is_flag"] = True
            kwargs.pop("type")
        kwargs.update(override)
        return click.Option(list(self.decls), **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and value >= MIB and value % MIB == 0:
        return f"{value // MIB} MiB"
    if isinstance(value, int) and value >= KIB and value % KIB == 0:
        return f"{value // KIB} KiB"
    return str(value)


class OctalMode(click.ParamType):
    """File permission bits written in octal: ``660``, ``0660`` or ``0o660``."""

    name = "mode"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal file mode like 660", param, ctx)
        if not 0 <= mode <= 0o7777:
            self.fail(f"{value!r} is not a file mode (at most 7777)", param, ctx)
        return mode


class HeaderField(click.ParamType):
    """``NAME:VALUE``; in the environment one per line (a value has spaces)."""

    name = "NAME:VALUE"
    envvar_list_splitter = "\n"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value).strip()


# Bounds here too (frontend/config.py checks them again for callers without a command line): a
# value out of range is refused by click naming the option, or by the TOML loader naming the file.
_Int = click.IntRange
_Float = click.FloatRange

OPTIONS: tuple[Option, ...] = (
    # ---- where it listens
    Option(("--host",), "127.0.0.1", help="HTTP listen address.", run=Run.OWN),
    Option(("--port",), 8000, _Int(0, 65535), "HTTP port; 0: any free port.", run=Run.OWN),
    Option(("--backend",), None, help="ZeroMQ endpoint workers connect to.", run=Run.OWN,
           shown_default="ipc:///tmp/zasgi-UID/frontend-PORT.sock"),
    Option(("--root-path",), "", help="ASGI root_path (mount point behind a proxy).", run=Run.OWN),
    Option(("--uds",), None, help="Listen on this Unix socket instead of --host/--port (a stale file "
           "nobody listens on is replaced; removed at exit)."),
    Option(("--uds-mode",), None, OctalMode(), "Permission bits of the --uds file, in octal (e.g. 660).",
           shown_default="from the umask"),
    Option(("--fd",), None, _Int(0), "Listen on this inherited, bound socket file descriptor instead of "
           "--host/--port (systemd socket activation, LISTEN_FDS, is used without it). A front end started "
           "on the same socket takes over its accept queue."),
    Option(("--backlog",), 2048, _Int(1), "Pending connections the kernel queues before they are accepted."),
    Option(("--reuse-port",), False, is_flag=True, run=Run.SPLIT,
           help="Bind with SO_REUSEPORT (Linux spreads connections): several front ends on one port, "
                "each with its own --backend (and --admin-port), the admin endpoint beside a successor's."),
    Option(("--name",), None, run=Run.SPLIT, shown_default="HOST-PID-random",
           help="This front end's name in its access-log lines (fe=NAME), /workers and the workers' logs."),
    # ---- the backend link
    Option(("--insecure",), False, help="Allow a non-loopback tcp:// backend without CurveZMQ.",
           is_flag=True),
    Option(("--curve-secret-key",), None, help="CurveZMQ: this front end's key_secret file (zasgi keygen).",
           run=Run.SPLIT),
    Option(("--authorized-keys",), None, help="CurveZMQ: directory of the workers' public .key files.",
           run=Run.SPLIT),
    # ---- logging
    Option(("--log-level",), "info", click.Choice(LOG_LEVELS, case_sensitive=False),
           "Least severe log level shown.", run=Run.WORKER),
    Option(("--log-format",), "text", click.Choice(LOG_FORMATS),
           "text: access log in combined format; json: every log line (access included, tracebacks "
           "as a field) as one JSON object.", run=Run.WORKER),
    Option(("--log-config",), None, click.Path(exists=True, dir_okay=False),
           "A logging configuration file (dictConfig as .json or .yaml, else INI fileConfig) instead of "
           "--log-format; zasgi's loggers: zasgi.access, frontend.*, appserver.*, zasgi.*.", run=Run.WORKER),
    Option(("--access-log/--no-access-log",), True, help="One line per request."),
    # ---- response fields the front end adds (each only when the app did not send it)
    Option(("--server-header/--no-server-header",), True, help="Send 'Server: zasgi' (no version)."),
    Option(("--date-header/--no-date-header",), True, help="Send a Date field."),
    Option(("--header",), None, HeaderField(),
           help="Add this field to every response, as NAME:VALUE (repeatable; env: one per line).",
           shown_default="none", extra={"multiple": True}),
    # ---- admin endpoint
    Option(("--admin/--no-admin",), True, help="Serve /healthz /readyz /metrics /workers."),
    Option(("--admin-host",), "127.0.0.1", help="Admin endpoint address."),
    Option(("--admin-port",), None, _Int(0, 65535), "Admin endpoint port; 0: any free port.",
           shown_default="9000; any free port with --port 0"),
    # ---- waiting for a worker (frontend/codel.py says how the three times interact)
    Option(("--queue-size",), None, _Int(0), "Requests that may wait for a worker; more get 503 at once.",
           shown_default="no bound but connections"),
    Option(("--queue-timeout",), 10.0, _Float(0, min_open=True),
           "Seconds a request waits for a worker before 503, at most."),
    Option(("--queue-target",), 0.25, _Float(0),
           "Queueing delay target (CoDel): past it the queue serves newest first, and standing above it "
           "for --queue-interval it refuses (503) every request waiting longer. "
           "0: off (FIFO, --queue-timeout)."),
    Option(("--queue-interval",), 2.0, _Float(0, min_open=True),
           "Seconds the queue may stay above --queue-target (a burst draining) before it sheds."),
    # ---- the backend link's timing and sizes
    Option(("--heartbeat-ms",), 1000, _Int(1), "Milliseconds between heartbeats to and from each worker."),
    Option(("--liveness",), 3, _Int(2), "Silent heartbeats before a worker is gone."),
    Option(("--timeout-worker-blocked",), 0.0, _Float(0),
           "Seconds a worker's event loop may stay blocked (a synchronous call in async code) before its "
           "blocking request gets 504 and the worker is replaced; 0: never, the front end waits for it."),
    Option(("--window-bytes",), 2 * MIB, _Int(1),
           "Response window per stream: what one response may have in flight from its worker."),
    Option(("--max-payload-bytes",), 64 * MIB, _Int(1),
           "Largest payload a worker may send in one event; a bigger one ends that worker's link."),
    # ---- HTTP limits
    Option(("--limit-max-line-size",), 16 * KIB, _Int(1), "Request line bytes."),
    Option(("--limit-max-header-size",), 16 * KIB, _Int(1), "Bytes per header field."),
    Option(("--limit-max-headers",), 100, _Int(1), "Header fields per request."),
    Option(("--limit-max-body-size",), None, _Int(0), "Request body bytes.", shown_default="unlimited"),
    Option(("--timeout-keep-alive",), 5.0, _Float(0, min_open=True), "Idle keep-alive seconds."),
    Option(("--timeout-request-header",), 10.0, _Float(0, min_open=True),
           "Seconds a request's head (and a TLS handshake) may take to arrive (slowloris); "
           "then 408 and close."),
    Option(("--limit-concurrency",), None, _Int(1),
           "Client connections served at once; beyond it each gets 503 + Retry-After.",
           shown_default="no limit"),
    # ---- TLS
    Option(("--ssl-certfile",), None, help="TLS: certificate (chain) PEM file; enables https/wss."),
    Option(("--ssl-keyfile",), None, help="TLS: private key PEM file.", shown_default="in --ssl-certfile"),
    Option(("--ssl-keyfile-password",), None, help="TLS: password of an encrypted --ssl-keyfile."),
    Option(("--ssl-ca-certs",), None, help="TLS: CA file that client certificates must chain to."),
    Option(("--ssl-cert-reqs",), 0, _Int(0, 2),
           "TLS client certificates: 0 not asked, 1 optional, 2 required (ssl.CERT_*)."),
    Option(("--ssl-ciphers",), None, help="TLS: OpenSSL cipher list.", shown_default="OpenSSL's"),
    # ---- HTTP/2
    Option(("--http2/--no-http2",), True,
           help="Serve HTTP/2: negotiated by ALPN over TLS, and to cleartext clients that open with its "
           "preface (h2c, prior knowledge)."),
    Option(("--http2-max-concurrent-streams",), 100, _Int(1, 2**31 - 1),
           "HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS)."),
    Option(("--early-hints/--no-early-hints",), False,
           help="Also send the app's early hints (http.response.early_hint) to HTTP/1.1 clients as "
           "103 responses; off because some old HTTP/1.1 clients take a 1xx for the response. "
           "HTTP/2 clients always get them, HTTP/1.0 ones never."),
    # ---- proxies
    Option(("--proxy-headers/--no-proxy-headers",), True,
           help="Take client, scheme and host from Forwarded / X-Forwarded-* sent by a trusted proxy."),
    Option(("--forwarded-allow-ips",), "127.0.0.1",
           help="Comma-separated proxy addresses or networks whose proxy headers are trusted; '*' for all."),
    # ---- WebSocket
    Option(("--ws-max-size",), 16 * MIB, _Int(1),
           "Largest WebSocket message (bytes); a bigger one closes the connection with 1009."),
    Option(("--ws-ping-interval",), 20.0, _Float(0), "WebSocket ping seconds; 0: off."),
    Option(("--ws-ping-timeout",), 20.0, _Float(0, min_open=True),
           "Seconds without a pong before a WebSocket is dropped."),
    Option(("--ws-per-message-deflate/--no-ws-per-message-deflate",), True,
           help="Offer permessage-deflate compression to WebSocket clients."),
    # ---- process
    Option(("--shutdown-timeout", "--timeout-graceful-shutdown"), 30.0, _Float(0, min_open=True),
           "Seconds in-flight requests get on SIGTERM.", run=Run.WORKER),
    Option(("--ready-fd",), None, _Int(0), "Also write the ready line to this fd, then (for `zasgi run`) a "
           "'zasgi-workers PID...' line each time the ready workers change.", run=Run.INTERNAL),
    Option(("--parent-fd",), None, _Int(0), "Shut down when this fd becomes readable (parent died).",
           run=Run.INTERNAL),
    Option(("--handoff-path",), None, help="Unix socket where this front end adopts the idle connections "
           "of a retiring predecessor of its slot, and where it hands its own to a successor "
           "(frontend/handoff.py).", run=Run.INTERNAL),
    Option(("--admin-fd",), None, _Int(0), "A bound socket every front end of `zasgi run` serves, answering "
           "for all of them (frontend/fleet_admin.py).", run=Run.INTERNAL),
    Option(("--admin-peers",), None, help="With --admin-fd: the file listing the other front ends' admin "
           "URLs.", run=Run.INTERNAL),
)  # fmt: skip

BY_NAME: dict[str, Option] = {opt.name: opt for opt in OPTIONS}


def default(name: str) -> Any:
    """The default of the option whose parameter name is ``name`` (frontend/config.py's defaults)."""
    return BY_NAME[name].default


def where(*runs: Run) -> Iterator[Option]:
    return (opt for opt in OPTIONS if opt.run in runs)
