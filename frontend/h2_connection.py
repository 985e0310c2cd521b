"""HTTP/2 client connections: the asyncio protocol around an ``H2Session``.

How a connection gets here. Every connection starts as an HTTP/1
``connection.Connection``; it hands its transport over (``H2Shared.take_over``)
when TLS negotiated ``h2`` by ALPN (at ``connection_made``), or when a
cleartext connection opens with the HTTP/2 preface (h2c with prior knowledge,
at its first bytes). ``Upgrade: h2c`` is not offered: browsers never use it,
and an HTTP/1.1 client that asks simply stays on HTTP/1.1.

Theory of operation. ``data_received`` feeds the session and acts on its
events: each ``StreamOpened`` becomes an ``h2_exchange.H2Exchange``, the
writer of one request on ``http_requests.HttpRequests`` (started once the
read's events are all in), body bytes go to that exchange's reader, ``Sent``
bytes are credited to its worker, ``StreamCancelled`` is ``lost`` (DISCONNECT),
and ``ConnectionEnded`` (a flood, a protocol error, the client's GOAWAY) closes
the connection once the GOAWAY is written. Writes are coalesced: one
``transport.write`` per loop iteration per connection; while the socket is full (``pause_writing``) no credit goes back to
workers, so a client that does not read holds at most one worker window per
stream here. A timer each ``TICK_S`` resets streams stalled on the client's
window (``H2Limits.stall_timeout_s``), aborts a connection whose socket stayed
full as long, and closes one idle past the keep-alive timeout (GOAWAY first).

Shutdown (``stop``) and retirement (``retire``: a successor front end serves the
port): GOAWAY with the last stream id; streams in flight finish, later ones are
refused (REFUSED_STREAM: clients retry them on a new connection); the
connection closes when the last one is done.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes

from .h2_exchange import H2Exchange
from .h2_metrics import H2Counts
from .h2_session import (
    BodyReceived,
    ConnectionEnded,
    Event,
    H2Limits,
    H2Session,
    Misuse,
    Sent,
    StreamCancelled,
    StreamOpened,
)

if TYPE_CHECKING:
    from .access_log import AccessLog
    from .connection import Gate
    from .http_requests import HttpRequests

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TICK_S = 1.0
RETRY_AFTER = b"1"  # for streams of a connection over --limit-concurrency


@dataclass(eq=False)
class H2Shared:
    """What every HTTP/2 connection of one listener shares (server.py builds it)."""

    limits: H2Limits
    requests: HttpRequests  # the request path, HTTP/1's: each stream is one of its requests
    access: AccessLog  # access log + metrics, once per answered stream
    connections: set[Any]  # the listener's (HTTP/1's too): shutdown stops them all
    gate: Gate
    keepalive_s: float
    counts: H2Counts = field(default_factory=H2Counts)  # (server.py registers it with /metrics)
    stopping: bool = False
    active: int = 0  # streams in flight on all HTTP/2 connections
    _idle: asyncio.Future[None] | None = field(default=None, repr=False)

    def take_over(self, transport: asyncio.Transport, data: bytes, admitted: bool) -> None:
        H2Protocol(self, asyncio.get_running_loop()).take_over(transport, data, admitted)

    def stream_done(self) -> None:
        self.active -= 1
        if not self.active and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def wait_idle(self, timeout_s: float) -> None:
        """Until no HTTP/2 stream is in flight, or ``timeout_s`` (shutdown)."""
        if self.active:
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), timeout_s)
            except TimeoutError:
                log.warning("%d HTTP/2 streams still in flight after %.1fs", self.active, timeout_s)
            finally:
                self._idle = None


class H2Protocol(asyncio.Protocol):
    def __init__(self, shared: H2Shared, loop: asyncio.AbstractEventLoop) -> None:
        self.shared = shared
        self.session = H2Session(shared.limits)
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self._loop = loop
        self._exchanges: dict[int, H2Exchange] = {}
        self._admitted = False
        self._addresses: tuple[Any, Any] | None = None
        self.tls: Any = None  # the request path's per-connection cache of the TLS extension
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = loop.time()
        self._paused_since = 0.0
        self._flush_soon = False

    # ------------------------------------------------------------ lifecycle

    def take_over(self, transport: asyncio.Transport, data: bytes, admitted: bool) -> None:
        """The transport is ours from here (``data``: what was read of it already)."""
        self.transport = transport
        self._admitted = admitted
        transport.set_protocol(self)
        self.shared.connections.add(self)
        counts = self.shared.counts
        counts.connections += 1
        counts.connections_open += 1
        self.session.start()
        self._timer = self._loop.call_later(TICK_S, self._tick)
        if self.shared.stopping:
            self.session.goaway()
        if data:
            self.data_received(data)
        else:
            self.flush()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Only for a listener that makes us directly (tests); connection.py uses ``take_over``."""
        self.take_over(transport, b"", self.shared.gate.admit())  # type: ignore[arg-type]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.shared.counts.connections_open -= 1
        self.shared.connections.discard(self)
        if self._admitted:
            self._admitted = False
            self.shared.gate.release()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.session.close(ErrorCodes.CANCEL, "connection lost")
        for ex in list(self._exchanges.values()):
            ex.lost()  # (their tasks end; exchange_done forgets them)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("client went away"))
        self._drain_waiters.clear()

    def stop(self) -> None:
        """Shutdown: GOAWAY; the streams in flight finish, then the connection closes."""
        self.session.goaway()
        self.flush()
        if self.session.finished:
            self._finish()

    def retire(self) -> None:
        """A successor front end serves the port: GOAWAY sends the client's next streams there."""
        self.stop()

    def force_close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _finish(self) -> None:
        """Nothing left to do: the final GOAWAY, then close once it is written."""
        self.session.close()
        self.write_now()
        if self.transport is not None:
            self.transport.close()

    @property
    def addresses(self) -> tuple[Any, Any]:
        if self._addresses is None:
            transport = self.transport
            if transport is None:
                return None, None
            self._addresses = (_address(transport.get_extra_info("peername")),
                               _address(transport.get_extra_info("sockname")))  # fmt: skip
        return self._addresses

    # ------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self._handle(self.session.receive(data, self._loop.time()))
        self.flush()

    def eof_received(self) -> bool:
        return False  # the client's EOF closes the connection

    def _handle(self, events: list[Event]) -> None:
        exchanges = self._exchanges
        new: dict[int, H2Exchange] = {}
        ended: ConnectionEnded | None = None
        for event in events:
            kind = type(event)
            if kind is BodyReceived:
                ex = exchanges.get(event.stream_id)  # type: ignore[union-attr]
                if ex is not None and ex.body is not None:
                    ex.body.feed(event.data, event.end)  # type: ignore[union-attr]
            elif kind is Sent:
                ex = exchanges.get(event.stream_id)  # type: ignore[union-attr]
                if ex is not None:
                    ex.sent(event.bytes)  # type: ignore[union-attr]
            elif kind is StreamOpened:
                self._opened(event, new)  # type: ignore[arg-type]
            elif kind is StreamCancelled:
                ex = exchanges.get(event.stream_id)  # type: ignore[union-attr]
                if ex is not None:
                    if new.pop(ex.sid, None) is not None:  # opened and reset in one read: never started
                        self.exchange_done(ex)
                    else:
                        ex.lost()
            elif kind is ConnectionEnded:
                ended = event  # type: ignore[assignment]
        start = self.shared.requests.start
        for ex in new.values():
            start(ex)  # after the read's body bytes are in: a small body goes in the REQUEST
        if ended is not None:
            self._ended(ended)

    def _opened(self, opened: StreamOpened, new: dict[int, H2Exchange]) -> None:
        if not self._admitted:  # over --limit-concurrency: as HTTP/1, a 503 and the connection ends
            try:
                self.session.respond(opened.stream_id, 503, ((b"retry-after", RETRY_AFTER),), b"", end=True)
            except Misuse:
                pass
            self.session.goaway()
            return
        ex = H2Exchange(self, opened)
        self.shared.counts.streams += 1
        self._exchanges[opened.stream_id] = new[opened.stream_id] = ex
        self.shared.active += 1

    def _ended(self, ended: ConnectionEnded) -> None:
        name = _code_name(ended.error_code)
        if ended.by_client or ended.error_code == ErrorCodes.NO_ERROR:
            log.debug("HTTP/2 connection from %s ended: %s %s", _peer(self), name, ended.reason)
        else:
            log.warning("HTTP/2 connection from %s cut: GOAWAY %s (%s)", _peer(self), name, ended.reason)
            self.shared.counts.cut(name)
        self.write_now()
        if self.transport is not None:
            self.transport.close()  # after the GOAWAY is written

    # ------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write what the session has, once per loop iteration: the frames of every stream that
        answered meanwhile leave in one write (a write per response cost ~30% of the front end
        under h2load -m32)."""
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self.write_now)

    def write_now(self) -> None:
        self._flush_soon = False
        data = self.session.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def pause_writing(self) -> None:
        self.paused = True
        self._paused_since = self._loop.time()

    def resume_writing(self) -> None:
        self.paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        for ex in list(self._exchanges.values()):
            ex.drained()

    async def wait_writable(self, window: asyncio.Event) -> None:
        """Until the socket takes more (if full), else until ``window`` is set (bytes were sent)."""
        if self.paused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        else:
            await window.wait()

    def exchange_done(self, ex: H2Exchange) -> None:
        if self._exchanges.pop(ex.sid, None) is None:
            return
        self.shared.stream_done()
        if ex.status:
            self.shared.access.request_ended(ex)
        if not self._exchanges:
            self._idle_since = self._loop.time()
        if self.session.finished and self.transport is not None:
            self._finish()

    # ------------------------------------------------------------ timers

    def _tick(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None:
            return
        now = self._loop.time()
        self._handle(self.session.expire(now))
        self.flush()
        limits = self.shared.limits
        if self.paused and now - self._paused_since > limits.stall_timeout_s:
            log.info(
                "HTTP/2 client %s read nothing for %.0fs: connection aborted",
                _peer(self),
                limits.stall_timeout_s,
            )
            transport.abort()
            return
        if not self._exchanges and not self.session.open_streams:
            if self.session.finished or now - self._idle_since > self.shared.keepalive_s:
                self.session.goaway()
                self._finish()
                return
        self._timer = self._loop.call_later(TICK_S, self._tick)


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def _peer(proto: H2Protocol) -> str:
    client = proto.addresses[0]
    return f"{client[0]}:{client[1]}" if client else "?"


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
