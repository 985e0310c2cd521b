"""The worker's and the pool's configuration: frozen objects, built once at the edge (the CLI).

``WorkerConfig`` travels to ``multiprocessing`` spawn children by pickling, so
it holds only plain values; ``PoolConfig`` stays in the supervisor. Validation
happens here, once, in ``__post_init__``: a bad value raises ``ValueError``
naming the field, and the CLI turns that into one line for the user. No side
effects: nothing is imported, opened or logged here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .discovery import DEFAULT_RESOLVE_INTERVAL_S, parse_endpoint

if TYPE_CHECKING:
    from wire.curve import ClientKeys


class LifespanMode(StrEnum):
    AUTO = "auto"  # run lifespan if the app supports it
    ON = "on"  # the app must support lifespan
    OFF = "off"  # never send lifespan events


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    app: str  # "pkg.module:attribute"
    app_dir: str | None = None  # put first on sys.path before importing the app
    connect: tuple[str, ...]  # front-end backend endpoints, one DEALER each
    # Concurrent HTTP streams advertised in HELLO: the most ever (Rule 19), and with adaptive
    # admission (limiter.py) the ceiling of the limit that follows what the app can take.
    capacity: int = 4096
    adaptive: bool = True  # report an adaptive limit (feature "limit"); False: capacity, fixed
    capacity_floor: int = 16  # the adaptive limit's floor (capped by capacity: --capacity 4 just works)
    adaptive_target_s: float = 0.010  # queueing delay the worker may hold (limiter.py)
    ws_capacity: int = 10000  # concurrent WebSocket streams advertised in HELLO
    # Request-direction credit window per stream (HELLO.window_bytes): one CREDIT round trip
    # moves at most this much of an upload; 50 MiB uploads (tests/benchmarks, medians of 3):
    # 232 MiB/s at 256 KiB, 317 at 1 MiB, 345 at 2 MiB. The front end keeps up to this much
    # per stream until the app shows it got it (Rule 20).
    window_bytes: int = 1024 * 1024
    graceful_timeout_s: float = 30.0  # drain: in-flight streams get this long
    # A worker replaced by a new one (reload, --max-requests) lingers while only WebSocket sessions
    # and started responses are left, until they end or this long after the drain began (then
    # 1012); 0: they are closed when the graceful timeout ends.
    stream_drain_timeout_s: float = 3600.0
    # The pulse thread (pulse.py) logs one warning, with the request and the stack, when the event
    # loop has not run for this long; 0: never.
    warn_blocked_loop_s: float = 0.5
    reconnect_max_s: float = 5.0  # cap of the reconnect back-off (Rule 10)
    resolve_interval_s: float = DEFAULT_RESOLVE_INTERVAL_S  # re-resolve names in ``connect`` (discovery.py)
    factory: bool = False  # ``app`` names a zero-argument callable returning the app
    lifespan: str = LifespanMode.AUTO
    interface: str = "auto"  # auto | asgi3 | asgi2 | wsgi (loader.Interface)
    wsgi_threads: int = 10  # a WSGI app's thread pool per worker (wsgi.py); requests it runs at once
    shm_bodies: bool = True  # offer feature "shm-body" (wire/shm.py) to each front end
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line (wire/logsetup.py)
    log_config: str | None = None  # a logging.config file instead (wire/logsetup.py)
    curve: ClientKeys | None = None  # CurveZMQ: our key pair + the front end's public key (wire/curve.py)

    def __post_init__(self) -> None:
        _require(isinstance(self.app, str) and self.app.strip() != "", "app", "must be a non-empty string")
        _require(self.app_dir is None or isinstance(self.app_dir, str), "app_dir", "must be a path or None")
        self._normalize_connect()
        _require_int(self.capacity, "capacity", minimum=1)
        _require(isinstance(self.adaptive, bool), "adaptive", "must be a boolean")
        _require_int(self.capacity_floor, "capacity_floor", minimum=1)  # above capacity: capacity
        _require_number(self.adaptive_target_s, "adaptive_target_s", positive=True)
        _require_int(self.ws_capacity, "ws_capacity", minimum=0)
        _require_int(self.window_bytes, "window_bytes", minimum=1)
        _require_number(self.graceful_timeout_s, "graceful_timeout_s", positive=False)
        _require_number(self.stream_drain_timeout_s, "stream_drain_timeout_s", positive=False)
        _require_number(self.warn_blocked_loop_s, "warn_blocked_loop_s", positive=False)
        _require_number(self.reconnect_max_s, "reconnect_max_s", positive=True)
        _require_number(self.resolve_interval_s, "resolve_interval_s", positive=True)
        _require(isinstance(self.factory, bool), "factory", "must be a boolean")
        _require_int(self.wsgi_threads, "wsgi_threads", minimum=1)
        _require(isinstance(self.shm_bodies, bool), "shm_bodies", "must be a boolean")
        interfaces = ("auto", "asgi3", "asgi2", "wsgi")
        _require(self.interface in interfaces, "interface", f"must be one of {', '.join(interfaces)}")
        modes = tuple(m.value for m in LifespanMode)
        _require(self.lifespan in modes, "lifespan", f"must be one of {', '.join(modes)}")
        # Store the enum (a str subclass, picklable) so comparisons are by member.
        object.__setattr__(self, "lifespan", LifespanMode(self.lifespan))
        _require(self.log_format in ("text", "json"), "log_format", "must be text or json")
        level = self.log_level.lower() if isinstance(self.log_level, str) else None
        _require(level in LOG_LEVELS, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        object.__setattr__(self, "log_level", level)

    def _normalize_connect(self) -> None:
        endpoints = (self.connect,) if isinstance(self.connect, str) else self.connect
        ok = isinstance(endpoints, (tuple, list)) and len(endpoints) > 0
        _require(ok, "connect", "needs at least one front-end endpoint")
        for endpoint in endpoints:
            ok = isinstance(endpoint, str) and "://" in endpoint
            _require(
                ok, "connect", f"{endpoint!r} is not a ZeroMQ endpoint like ipc:///path or tcp://host:port"
            )
            try:
                parse_endpoint(endpoint)  # tcp:// needs host:port
            except ValueError as exc:
                raise ValueError(f"connect: {exc}") from None
        object.__setattr__(self, "connect", tuple(endpoints))


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """The supervisor's settings (``run`` and ``appserver``); workers never see them."""

    workers: int = 1  # slots at start; SIGTTIN / SIGTTOU add / remove one
    max_requests: int = 0  # recycle a worker after N + random(0..jitter) HTTP requests; 0 = never
    max_requests_jitter: int = 0
    max_surge: int = 1  # new workers started at once by a rolling restart (and by recycling)
    worker_start_timeout_s: float = 60.0  # a replacement not ready by then has failed
    max_lingering: int = 4  # replaced workers lingering at once (oldest closed first); 0 = none lingers
    pid_file: str | None = None  # written at start, removed at exit; `zasgi reload` reads it
    max_worker_rss_mib: int = 0  # replace a worker whose resident memory passes this; 0 = never
    # SCHED_BATCH for the supervisor, set before it starts any child: they inherit it (sched.py)
    sched_batch: bool = True

    def __post_init__(self) -> None:
        _require_int(self.workers, "workers", minimum=1)
        _require_int(self.max_requests, "max_requests", minimum=0)
        _require_int(self.max_requests_jitter, "max_requests_jitter", minimum=0)
        _require_int(self.max_surge, "max_surge", minimum=1)
        _require_number(self.worker_start_timeout_s, "worker_start_timeout_s", positive=True)
        _require_int(self.max_lingering, "max_lingering", minimum=0)
        _require_int(self.max_worker_rss_mib, "max_worker_rss", minimum=0)
        _require(isinstance(self.sched_batch, bool), "sched_batch", "must be a boolean")
        ok = self.pid_file is None or (isinstance(self.pid_file, str) and self.pid_file != "")
        _require(ok, "pid_file", "must be a path or None")


def _require(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {what}")


def _require_int(value: object, name: str, *, minimum: int) -> None:
    ok = type(value) is int and value >= minimum
    _require(ok, name, f"must be an integer >= {minimum}, got {value!r}")


def _require_number(value: object, name: str, *, positive: bool) -> None:
    ok = type(value) in (int, float) and (value > 0 if positive else value >= 0)  # type: ignore[operator]
    _require(ok, name, f"must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
