"""One client connection: aiohttp's ``RequestHandler`` plus the limits aiohttp lacks.

* Header read timeout (slowloris). The clock starts at the first byte of a
  request's head, on a connection that is waiting for a request (aiohttp's own
  idle test: its ``_waiter`` is pending, or nothing was parsed yet), and stops
  when the parser produced the request (or an error). Past it the client gets
  ``408`` with ``connection: close`` and the connection is closed. While a head
  is arriving aiohttp's keep-alive timer is off: it would close the connection
  silently, and a head in progress is not idleness; aiohttp re-arms it after
  the response as usual. A body that arrives slowly is bounded by the credit
  window, not by this timer.
* ``--limit-concurrency``: connections beyond it are served, but only with
  ``503`` + ``Retry-After`` + ``connection: close`` for their first request (as
  uvicorn), so a client learns why instead of seeing a reset. They do not count
  against the limit themselves.
* Parse errors: aiohttp answers every one ``400`` and logs a traceback. Here:
  ``414`` for a request line over ``--limit-max-line-size``, ``431`` for a
  header field over ``--limit-max-header-size`` or more than
  ``--limit-max-headers`` fields, ``400`` for the rest (smuggling attempts
  included: CL+TE, duplicate or bad Content-Length, obs-fold, bad chunk
  sizes); always ``connection: close``, a short body that echoes nothing, and
  one log line. A bad chunk in a body that is already streaming to a worker
  fails that request's body (the bridge answers 400, the worker gets RESET).

aiohttp's private names used here (``_waiter``, ``_request_count``,
``_keepalive_handle``, ``_request_handler``, ``_messages``, ``_current_request``,
``_ErrInfo``) are the ones its own
keep-alive and shutdown logic rely on; tests/frontend/test_limits.py covers
each behaviour, so an aiohttp upgrade that moves them fails loudly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from .responses import error_response

log = logging.getLogger(__name__)

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 20\r\n\r\n408 Request Timeout\n"
)
RETRY_AFTER_S = 1  # for a connection refused by --limit-concurrency


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


class Connection(RequestHandler):
    __slots__ = (
        "_gate",
        "_admitted",
        "_head_timeout_s",
        "_head_timer",
        "_head_count",
        "_head_bytes",
        "_line_len",
        "addresses",
    )

    def __init__(self, manager: web.Server, *, gate: Gate, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._admitted = False
        self._head_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0  # _request_count when the timer was armed
        self._head_bytes = 0  # of the head in progress, until its request line ended
        self._line_len: int | None = None  # that request line's length, once known
        self.addresses: tuple[Any, Any] | None = None  # (client, server), set by http_bridge once

    # ------------------------------------------------------------ lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._admitted = self._gate.admit()
        if not self._admitted:
            self._request_handler = _over_limit
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.release()
        self._disarm()
        super().connection_lost(exc)

    # ------------------------------------------------------------ header timeout

    def data_received(self, data: bytes) -> None:
        timing = self._head_timer is not None
        starting = not timing and self._awaiting_request()
        if starting:
            self._head_bytes, self._line_len = 0, None
        if (starting or timing) and self._line_len is None:  # where the request line ends: 414 or 431
            newline = data.find(b"\n")
            if newline >= 0:
                self._line_len = self._head_bytes + newline
            self._head_bytes += len(data)
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self._disarm()  # the head is complete (or failed): the handler takes over
            messages = self._messages
            if messages and type(messages[-1][0]) is _ErrInfo:
                self._fail_current_body()
        elif starting and not self._force_close:
            self._arm()  # a partial head: the clock runs from its first byte

    def _fail_current_body(self) -> None:
        """llhttp reports a bad chunk of a streamed body as a parse error *after* the request,
        not to the request's payload: the handler would wait for the rest forever. Tell it."""
        last = self._messages[-1][0] if self._messages else None
        request = self._current_request
        if type(last) is _ErrInfo and request is not None and not request.content.is_eof():
            request.content.set_exception(last.exc)

    def _awaiting_request(self) -> bool:
        if self._request_count == 0:
            return not self._messages  # nothing parsed yet on this connection
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        keepalive = self._keepalive_handle
        if keepalive is not None:  # a head in progress is not idleness; aiohttp re-arms it later
            keepalive.cancel()
            self._keepalive_handle = None
        self._head_count = self._request_count
        self._head_timer = self._loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._force_close or self._request_count != self._head_count:
            return
        log.info("request head not received within %.1fs from %s: 408", self._head_timeout_s, _peer(self))
        transport.write(TIMEOUT_RESPONSE)
        self.force_close()  # closes the transport after the write is flushed

    # ------------------------------------------------------------ parse errors

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        status = self._status_of(exc)
        detail = (exc.message or type(exc).__name__).splitlines()[0][:120]
        log.info("bad request from %s: %d %s", _peer(self), status, detail)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started")
        return bad_request(status)

    def _status_of(self, exc: HttpProcessingError) -> int:
        if isinstance(exc, LineTooLong):
            line = self._line_len
            return 414 if line is None or line > self.max_line_size else 431
        if isinstance(exc, BadHttpMessage) and "Too many headers" in (exc.message or ""):
            return 431
        return 400


def bad_request(status: int = 400) -> web.Response:
    """A client error that ends the connection: short body, ``connection: close`` said explicitly
    (also to an HTTP/1.0 request, where closing is the default but smugglers must read it)."""
    resp = error_response(status, close=True)
    resp.headers["Connection"] = "close"
    return resp


async def _over_limit(request: web.BaseRequest) -> web.StreamResponse:
    resp = error_response(503, retry_after_s=RETRY_AFTER_S, close=True)
    resp.headers["Connection"] = "close"
    return resp


def _peer(conn: RequestHandler) -> str:
    peer = conn.transport.get_extra_info("peername") if conn.transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
