"""One client connection: our own ``asyncio.Protocol`` on aiohttp's C HTTP parser (llhttp).

Theory of operation. ``data_received`` feeds the parser; each parsed request
(aiohttp's ``RawRequestMessage`` + body ``StreamReader``) joins a FIFO, and
one at a time goes to the request path (``HttpRequests.start``) with its
``response.ResponseWriter``, so pipelined requests are answered in order.
When its response is done (``response_done``) the connection logs it
(``AccessLog.request_ended``) and starts the next one, or closes (no
keep-alive, a body left unread, shutdown). No aiohttp web object is built per
request; the writer writes responses straight to the transport.
Flow control, as aiohttp's ``BaseProtocol`` does it (written here: compiled,
a native class extends no Python class): a body ``StreamReader`` over its
limit pauses the parser and the socket, a full socket buffer pauses writers
(``drain``). At most ``MAX_QUEUED`` requests
wait parsed; then the socket is paused until half of them are answered.

* WebSocket upgrades go to ``ws_connection.WsConnection`` (``Upgrades.hand_over``;
  upgrade.py): when the upgrade request's turn comes, the parsed message and
  the bytes that followed it go with the transport.
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
* Parse errors (parse_errors.py: 414, 431, 400; smuggling attempts
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

What the connection does with the bytes it reads is one phase (``ConnPhase``,
``TRANSITIONS``, written only by ``_to``):

    READING ──> UPGRADING ──> HANDED_OVER     (a WsConnection has the transport)
       │  <──────┘ │                          (the upgrade answered as plain HTTP)
       ├──> STOPPING (shutdown: the current request's body only, then close)
       ├──> LINGERING (an unread body dropped, then close)
       ├──> FAILED (a parse error or 408: nothing more is read; answer, close)
       └──> CLOSED (from every phase: the transport is gone)

Within READING, idle / reading a head / busy follow from ``_current``,
``_queue`` and the head timer; ``_retiring`` (retire.py) is a mode of READING
and STOPPING (each response closes after it). ``_in_next`` is a re-entry guard.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

from aiohttp._http_parser import HttpRequestParser
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.tcp_helpers import tcp_keepalive, tcp_nodelay
from aiohttp.web_protocol import RequestPayloadError
from mypy_extensions import mypyc_attr
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import handoff
# (AccessLog, HttpRequests, Upgrades: imported at run time, not only for type checking, because
# the compiled ``Shared`` dataclass records its fields' types when the module loads.)
from .access_log import AccessLog
from .config import HttpLimits
from .gate import Gate
from .http_requests import HttpRequests
from .parse_errors import ParseError, error, status_of
from .request_head import addresses
from .response import ResponseWriter
from .upgrade import Upgrades, is_websocket

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # for a connection refused by --limit-concurrency
MAX_QUEUED = 32  # parsed requests waiting their turn (aiohttp's MAX_MSG_QUEUE_SIZE)
MAX_UPGRADE_TAIL = 2**16  # bytes after an upgrade request held until it is handed over
LINGER_S = 10.0  # a body left unread is read and dropped this long before closing (aiohttp's)


class ConnPhase(Enum):
    READING = "reading"  # parsing requests, serving them in turn
    UPGRADING = "upgrading"  # the parser switched protocols: what follows is held for the WebSocket
    STOPPING = "stopping"  # shutdown: the current request's body is read, nothing new; then close
    LINGERING = "lingering"  # a body the app left unread is read and dropped, then close
    FAILED = "failed"  # the parser hit an error (or the head timed out): nothing more is read
    HANDED_OVER = "handed over"  # the transport went to a WsConnection (a WebSocket upgrade) or to HTTP/2
    CLOSED = "closed"


_ENDING = frozenset({ConnPhase.LINGERING, ConnPhase.FAILED, ConnPhase.CLOSED})
TRANSITIONS: dict[ConnPhase, frozenset[ConnPhase]] = {
    # (-> HANDED_OVER from READING or STOPPING: HTTP/2 by ALPN or its preface, h2_connection)
    ConnPhase.READING: frozenset({ConnPhase.UPGRADING, ConnPhase.STOPPING, ConnPhase.HANDED_OVER}) | _ENDING,
    ConnPhase.UPGRADING: frozenset({ConnPhase.READING, ConnPhase.STOPPING, ConnPhase.HANDED_OVER}) | _ENDING,
    ConnPhase.STOPPING: frozenset({ConnPhase.HANDED_OVER}) | _ENDING,
    ConnPhase.LINGERING: frozenset({ConnPhase.FAILED, ConnPhase.CLOSED}),
    ConnPhase.FAILED: frozenset({ConnPhase.CLOSED}),
    ConnPhase.HANDED_OVER: frozenset({ConnPhase.CLOSED}),  # (connection_lost goes to aiohttp's)
    ConnPhase.CLOSED: frozenset(),
}


@mypyc_attr(native_class=False)  # compiled (wire/compiled.py): mypyc cannot subclass RuntimeError natively
class IllegalTransition(RuntimeError):
    pass


# What transport.pause_reading() / resume_reading() raise on a transport without flow control.
_NO_FLOW_CONTROL = (AttributeError, NotImplementedError, RuntimeError)


@dataclass(eq=False)
class Shared:
    """What every connection of one listener shares (server.py builds it)."""

    limits: HttpLimits
    gate: Gate
    requests: HttpRequests  # takes each request in turn; its writer's finish() comes back here
    access: AccessLog  # access log + metrics, once per answered request
    upgrades: Upgrades  # WebSocket upgrades: a WsConnection takes the transport
    connections: set[Any] = field(default_factory=set)  # (HTTP/2's too: h2_connection)
    stopping: bool = False
    retiring: bool = False  # a successor serves the port: every response says connection: close
    # HTTP/2 (h2_connection.H2Shared.take_over(transport, bytes read, admitted)); None: HTTP/1 only.
    # ``alpn``: the listener is TLS and offers "h2", so connection_made asks what was chosen.
    h2: Callable[[Any, bytes, bool], None] | None = None
    alpn: bool = False


# What the access log shows for a request the parser refused (aiohttp's server logged its own).
_UNPARSED = RawRequestMessage(
    "-", "-", HttpVersion11, CIMultiDictProxy(CIMultiDict()), (), True, None, False, False, URL("/")
)


class Connection:
    """An ``asyncio.Protocol`` (the loop calls its methods; no base class: compiled, it is a native
    class, which can extend no Python class) with the flow control of aiohttp's ``BaseProtocol``
    that the parser's body readers call (``pause_reading``, ``resume_reading``, ``connected``)."""

    __slots__ = (
        "_shared", "_queue", "_current", "_phase", "_gate", "_in_next",
        "_keepalive_s", "_keepalive_timer", "_idle_since", "_head_timer", "_head_bytes", "_line_len",
        "_upgrade_tail", "_addresses", "_lingering", "_retiring", "tls", "paused",
        "transport", "_loop", "_parser", "_drain_waiter", "_reading_paused", "_buffer_paused",
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
        self._loop = loop
        self._parser: Any = parser  # (None once handed over)
        self.transport: asyncio.Transport | None = None
        self._shared = shared
        self._queue: deque[tuple[Any, Any]] = deque()
        self._current: ResponseWriter | None = None
        self._phase = ConnPhase.READING
        self._gate: Gate | None = None  # the --limit-concurrency gate whose slot we hold
        self._retiring = False  # answer what comes with connection: close; idle: the keep-alive timeout
        self._in_next = False
        self._keepalive_s = limits.keepalive_timeout_s
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the head in progress, until its request line ended
        self._line_len: int | None = None  # that request line's length, once known
        self._upgrade_tail = b""  # (UPGRADING) the bytes after the upgrade request
        self._addresses: tuple[Any, Any] | None = None
        self._lingering: Any = None  # (LINGERING) the unread body being dropped before the close
        self.tls: Any = None  # the request path's per-connection cache of the TLS extension
        self.paused = False  # (pause_writing) a writer should ``drain`` before the next request
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False  # a body reader is over its limit (pause_reading)
        self._buffer_paused = False  # too many requests queued, or an upgrade's tail held

    @property
    def early_hints(self) -> bool:
        """--early-hints: the response writer may send 103 to this HTTP/1.1 client."""
        return self._shared.limits.early_hints

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = self.transport = cast(asyncio.Transport, transport)  # (a stream server's are)
        tcp_nodelay(tr, True)
        tcp_keepalive(tr)
        if self._shared.gate.admit():
            self._gate = self._shared.gate
        self._shared.connections.add(self)
        if self._shared.stopping:  # accepted as shutdown began: closed at once
            self._to(ConnPhase.STOPPING)
        self._retiring = self._shared.retiring  # accepted as a retirement began: one answer, then close
        if self._shared.alpn:
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
                self._to_h2(b"")
                return
        self._idle()  # the keep-alive clock also bounds a connection that never sends a request

    def connection_lost(self, exc: BaseException | None) -> None:
        self._shared.connections.discard(self)
        if self._gate is not None:
            self._gate.release()
            self._gate = None
        self._to(ConnPhase.CLOSED)
        self._cancel_timers()
        self.transport = None
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():  # a writer waiting in drain(): gone
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(ConnectionResetError(f"client went away: {exc}"))
        current, self._current = self._current, None
        payloads = [payload for _, payload in self._queue] + [self._lingering]
        self._queue.clear()
        if current is not None:
            payloads.append(current.payload)
        for payload in payloads:
            if payload is not None and payload is not EMPTY_PAYLOAD and not payload.is_eof():
                payload.set_exception(ConnectionResetError("client went away"))
        if current is not None and not current.done:
            current.lost()  # the worker hears DISCONNECT

    def eof_received(self) -> bool:
        return False  # the client's EOF closes the connection (as aiohttp's handler did)

    @property
    def addresses(self) -> tuple[Any, Any]:
        """(client, server) of the TCP connection: asked once per connection (each is a syscall)."""
        pair = self._addresses
        if pair is None:
            if self.transport is None:
                return None, None
            pair = self._addresses = addresses(self.transport)
        return pair

    # ------------------------------------------------------------ flow control

    def pause_writing(self) -> None:
        self.paused = True  # the transport's buffer is over its high-water mark: writers ``drain``

    def resume_writing(self) -> None:
        self.paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Until the socket's buffer is below its high-water mark; ConnectionResetError once the
        client is gone."""
        if not self.paused:
            return
        if self.transport is None:
            raise ConnectionResetError("client went away")
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        await waiter

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def pause_reading(self) -> None:
        """A body reader over its limit (aiohttp's StreamReader): parse and read no more."""
        self._reading_paused = True
        if self._parser is not None:
            self._parser.pause_reading()
        self._pause_transport_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        """The body reader drained: parse what the pause left unparsed, read again."""
        self._reading_paused = False
        if resume_parser:
            self.data_received(b"")
        if not self._reading_paused and not self._buffer_paused:  # (parsing may have paused again)
            self._resume_transport_reading()

    def _pause_reading_for_buffer(self) -> None:
        """Too much held here (queued requests, an upgrade's tail): stop reading the socket."""
        self._buffer_paused = True
        self._pause_transport_reading()

    def _resume_reading_for_buffer(self) -> None:
        self._buffer_paused = False
        if not self._reading_paused:
            self._resume_transport_reading()

    def _pause_transport_reading(self) -> None:
        if self.transport is not None:
            try:
                self.transport.pause_reading()
            except _NO_FLOW_CONTROL:
                pass

    def _resume_transport_reading(self) -> None:
        if self.transport is not None:
            try:
                self.transport.resume_reading()
            except _NO_FLOW_CONTROL:
                pass

    # ------------------------------------------------------------ phases

    @property
    def phase(self) -> ConnPhase:
        return self._phase

    def _to(self, phase: ConnPhase) -> None:
        if phase is not self._phase and phase not in TRANSITIONS[self._phase]:
            raise IllegalTransition(f"connection: {self._phase.name} -> {phase.name}")
        self._phase = phase

    def stop(self) -> None:
        """Shutdown: close when idle, at once if idle now; queued requests are not started."""
        if self._phase is ConnPhase.READING or self._phase is ConnPhase.UPGRADING:  # (others close anyway)
            self._to(ConnPhase.STOPPING)
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
            or self._phase is not ConnPhase.READING
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

    # ------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is not ConnPhase.READING:
            if phase is ConnPhase.UPGRADING:  # bytes of the upgraded protocol: the WebSocket's, in its turn
                self._upgrade_tail += data
                if len(self._upgrade_tail) > MAX_UPGRADE_TAIL and not self._buffer_paused:
                    self._pause_reading_for_buffer()
                return
            if not self._body_arriving():  # (STOPPING, LINGERING: only a body still arriving is read)
                return
        if self.transport is None:
            return
        timing = self._head_timer is not None
        starting = (
            bool(data)
            and not timing
            and self._current is None
            and not self._queue
            and phase is ConnPhase.READING
        )
        if starting:
            if data[:4] == b"PRI " and self._shared.h2 is not None:  # HTTP/2's preface: h2c
                self._to_h2(data)
                return
            self._head_bytes, self._line_len = 0, None
        if (starting or timing) and self._line_len is None:  # where the request line ends: 414 or 431
            newline = data.find(b"\n")
            if newline >= 0:
                self._line_len = self._head_bytes + newline
            self._head_bytes += len(data)
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._disarm()
            self._parse_error(exc)
            return
        if upgraded and phase is ConnPhase.READING:  # (else the connection closes after this request)
            self._to(ConnPhase.UPGRADING)
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

    def _body_arriving(self) -> bool:
        """STOPPING or LINGERING: a body still arriving (the current request's, or the one dropped)?"""
        if self._phase is ConnPhase.LINGERING:
            payload = self._lingering
        elif self._phase is ConnPhase.STOPPING and self._current is not None:
            payload = self._current.payload
        else:
            return False
        return payload is not None and payload is not EMPTY_PAYLOAD and not payload.is_eof()

    def _parse_error(self, exc: HttpProcessingError) -> None:
        self._to(ConnPhase.FAILED)  # llhttp stays in its error state: nothing more can be parsed
        last = self._queue[-1][1] if self._queue else (self._current.payload if self._current else None)
        if last is not None and last is not EMPTY_PAYLOAD and not last.is_eof():
            # A bad chunk of a body still arriving: llhttp reports it here, not to the body's
            # reader, which would wait for the rest forever. Its request fails (400 + RESET).
            last.set_exception(exc)
            return
        status = status_of(exc, self._line_len, self._shared.limits.max_line_bytes)
        detail = (exc.message or type(exc).__name__).splitlines()[0][:120]
        log.info("bad request from %s: %d %s", _peer(self.transport), status, detail)
        self._queue.append((ParseError(status), None))
        if self._current is None:
            self._next()

    # ------------------------------------------------------------ requests in turn

    def _next(self) -> None:
        """Start queued requests while none is in progress (re-entry safe: a request the bridge
        finishes synchronously comes back here through ``response_done``)."""
        if self._in_next:
            return
        self._in_next = True
        try:
            while (
                self._current is None
                and self._queue
                and self.transport is not None
                and self._phase is not ConnPhase.LINGERING
            ):
                message, payload = self._queue.popleft()
                parser = self._parser
                if parser is not None:
                    parser.message_consumed()
                unpaused = self._phase is not ConnPhase.UPGRADING
                if self._buffer_paused and len(self._queue) <= MAX_QUEUED // 2 and unpaused:
                    self.data_received(b"")  # parse what the pause left unparsed
                    if len(self._queue) < MAX_QUEUED:
                        self._resume_reading_for_buffer()
                if type(message) is ParseError:
                    self._refuse(ResponseWriter(self, _UNPARSED, EMPTY_PAYLOAD), error(message.status))
                    return
                writer = ResponseWriter(self, message, payload)
                if self._retiring:
                    writer.keep_alive = False  # its response says connection: close
                if self._gate is None:  # over --limit-concurrency
                    self._refuse(writer, error(503, message.version, retry_after_s=RETRY_AFTER_S))
                    return
                self._current = writer
                if self._phase is ConnPhase.UPGRADING and not self._queue and is_websocket(message):
                    self._hand_over(writer)
                    return
                self._shared.requests.start(writer)
        finally:
            self._in_next = False
        if self._current is None and not self._queue and self.transport is not None:
            self._idle()

    def response_done(self, writer: ResponseWriter) -> None:
        """``writer``'s response is complete or abandoned (``ResponseWriter.finish``)."""
        if self._current is not writer:
            return
        self._current = None
        if writer.status:
            self._shared.access.request_ended(writer)
        payload = writer.payload
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():
            # A body left unread (an early answer, 413...): closing now, with its bytes unread in
            # our socket, would send the client a reset that can destroy the response before it
            # reads it. Read and drop the rest for a while first, as aiohttp did; then close.
            self._queue.clear()
            if self._phase is ConnPhase.FAILED:  # a bad body: the parser reads no more of it
                self._close()
                return
            self._to(ConnPhase.LINGERING)
            self._lingering = payload
            self._loop.create_task(self._drop_body(payload))
            return
        transport = self.transport
        stopping = self._phase is ConnPhase.STOPPING
        if not writer.keep_alive or stopping or transport is None or transport.is_closing():
            self._close()  # (a client that went away: its queued requests are not started)
            return
        if self._phase is ConnPhase.UPGRADING and not self._queue:  # an upgrade (CONNECT...) answered as HTTP
            self._to(ConnPhase.READING)
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

    def _refuse(self, writer: ResponseWriter, response: bytes) -> None:
        """Our own answer to a request no worker sees: counted and logged like any, then close."""
        writer.status = int(response[9:12])
        writer.bytes_out = len(response)
        self._shared.access.request_ended(writer)
        self._answer_and_close(response)

    def _answer_and_close(self, response: bytes) -> None:
        self._queue.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(response)
        self._close()

    def _hand_over(self, writer: ResponseWriter) -> None:
        """A WebSocket upgrade: a ``WsConnection`` takes the transport, the request head and the tail."""
        message = writer.message
        if writer.payload is not EMPTY_PAYLOAD:  # a body we already consumed: cannot be replayed
            self._answer_and_close(error(400, message.version))
            return
        transport = self.transport
        assert transport is not None  # the upgrade request just arrived on it
        tail, self._upgrade_tail = self._upgrade_tail, b""
        self._current = None
        self._cancel_timers()
        self._shared.connections.discard(self)
        admitted, self._gate = self._gate is not None, None  # the gate slot goes with the transport
        self._to(ConnPhase.HANDED_OVER)
        if self._buffer_paused or self._reading_paused:
            self._buffer_paused = self._reading_paused = False
            self._resume_transport_reading()
        self.transport = None  # ours no more: connection_lost goes to the new protocol
        self._shared.upgrades.hand_over(transport, message, tail, admitted)

    def _to_h2(self, data: bytes) -> None:
        """HTTP/2 (ALPN h2, or the h2c preface): h2_connection takes the transport and ``data``."""
        transport = self.transport
        self._cancel_timers()
        self._shared.connections.discard(self)
        admitted, self._gate = self._gate is not None, None  # the gate slot goes with the transport
        self._to(ConnPhase.HANDED_OVER)
        self.transport = None  # ours no more: connection_lost goes to the new protocol
        assert self._shared.h2 is not None
        self._shared.h2(transport, data, admitted)

    # ------------------------------------------------------------ timers

    def _idle(self) -> None:
        if self._phase is ConnPhase.STOPPING:
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
        self._to(ConnPhase.FAILED)
        self._answer_and_close(error(408))


def _peer(transport: Any) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
