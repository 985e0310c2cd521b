"""One client connection: our own ``asyncio.Protocol`` on aiohttp's C HTTP parser (llhttp).

Theory of operation. ``data_received`` feeds the parser; each parsed request
(aiohttp's ``RawRequestMessage`` + body ``StreamReader``) joins a FIFO, and
one ``exchange.Exchange`` at a time is handed to the bridge (``Shared.start``),
so pipelined requests are answered in order. When the bridge finishes it,
the connection logs it (``Shared.finished``) and starts the next one, or
closes (no keep-alive, a body left unread, shutdown). No aiohttp web object
is built per request; the bridge writes responses straight to the transport.
Flow control comes from ``aiohttp.base_protocol.BaseProtocol``: a body
``StreamReader`` over its limit pauses the parser and the socket, a full
socket buffer pauses writers (``drain``). At most ``MAX_QUEUED`` requests
wait parsed; then the socket is paused until half of them are answered.

* WebSocket upgrades go to aiohttp (``Shared.upgrade``; upgrade.py): when
  the upgrade request's turn comes, its head is rebuilt from the parsed
  message, and with the bytes that followed it handed to an aiohttp
  ``RequestHandler`` that takes over the transport.
* Header read timeout (slowloris): the clock starts at the first byte of a
  request's head on an idle connection and stops when the parser produced
  the request (or an error). Past it: ``408`` + ``connection: close``. A body
  that arrives slowly is bounded by the credit window, not by this timer.
* Keep-alive timeout: an idle connection (also a new one that sends nothing)
  is closed after ``keepalive_timeout_s``; one timer per connection, re-armed
  only when it fires early (no timer churn per request).
* ``--limit-concurrency``: connections beyond it are served, but only with
  ``503`` + ``Retry-After`` + ``connection: close`` for their first request (as
  uvicorn), so a client learns why instead of seeing a reset. They do not count
  against the limit themselves.
* Parse errors: ``414`` for a request line over ``--limit-max-line-size``,
  ``431`` for a header field over ``--limit-max-header-size`` or more than
  ``--limit-max-headers`` fields, ``400`` for the rest (smuggling attempts
  included: CL+TE, duplicate or bad Content-Length, obs-fold, bad chunk
  sizes); always ``connection: close``, a short body that echoes nothing, and
  one log line, in order after the requests before it (and an access-log
  line and metrics count, as for a 503 over ``--limit-concurrency``). A bad chunk in a body
  that is still arriving fails that request's body instead (the bridge
  answers 400, the worker gets RESET).
* A request body the app left unread is read and dropped for up to
  ``LINGER_S`` after the response, then the connection closes (a close with
  unread bytes would reset it, possibly before the client read the answer).
* Shutdown (``stop``): an idle connection closes at once; a busy one after
  its current response (queued pipelined requests are dropped, as aiohttp).
* Retirement (retire.py: a successor front end serves the port): an idle
  connection may be handed to the successor (``hand_off``, handoff.py).
  Otherwise (``retire``) nothing closes early. The next response says ``connection: close`` and the
  connection closes after it; an idle one closes at its keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs
from aiohttp._http_parser import HttpRequestParser
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.tcp_helpers import tcp_keepalive
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import handoff, http1
from .config import HttpLimits
from .exchange import Exchange

log = logging.getLogger(__name__)

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 20\r\n\r\n408 Request Timeout\n"
)
RETRY_AFTER_S = 1  # for a connection refused by --limit-concurrency
MAX_QUEUED = 32  # parsed requests waiting their turn (aiohttp's MAX_MSG_QUEUE_SIZE)
MAX_UPGRADE_TAIL = 2**16  # bytes after an upgrade request held until it is handed over
LINGER_S = 10.0  # a body left unread is read and dropped this long before closing (aiohttp's)


@dataclass
class Gate:
    """Connections admitted under ``--limit-concurrency`` (None: no limit)."""

    limit: int | None
    open: int = 0
    refused: int = 0  # since the last log line: a flood of connections logs once a second
    _logged_at: float = 0.0

    def admit(self) -> bool:
        if self.limit is not None and self.open >= self.limit:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged_at >= 1.0:
                log.warning(
                    "over --limit-concurrency %d: %d connection(s) answered 503", self.limit, self.refused
                )
                self._logged_at, self.refused = now, 0
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


@dataclass(eq=False)
class Shared:
    """What every connection of one listener shares (server.py builds it)."""

    limits: HttpLimits
    gate: Gate
    start: Callable[[Exchange], None]  # the bridge takes a request: it calls Exchange.finish later
    finished: Callable[[Exchange], None]  # access log + metrics, once per answered request
    upgrade: Callable[[Any, bytes, bool], None]  # (transport, request bytes, admitted): to aiohttp
    connections: set[Connection] = field(default_factory=set)
    stopping: bool = False
    retiring: bool = False  # a successor serves the port: every response says connection: close


# What the access log shows for a request the parser refused (aiohttp's server logged its own).
_UNPARSED = RawRequestMessage(
    "-", "-", HttpVersion11, CIMultiDictProxy(CIMultiDict()), (), True, None, False, False, URL("/")
)


class _ParseError:
    """A queued parse error: answered in its turn, after the requests before it."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


class Connection(BaseProtocol):
    __slots__ = (
        "_shared", "_queue", "_current", "_admitted", "_failed", "_stopping", "_in_next",
        "_keepalive_s", "_keepalive_timer", "_idle_since", "_head_timer", "_head_bytes", "_line_len",
        "_upgrade_tail", "_upgrading", "_addresses", "_lingering", "_retiring", "tls",
    )  # fmt: skip

    def __init__(self, shared: Shared, loop: asyncio.AbstractEventLoop) -> None:
        limits = shared.limits
        parser = HttpRequestParser(
            self, loop, DEFAULT_CHUNK_SIZE,
            max_line_size=limits.max_line_bytes, max_field_size=limits.max_field_bytes,
            max_headers=limits.max_headers, payload_exception=RequestPayloadError,
            auto_decompress=False,  # the body goes to the app as the client sent it
            max_msg_queue_size=MAX_QUEUED,
        )  # fmt: skip
        super().__init__(loop, parser)
        self._shared = shared
        self._queue: deque[tuple[Any, Any]] = deque()
        self._current: Exchange | None = None
        self._admitted = False
        self._failed = False  # the parser hit an error: nothing more is read
        self._stopping = False
        self._retiring = False  # answer what comes with connection: close; idle: the keep-alive timeout
        self._in_next = False
        self._keepalive_s = limits.keepalive_timeout_s
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the head in progress, until its request line ended
        self._line_len: int | None = None  # that request line's length, once known
        self._upgrading = False  # the parser switched protocols after the last queued request
        self._upgrade_tail = b""
        self._addresses: tuple[Any, Any] | None = None
        self._lingering: Any = None  # the unread body being dropped before the close
        self.tls: Any = None  # the bridge's per-connection cache of the TLS extension

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # TCP_NODELAY
        tcp_keepalive(transport)  # type: ignore[arg-type]
        self._admitted = self._shared.gate.admit()
        self._shared.connections.add(self)
        self._stopping = self._shared.stopping  # accepted as shutdown began: closed at once
        self._retiring = self._shared.retiring  # accepted as a retirement began: one answer, then close
        self._idle()  # the keep-alive clock also bounds a connection that never sends a request

    def connection_lost(self, exc: BaseException | None) -> None:
        self._shared.connections.discard(self)
        if self._admitted:
            self._admitted = False
            self._shared.gate.release()
        self._cancel_timers()
        super().connection_lost(exc)  # transport None; a writer waiting in drain() gets ConnectionError
        current, self._current = self._current, None
        payloads = [payload for _, payload in self._queue] + [self._lingering]
        self._queue.clear()
        if current is not None:
            payloads.append(current.payload)
        for payload in payloads:
            if payload is not None and payload is not EMPTY_PAYLOAD and not payload.is_eof():
                payload.set_exception(ConnectionResetError("client went away"))
        if current is not None and not current.done:
            current.done = True
            if current.task is not None:
                current.task.cancel()  # the bridge sends DISCONNECT
            elif current.on_lost is not None:
                current.on_lost(current)

    def eof_received(self) -> bool:
        return False  # the client's EOF closes the connection (as aiohttp's handler did)

    @property
    def addresses(self) -> tuple[Any, Any]:
        """(client, server) of the TCP connection: asked once per connection (each is a syscall)."""
        pair = self._addresses
        if pair is None:
            transport = self.transport
            if transport is None:
                return None, None
            pair = self._addresses = (
                _address(transport.get_extra_info("peername")),
                _address(transport.get_extra_info("sockname")),
            )
        return pair

    def stop(self) -> None:
        """Shutdown: close when idle, at once if idle now; queued requests are not started."""
        self._stopping = True
        self._queue.clear()
        current = self._current
        if current is None:
            self._close()
        elif current.status == 0:
            current.keep_alive = False  # its response will say connection: close

    def retire(self) -> None:
        """A successor serves the port: the next response says connection: close (the current one
        too if not started); an idle connection stays until its keep-alive timeout, because closing
        it now would race the request the client may be sending on it."""
        self._retiring = True
        current = self._current
        if current is not None and current.status == 0:
            current.keep_alive = False

    def hand_off(self, send: Callable[[int], bool]) -> bool:
        """Retirement with a successor to adopt connections (handoff.py): if idle (nothing in
        progress, queued, half read or unwritten) and plain TCP, ``send`` our socket's descriptor
        to it and let go of our copy, which the client does not notice. Whether it went."""
        transport = self.transport
        if (
            transport is None
            or transport.is_closing()
            or self._current is not None
            or self._queue
            or self._head_timer is not None
            or self._lingering is not None
            or self._upgrading
            or self._failed
            or transport.get_write_buffer_size()
        ):
            return False
        fd = handoff.descriptor(transport)
        if fd is None or not send(fd):
            return False
        self._close()  # closes our descriptor only: the successor's keeps the connection open
        return True

    def force_close(self) -> None:
        self._close()

    def _close(self) -> None:
        self._cancel_timers()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()  # after the buffered writes

    def _cancel_timers(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        self._disarm()

    async def drain(self) -> None:
        if self._paused:
            await self._drain_helper()  # raises ConnectionResetError once the client is gone

    # ------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        if self._failed or self.transport is None:
            return
        if self._upgrading:  # bytes of the upgraded protocol: aiohttp's, once the upgrade's turn comes
            self._upgrade_tail += data
            if len(self._upgrade_tail) > MAX_UPGRADE_TAIL and not self._buffer_paused:
                self._pause_reading_for_buffer()
            return
        timing = self._head_timer is not None
        starting = (
            bool(data)
            and not timing
            and self._current is None
            and not self._queue
            and self._lingering is None
        )
        if starting:
            self._head_bytes, self._line_len = 0, None
        if (starting or timing) and self._line_len is None:  # where the request line ends: 414 or 431
            newline = data.find(b"\n")
            if newline >= 0:
                self._line_len = self._head_bytes + newline
            self._head_bytes += len(data)
        try:
            messages, upgraded, tail = self._parser.feed_data(data)  # type: ignore[union-attr]
        except HttpProcessingError as exc:
            self._disarm()
            self._parse_error(exc)
            return
        if upgraded:
            self._upgrading = True
            self._upgrade_tail = tail
        if messages:
            if self._head_timer is not None:
                self._disarm()
            self._queue.extend(messages)
            if len(self._queue) >= MAX_QUEUED and not self._buffer_paused:
                self._pause_reading_for_buffer()
            if self._current is None:
                self._next()
        elif starting and self._current is None:
            self._arm()  # a partial head: the clock runs from its first byte

    def _parse_error(self, exc: HttpProcessingError) -> None:
        self._failed = True  # llhttp stays in its error state: nothing more can be parsed
        last = self._queue[-1][1] if self._queue else (self._current.payload if self._current else None)
        if last is not None and last is not EMPTY_PAYLOAD and not last.is_eof():
            # A bad chunk of a body still arriving: llhttp reports it here, not to the body's
            # reader, which would wait for the rest forever. Its request fails (400 + RESET).
            last.set_exception(exc)
            return
        status = self._status_of(exc)
        detail = (exc.message or type(exc).__name__).splitlines()[0][:120]
        log.info("bad request from %s: %d %s", _peer(self.transport), status, detail)
        self._queue.append((_ParseError(status), None))
        if self._current is None:
            self._next()

    def _status_of(self, exc: HttpProcessingError) -> int:
        if isinstance(exc, LineTooLong):
            line = self._line_len
            return 414 if line is None or line > self._shared.limits.max_line_bytes else 431
        if isinstance(exc, BadHttpMessage) and "Too many headers" in (exc.message or ""):
            return 431
        return 400

    # ------------------------------------------------------------ requests in turn

    def _next(self) -> None:
        """Start queued requests while none is in progress (re-entry safe: a request the bridge
        finishes synchronously comes back here through ``exchange_done``)."""
        if self._in_next:
            return
        self._in_next = True
        try:
            while (
                self._current is None
                and self._queue
                and self.transport is not None
                and self._lingering is None
            ):
                message, payload = self._queue.popleft()
                parser = self._parser
                if parser is not None:
                    parser.message_consumed()
                if self._buffer_paused and len(self._queue) <= MAX_QUEUED // 2 and not self._upgrading:
                    self.data_received(b"")  # parse what the pause left unparsed
                    if len(self._queue) < MAX_QUEUED:
                        self._resume_reading_for_buffer()
                if type(message) is _ParseError:
                    self._refuse(Exchange(self, _UNPARSED, EMPTY_PAYLOAD), http1.error(message.status))
                    return
                exchange = Exchange(self, message, payload)
                if self._retiring:
                    exchange.keep_alive = False  # its response says connection: close
                if not self._admitted:  # over --limit-concurrency
                    self._refuse(exchange, http1.error(503, message.version, retry_after_s=RETRY_AFTER_S))
                    return
                self._current = exchange
                if self._upgrading and not self._queue and _is_websocket(message):
                    self._hand_over(exchange)
                    return
                self._shared.start(exchange)
        finally:
            self._in_next = False
        if self._current is None and not self._queue and self.transport is not None:
            self._idle()

    def exchange_done(self, exchange: Exchange) -> None:
        """The bridge finished ``exchange`` (``Exchange.finish``)."""
        if self._current is not exchange:
            return
        self._current = None
        if exchange.status:
            self._shared.finished(exchange)
        payload = exchange.payload
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():
            # A body left unread (an early answer, 413...): closing now, with its bytes unread in
            # our socket, would send the client a reset that can destroy the response before it
            # reads it. Read and drop the rest for a while first, as aiohttp did; then close.
            self._queue.clear()
            self._lingering = payload
            self._loop.create_task(self._drop_body(payload))
            return
        transport = self.transport
        if not exchange.keep_alive or self._stopping or transport is None or transport.is_closing():
            self._close()  # (a client that went away: its queued requests are not started)
            return
        if self._upgrading and not self._queue:  # an upgrade (CONNECT...) answered as plain HTTP
            self._upgrading = False
            parser = self._parser
            if parser is not None:
                parser.set_upgraded(False)
            tail, self._upgrade_tail = self._upgrade_tail, b""
            if self._buffer_paused:
                self._resume_reading_for_buffer()
            if tail:
                self.data_received(tail)
        if self._queue or self._in_next:
            self._next()  # (re-entered from _next: that one goes on, and goes idle)
        else:
            self._idle()

    async def _drop_body(self, payload: Any) -> None:
        try:
            async with asyncio.timeout(LINGER_S):
                while not payload.is_eof():
                    await payload.readany()
        except Exception:  # (TimeoutError, the client's bad body or disconnect): close anyway
            pass
        finally:
            self._lingering = None
        self._close()

    def _refuse(self, exchange: Exchange, response: bytes) -> None:
        """Our own answer to a request no worker sees: counted and logged like any, then close."""
        exchange.status = int(response[9:12])
        exchange.bytes_out = len(response)
        self._shared.finished(exchange)
        self._answer_and_close(response)

    def _answer_and_close(self, response: bytes) -> None:
        self._queue.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(response)
        self._close()

    def _hand_over(self, exchange: Exchange) -> None:
        """A WebSocket upgrade: aiohttp's handler takes the transport, and the request again."""
        message = exchange.message
        if exchange.payload is not EMPTY_PAYLOAD:  # a body we already consumed: cannot be replayed
            self._answer_and_close(http1.error(400, message.version))
            return
        transport = self.transport
        data = _request_head(message) + self._upgrade_tail
        self._upgrade_tail = b""
        self._current = None
        self._cancel_timers()
        self._shared.connections.discard(self)
        admitted, self._admitted = self._admitted, False  # the gate slot goes with the transport
        if self._buffer_paused or self._reading_paused:
            self._buffer_paused = self._reading_paused = False
            self._resume_transport_reading()
        self.transport = None  # ours no more: connection_lost goes to the new protocol
        self._shared.upgrade(transport, data, admitted)

    # ------------------------------------------------------------ timers

    def _idle(self) -> None:
        if self._stopping:
            self._close()
            return
        self._idle_since = self._loop.time()
        if self._keepalive_timer is None:
            self._keepalive_timer = self._loop.call_at(self._idle_since + self._keepalive_s, self._keepalive)

    def _keepalive(self) -> None:
        self._keepalive_timer = None
        if self.transport is None or self._current is not None or self._queue or self._head_timer is not None:
            return  # busy: re-armed when it is idle again
        due = self._idle_since + self._keepalive_s
        if self._loop.time() < due:  # idle again since the timer was set: not long enough yet
            self._keepalive_timer = self._loop.call_at(due, self._keepalive)
            return
        self._close()

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self._shared.limits.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._current is not None or self._queue:
            return
        log.info(
            "request head not received within %.1fs from %s: 408",
            self._shared.limits.header_timeout_s, _peer(transport),
        )  # fmt: skip
        self._failed = True
        self._answer_and_close(TIMEOUT_RESPONSE)


def _is_websocket(message: Any) -> bool:
    return (
        message.method == "GET"
        and message.version >= (1, 1)
        and message.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"
    )


def _request_head(message: Any) -> bytes:
    """The request's head as the client sent it (raw target, raw header bytes), for aiohttp to parse."""
    version = message.version
    lines = [
        b"%s %s HTTP/%d.%d\r\n"
        % (message.method.encode(), message.path.encode("utf-8", "surrogateescape"), version[0], version[1])
    ]
    lines.extend(b"%s: %s\r\n" % pair for pair in message.raw_headers)
    lines.append(b"\r\n")
    return b"".join(lines)


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


def _peer(transport: Any) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
