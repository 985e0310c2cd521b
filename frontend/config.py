"""The front end's configuration: one frozen object, built once by the CLI.

Knobs are grouped by concern (HTTP limits, backend, queue, heartbeat, WebSocket) and
validated in ``__post_init__`` with messages that name the field, so the CLI
can print one line and exit. Nothing here has side effects: no logging, no
sockets, no directories (``server``/``dispatch`` create those).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wire import frontend_options as fo

if TYPE_CHECKING:
    from wire.curve import ServerKeys

    from .h2_session import H2Limits

_d = fo.default  # every option's default lives in wire/frontend_options.py, once


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    # aiohttp's default 8190 per field rejects an ordinary 8 KiB cookie; nginx
    # allows 4 x 8 KiB buffers, uvicorn (h11) 64 KiB per header block.
    max_line_bytes: int = _d("limit_max_line_size")
    max_field_bytes: int = _d("limit_max_header_size")
    max_headers: int = _d("limit_max_headers")
    keepalive_timeout_s: float = _d("timeout_keep_alive")
    max_body_bytes: int | None = _d("limit_max_body_size")  # None: unlimited (the window bounds memory)
    header_timeout_s: float = _d("timeout_request_header")  # a request's head must arrive within this: 408
    max_connections: int | None = _d("limit_concurrency")  # past it: 503. None: the fd limit
    early_hints: bool = _d("early_hints")  # 103 Early Hints to HTTP/1.1 clients (always on HTTP/2)

    def __post_init__(self) -> None:
        _positive("max_line_bytes", self.max_line_bytes)
        _positive("max_field_bytes", self.max_field_bytes)
        _positive("max_headers", self.max_headers)
        _positive("keepalive_timeout_s", self.keepalive_timeout_s)
        _positive("header_timeout_s", self.header_timeout_s)
        if self.max_body_bytes is not None and self.max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {self.max_body_bytes}")
        if self.max_connections is not None:
            _positive("limit_concurrency", self.max_connections)


@dataclass(frozen=True, kw_only=True)
class Tls:
    """TLS termination (uvicorn's --ssl-* options); off unless certfile is set."""

    certfile: str | None = None
    keyfile: str | None = None  # None: the key is in certfile
    keyfile_password: str | None = None
    ca_certs: str | None = None  # CAs that client certificates must chain to
    cert_reqs: int = _d("ssl_cert_reqs")  # ssl.CERT_NONE (0), CERT_OPTIONAL (1), CERT_REQUIRED (2)
    ciphers: str | None = None  # OpenSSL cipher list; None: OpenSSL's defaults

    def __post_init__(self) -> None:
        if self.certfile is None and (self.keyfile or self.ca_certs or self.cert_reqs):
            raise ValueError("--ssl-keyfile, --ssl-ca-certs and --ssl-cert-reqs need --ssl-certfile")
        if self.cert_reqs not in (0, 1, 2):
            raise ValueError(f"ssl cert_reqs must be 0 (none), 1 (optional), 2 (required): {self.cert_reqs}")
        if self.cert_reqs and self.ca_certs is None:
            raise ValueError("--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs (the CAs client certs chain to)")

    @property
    def enabled(self) -> bool:
        return self.certfile is not None


@dataclass(frozen=True, kw_only=True)
class Proxy:
    """Proxy headers (frontend/proxy.py), honoured only from ``trusted`` peers (as uvicorn)."""

    enabled: bool = _d("proxy_headers")
    trusted: str = _d("forwarded_allow_ips")  # addresses, CIDRs, "*"

    def __post_init__(self) -> None:
        from .proxy import TrustedProxies  # pure parsing; raises ValueError naming the entry

        TrustedProxies(self.trusted)


@dataclass(frozen=True, kw_only=True)
class Backend:
    endpoint: str  # ipc://... (same host) or tcp://HOST:PORT
    insecure: bool = False  # allow a non-loopback tcp:// bind without CurveZMQ
    # CurveZMQ (wire/curve.py): our key pair, and the directory of workers' public keys. Both or neither.
    curve: ServerKeys | None = None
    authorized_keys: str | None = None
    # Response-direction window granted per stream (WELCOME). One credit round trip between the
    # processes takes ~0.6 ms here, so a 10 MiB download over one connection ran at
    # ~390 MB/s with 256 KiB, ~495 with 1 MiB, ~740 with 2 MiB, ~700-770 with 4 MiB (medians,
    # tests/benchmarks). The cost: a stream whose client reads slowly holds up to this much here.
    window_bytes: int = _d("window_bytes")
    max_payload_bytes: int = _d("max_payload_bytes")  # largest payload accepted in one event

    def __post_init__(self) -> None:
        _positive("window_bytes", self.window_bytes)
        _positive("max_payload_bytes", self.max_payload_bytes)
        scheme, sep, rest = self.endpoint.partition("://")
        if not sep or scheme not in ("ipc", "tcp", "inproc") or not rest:
            raise ValueError(f"backend endpoint {self.endpoint!r} must be ipc://PATH or tcp://HOST:PORT")
        if (self.curve is None) != (self.authorized_keys is None):
            raise ValueError("CurveZMQ needs both --curve-secret-key and --authorized-keys, or neither")
        if scheme == "tcp" and self.curve is None and not self.insecure and not _is_loopback(rest):
            raise ValueError(
                f"backend {self.endpoint} is not a loopback address: give it CurveZMQ keys "
                "(--curve-secret-key and --authorized-keys), or pass --insecure to bind it unencrypted"
            )

    @property
    def is_local(self) -> bool:
        """Workers share this host (and its files): PATHSEND may be honoured."""
        return self.endpoint.startswith(("ipc://", "inproc://"))


def _is_loopback(host_port: str) -> bool:
    host = host_port.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name, a DNS name: assume exposed
        return False


@dataclass(frozen=True, kw_only=True)
class Queue:
    """Requests waiting for a worker slot (slots.py; codel.py says how the three times interact)."""

    # Past it: 503 at once. None: no bound but the client connections (one waiter each): the
    # queue sheds by delay, and a count would refuse a burst the workers could serve in time.
    size: int | None = _d("queue_size")
    timeout_s: float = _d("queue_timeout")  # the longest any request waits, then 503 + Retry-After
    # Older than this, the queue serves newest first; standing above it for interval_s, it
    # refuses (503 + Retry-After) every waiter older than target_s. None: FIFO, timeout only.
    target_s: float | None = _d("queue_target")
    # A queue above target this long, still taking requests as fast as it serves them, is an
    # overload, not a burst (10,000 clients at once took ~1.7 s on a loaded 2-core host).
    interval_s: float = _d("queue_interval")
    no_worker_grace_s: float | None = 2.0  # no READY worker this long: 503 at once. None: wait

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 0:
            raise ValueError(f"queue size must be >= 0, got {self.size}")
        _positive("queue timeout_s", self.timeout_s)
        if self.target_s is not None:
            _positive("queue target_s", self.target_s)
        _positive("queue interval_s", self.interval_s)
        if self.no_worker_grace_s is not None and self.no_worker_grace_s < 0:
            raise ValueError(f"no_worker_grace_s must be >= 0, got {self.no_worker_grace_s}")


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    interval_ms: int = _d("heartbeat_ms")
    liveness: int = _d("liveness")  # silent intervals before a worker is gone (zguide: 3..5)
    # A worker whose event loop stays blocked this long (its PULSE says so, Rule 9b) is evicted: its
    # blocking request gets 504 and it is told to exit (EVICT); None: never, it is waited for.
    blocked_timeout_s: float | None = _d("timeout_worker_blocked") or None

    def __post_init__(self) -> None:
        _positive("heartbeat interval_ms", self.interval_ms)
        if self.liveness < 2:  # 1 would declare a peer dead on ordinary jitter
            raise ValueError(f"liveness must be >= 2, got {self.liveness}")
        if self.blocked_timeout_s is not None:
            _positive("timeout_worker_blocked", self.blocked_timeout_s)

    @property
    def interval_s(self) -> float:
        return self.interval_ms / 1000

    @property
    def dead_after_s(self) -> float:
        return self.interval_s * self.liveness


@dataclass(frozen=True, kw_only=True)
class WebSocket:
    """Client-facing WebSocket limits; defaults as uvicorn's (ws_max_size, ws_ping_*)."""

    max_message_bytes: int = _d("ws_max_size")  # a bigger message closes the client with 1009
    ping_interval_s: float = _d("ws_ping_interval")  # 0: never ping
    ping_timeout_s: float = _d("ws_ping_timeout")  # no pong (or any data) this long after a ping: 1006
    per_message_deflate: bool = _d("ws_per_message_deflate")

    def __post_init__(self) -> None:
        _positive("ws max_message_bytes", self.max_message_bytes)
        if self.ping_interval_s < 0:
            raise ValueError(f"ws ping_interval_s must be >= 0, got {self.ping_interval_s}")
        _positive("ws ping_timeout_s", self.ping_timeout_s)


@dataclass(frozen=True, kw_only=True)
class Admin:
    """The admin endpoint (/healthz, /readyz, /metrics, /workers) on a port of its own."""

    host: str = _d("admin_host")  # loopback: it tells the world about the workers
    port: int = 9000  # 0: any free port
    required: bool = True  # False (the port was defaulted): a busy port only turns it off, with a warning
    fleet_fd: int | None = None  # zasgi run's shared admin socket, served beside ours (fleet_admin.py)
    peers_path: str | None = None  # with it: the list of the other front ends' admin URLs

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"admin port must be 0..65535, got {self.port}")


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name


@dataclass(frozen=True, kw_only=True)
class Headers:
    """Fields every response gets unless the app sent them (http1.configure)."""

    server: bool = _d("server_header")  # "Server: zasgi"
    date: bool = _d("date_header")
    extra: tuple[tuple[str, str], ...] = ()  # --header NAME:VALUE

    @staticmethod
    def parse(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
        """``NAME:VALUE`` strings -> pairs; ValueError naming the bad one."""
        pairs = []
        for item in items:
            name, sep, value = item.partition(":")
            if not sep or not _TOKEN.fullmatch(name.strip()):
                raise ValueError(
                    f"--header {item!r} must look like NAME:VALUE (e.g. 'X-Frame-Options: DENY')"
                )
            pairs.append((name.strip(), value.strip()))
        return tuple(pairs)

    def __post_init__(self) -> None:
        for name, value in self.extra:
            if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0") or not value.isascii():
                raise ValueError(f"--header {name}: not a field name, or a value with a control character")
            if name.lower() in ("content-length", "transfer-encoding", "connection"):
                raise ValueError(f"--header {name}: framing is the front end's")


LOG_FORMATS = fo.LOG_FORMATS


@dataclass(frozen=True, kw_only=True)
class FrontendConfig:
    host: str = _d("host")
    port: int = _d("port")
    root_path: str = _d("root_path")
    uds: str | None = _d("uds")  # listen on this Unix socket instead of host:port (listen.py)
    uds_mode: int | None = _d("uds_mode")  # its file's permission bits; None: the umask's
    fd: int | None = _d("fd")  # listen on this inherited socket (systemd: LISTEN_FDS, found by listen.py)
    backlog: int = _d("backlog")  # pending connections the kernel holds before accept
    backend: Backend = field(default_factory=lambda: Backend(endpoint=default_backend(_d("port"))))
    http: HttpLimits = field(default_factory=HttpLimits)
    queue: Queue = field(default_factory=Queue)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    websocket: WebSocket = field(default_factory=WebSocket)
    tls: Tls = field(default_factory=Tls)
    proxy: Proxy = field(default_factory=Proxy)
    shutdown_timeout_s: float = _d("shutdown_timeout")  # in-flight requests get this long on SIGTERM
    admin: Admin | None = None  # None: no admin endpoint (the CLI turns one on by default)
    headers: Headers = field(default_factory=Headers)
    access_log: bool = _d("access_log")  # one line per request on "zasgi.access", if INFO is enabled
    log_format: str = _d("log_format")  # access log: "text" (combined) or "json" (one object per line)
    http2: H2Limits | None = field(default_factory=lambda: _http2_defaults())  # None: HTTP/1.1 only
    # Several front ends on one host (issue 19): bind with SO_REUSEPORT; or listen on an inherited
    # socket (fd, above) that a successor shares, so stopping loses nothing queued (server.py).
    reuse_port: bool = _d("reuse_port")
    name: str = ""  # in access-log lines, /workers and WELCOME; "": HOST-PID-random, not logged
    handoff_path: str | None = None  # where idle connections pass between a slot's front ends (handoff.py)

    def __post_init__(self) -> None:
        if self.fd is not None and self.fd < 0:
            raise ValueError(f"fd must be >= 0, got {self.fd}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(f"root_path must start with '/' and not end with one, got {self.root_path!r}")
        _positive("shutdown_timeout_s", self.shutdown_timeout_s)
        _positive("backlog", self.backlog)
        if self.uds is not None and self.fd is not None:
            raise ValueError("--uds and --fd name two listeners: give one")
        if self.uds_mode is not None and not 0 <= self.uds_mode <= 0o7777:
            raise ValueError(f"uds_mode must be permission bits like 0o660, got {oct(self.uds_mode)}")


def http2_limits(enabled: bool, max_concurrent_streams: int) -> H2Limits | None:
    """``FrontendConfig.http2`` from --http2/--no-http2 and --http2-max-concurrent-streams."""
    if not enabled:
        return None
    from .h2_session import H2Limits  # (h2 is imported only by a front end that serves it)

    return H2Limits(max_concurrent_streams=max_concurrent_streams)


def _http2_defaults() -> H2Limits | None:
    return http2_limits(_d("http2"), _d("http2_max_concurrent_streams"))


def runtime_dir() -> str:
    """Per-user directory for ipc sockets (created 0700 by the dispatcher)."""
    return os.path.join(tempfile.gettempdir(), f"zasgi-{os.getuid()}")


def default_backend(port: int) -> str:
    # Port 0 is "any free port": several such front ends must not share a socket.
    name = f"frontend-{port}.sock" if port else f"frontend-pid{os.getpid()}.sock"
    return f"ipc://{os.path.join(runtime_dir(), name)}"
