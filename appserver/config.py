"""The worker's configuration: one frozen object, built once at the edge (the CLI).

It travels to ``multiprocessing`` spawn children by pickling, so it holds only
plain values. Validation happens here, once, in ``__post_init__``: a bad value
raises ``ValueError`` naming the field, and the CLI turns that into one line
for the user. No side effects: nothing is imported, opened or logged here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
    capacity: int = 256  # concurrent HTTP streams advertised in HELLO
    ws_capacity: int = 10000  # concurrent WebSocket streams advertised in HELLO
    window_bytes: int = 256 * 1024  # request-direction credit window per stream
    graceful_timeout_s: float = 30.0  # drain: in-flight streams get this long
    reconnect_max_s: float = 5.0  # cap of the reconnect back-off (Rule 10)
    factory: bool = False  # ``app`` names a zero-argument callable returning the app
    lifespan: str = LifespanMode.AUTO
    log_level: str = "info"

    def __post_init__(self) -> None:
        _require(isinstance(self.app, str) and self.app.strip() != "", "app", "must be a non-empty string")
        _require(self.app_dir is None or isinstance(self.app_dir, str), "app_dir", "must be a path or None")
        self._normalize_connect()
        _require_int(self.capacity, "capacity", minimum=1)
        _require_int(self.ws_capacity, "ws_capacity", minimum=0)
        _require_int(self.window_bytes, "window_bytes", minimum=1)
        _require_number(self.graceful_timeout_s, "graceful_timeout_s", positive=False)
        _require_number(self.reconnect_max_s, "reconnect_max_s", positive=True)
        _require(isinstance(self.factory, bool), "factory", "must be a boolean")
        modes = tuple(m.value for m in LifespanMode)
        _require(self.lifespan in modes, "lifespan", f"must be one of {', '.join(modes)}")
        # Store the enum (a str subclass, picklable) so comparisons are by member.
        object.__setattr__(self, "lifespan", LifespanMode(self.lifespan))
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
        object.__setattr__(self, "connect", tuple(endpoints))


def _require(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {what}")


def _require_int(value: object, name: str, *, minimum: int) -> None:
    ok = type(value) is int and value >= minimum
    _require(ok, name, f"must be an integer >= {minimum}, got {value!r}")


def _require_number(value: object, name: str, *, positive: bool) -> None:
    ok = type(value) in (int, float) and (value > 0 if positive else value >= 0)  # type: ignore[operator]
    _require(ok, name, f"must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
