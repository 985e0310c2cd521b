"""Request ids and the access log: one call per finished request, cheap when the log is off.

Theory of operation. A request ends in one of two places, and both feed the
same ``AccessLog``: the front end's own connections (``connection.py``) call
``request_ended`` after each answered request (``response.ResponseWriter``);
WebSocket upgrades (``ws_bridge``) call ``upgrade_ended`` with their
``WsConnection``, when a session ends or after any other answer. Both always
feed the metrics (a few counter increments) and, only when the access log is
on and the ``zasgi.access`` logger is enabled for INFO (decided once, at
start), format one line. A request whose client vanished before any response
is not seen. A WebSocket is seen once, when its session ends, with status 101,
whoever closed it.

Request ids (``request_id``): a well-formed incoming ``X-Request-ID`` is kept
(so a proxy's id carries through), anything else is replaced by 16 random hex
digits. The bridges put it in REQUEST's / WS_CONNECT's ``ext`` map (the app
server tags its log lines with it), in the response header ``x-request-id``,
and on the writer (``ResponseWriter.rid``, ``WsConnection.rid``) for this log;
they also note the worker the request was sent to (``worker``, a
``WorkerRecord``) and, when trusted proxy headers named the client, that
client (``client``: what the scope's ``client`` says, logged instead of the
TCP peer, as uvicorn does).

Formats: ``text`` is nginx/Apache "combined" plus request id, worker id and
duration; ``json`` is one object per line. Both go to stdout (as uvicorn's
access log); everything else the front end logs goes to stderr, as JSON lines
too with ``--log-format json`` (``configure``).

Where lines go: with zasgi's own logging setup, to ``LineSink``, which writes
each event-loop iteration's lines to stdout in one write; with the operator's
``--log-config``, through the ``zasgi.access`` logger and its handlers, one
record a line (``configure`` decides, once).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import random
import re
import sys
import time
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TextIO

from multidict import istr

from wire import logsetup

if TYPE_CHECKING:
    from .writer import RequestWriter

ACCESS_LOGGER = "zasgi.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

_VALID_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")  # uuids, hex, base64, dotted trace ids
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f-\U0010ffff]')  # what must not reach a log line raw
_getrandbits = random.getrandbits


_X_REQUEST_ID = istr("X-Request-ID")  # (istr: a CIMultiDict lookup without lower-casing it)
_REFERER, _USER_AGENT = istr("Referer"), istr("User-Agent")


def request_id(headers: Any) -> str:
    """The client's (or proxy's) X-Request-ID if well-formed, else a new random one."""
    given: str | None = headers.get(_X_REQUEST_ID)
    if given is not None and _VALID_ID.fullmatch(given):
        return given
    return "%016x" % _getrandbits(64)  # noqa: UP031 (0.1 µs less than the f-string); not a secret


class RequestCounts(Protocol):
    """What the log feeds on every end (``traffic.Traffic``): a Protocol, any such object to the
    compiled log (wire/compiled.py)."""

    def request_ended(self, status: int, duration_s: float, bytes_in: int, bytes_out: int) -> None: ...
    def websocket_ended(self) -> None: ...


class _Entry(NamedTuple):
    """One finished request, whichever server answered it."""

    method: str
    path: str  # the raw target
    version: Any
    headers: Any  # a CIMultiDict view
    client: str | None
    rid: str | None
    worker: str | None
    status: int
    bytes_in: int
    bytes_out: int
    duration_s: float


class AccessLog:
    """What happens when a request ends: metrics always, a log line when enabled."""

    def __init__(
        self, metrics: RequestCounts, *, enabled: bool = True, log_format: str = "text", frontend: str = ""
    ) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        # Several front ends on one host (one log stream under `zasgi run --frontends N`): say which.
        self._frontend = frontend
        self._fe_field = f" fe={_safe(frontend)}" if frontend else ""
        self.metrics = metrics
        self.enabled = enabled and self.logger.isEnabledFor(logging.INFO)
        self._line = self._json if log_format == "json" else self._combined
        self._write: Callable[[str], None] = _sink.write if _sink is not None else self.logger.info
        self._stamp_second = -1
        self._stamp = ""

    def request_ended(self, ex: RequestWriter) -> None:
        """A request answered on one of our connections."""
        duration_s = perf_counter() - ex.started
        payload = ex.payload
        bytes_in = payload.total_bytes if payload is not None else 0
        self.metrics.request_ended(ex.status, duration_s, bytes_in, ex.bytes_out)
        if self.enabled:
            message = ex.message
            if ex.client_set:
                client = ex.client[0] if ex.client is not None else None
            else:
                peer = ex.conn.addresses[0]
                client = peer[0] if peer is not None else None
            worker = ex.worker.worker_id if ex.worker is not None else None
            entry = _Entry(message.method, message.path, message.version, message.headers, client,
                           ex.rid, worker, ex.status, bytes_in, ex.bytes_out, duration_s)  # fmt: skip
            self._write(self._line(entry))

    def upgrade_ended(self, conn: Any, status: int, bytes_out: int) -> None:
        """A WebSocket upgrade request's end (ws_bridge): its session (101) or its HTTP answer."""
        duration_s = perf_counter() - conn.started
        if status == 101:
            self.metrics.websocket_ended()
        else:
            self.metrics.request_ended(status, duration_s, 0, bytes_out)
        if self.enabled:
            message = conn.message
            if conn.client_set:
                client = conn.client[0] if conn.client is not None else None
            else:
                peer = conn.peer
                client = peer[0] if peer is not None else None
            worker = conn.worker.worker_id if conn.worker is not None else None
            entry = _Entry(message.method, message.path, message.version, message.headers, client,
                           conn.rid, worker, status, 0, bytes_out, duration_s)  # fmt: skip
            self._write(self._line(entry))

    # ------------------------------------------------------------ formats

    def _combined(self, e: _Entry) -> str:
        headers = e.headers
        line = f"{e.method} {e.path} HTTP/{e.version[0]}.{e.version[1]}"
        return (
            f'{e.client or "-"} - - [{self._now()}] "{_safe(line)}" {e.status} {e.bytes_out} '
            f'"{_safe(headers.get(_REFERER, "-"))}" "{_safe(headers.get(_USER_AGENT, "-"))}" '
            f"rid={e.rid or '-'} worker={e.worker or '-'} dur={e.duration_s:.6f}{self._fe_field}"
        )

    def _json(self, e: _Entry) -> str:
        headers = e.headers
        return json.dumps(
            {
                **({"frontend": self._frontend} if self._frontend else {}),
                "time": time.time(),
                "client": e.client,
                "method": e.method,
                "path": e.path,
                "http_version": f"{e.version[0]}.{e.version[1]}",
                "status": e.status,
                "bytes_in": e.bytes_in,
                "bytes_out": e.bytes_out,
                "duration_s": round(e.duration_s, 6),
                "request_id": e.rid,
                "worker": e.worker,
                "referer": headers.get(_REFERER),
                "user_agent": headers.get(_USER_AGENT),
            },
            separators=(",", ":"),
        )

    def _now(self) -> str:
        now = int(time.time())
        if now != self._stamp_second:  # strftime once a second, not once a request
            self._stamp_second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
        return self._stamp


def _safe(text: str) -> str:
    """Escape quotes, backslashes and control or non-ASCII characters (log injection)."""
    if _UNSAFE.search(text) is None:
        return text
    return json.dumps(text)[1:-1]  # \" \\ \n \u00e9 ...


# ---------------------------------------------------------------- setup (CLI only)


JsonFormatter = logsetup.JsonFormatter  # (one format for every zasgi process: wire/logsetup.py)


SINK_MAX_LINES = 256  # bounds what one busy loop iteration holds


class LineSink:
    """Access lines to a stream, each event-loop iteration's in one write.

    Why not a logging handler: logging's path costs a LogRecord, the handler's lock, and a write
    and a flush per line: 8.5 µs a line against 0.2 µs here, about a quarter of the front end's
    time per hello-world request with the access log on, its default (tests/benchmarks/README.md,
    session 6). A line waits at most until the end of the loop iteration it was written in
    (``SINK_MAX_LINES`` lines: at once); without a running loop it is written at once.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._broken = False

    def write(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                return
            except RuntimeError:  # no running loop (shutdown, a test): at once
                pass
        elif len(lines) < SINK_MAX_LINES:
            return
        self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()  # (a flush scheduled for lines written at once finds none)
        if self._broken:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # stdout's reader gone (EPIPE), or stdout closed
            self._broken = True
            logging.getLogger(__name__).warning("access log: cannot write to stdout (%s): lines dropped", exc)


_sink: LineSink | None = None  # set by configure() when zasgi, not --log-config, owns the output


def configure(level: str, log_format: str, log_config: str | None = None) -> None:
    """The front end's logging: records to stderr (text or JSON), access lines to stdout through
    ``LineSink``; or the operator's --log-config, which then owns the access logger too (one
    record a line, through its handlers). Raises LogConfigError."""
    global _sink
    logsetup.configure(level, log_format, TEXT_FORMAT, log_config=log_config)
    if log_config is not None:
        _sink = None
        return
    access = logging.getLogger(ACCESS_LOGGER)
    access_handler = logging.StreamHandler(sys.stdout)  # for a record logged there by anyone else
    access_handler.setFormatter(logging.Formatter("%(message)s"))  # the line is formatted already
    access.addHandler(access_handler)
    access.propagate = False
    _sink = LineSink(sys.stdout)
    atexit.register(_sink.flush)
