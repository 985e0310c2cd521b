"""One HTTP stream: the ASGI app's ``receive``/``send`` over wire events.

``HttpCycle`` is uvicorn's RequestResponseCycle with the I/O taken out: the
connection ``feed``s it the front end's events (BODY, CREDIT, DISCONNECT,
RESET) and it ``emit``s RESPONSE/BODY/TRAILERS/PATHSEND/CREDIT/RESET through
an injected callable, so tests pass a list's ``append``. No zmq here.

State lives in the wire trackers (``RequestTracker`` for what the front end
sent, ``ResponseTracker`` for what we sent), plus two facts the wire cannot
know: a ``http.response.start`` held back to be coalesced with the first body
chunk (``_pending_start``), and a first ``CREDIT`` owed for Expect:
100-continue. Invariants:

* Credit (Rule 17) goes back when the app's ``receive()`` returns bytes,
  batched by ``ReceiveWindow``, and flushed whenever the app waits with
  nothing queued, so a slow trickle never stalls on batching.
* ``send()`` of a body waits while the response window is spent (Rule 16):
  a slow client pauses the app. Bodies leave in <= 64 KiB memoryview slices.
* A start is coalesced with a body sent in the same loop iteration; otherwise
  it leaves alone on the next tick (``call_soon``), so streaming headers are
  never delayed behind a slow first chunk.
* Once the client is gone (DISCONNECT, RESET, connection lost) ``receive()``
  returns ``http.disconnect`` and ``send()`` raises ``ClientDisconnected``.
* How the app ends decides what the front end hears (``_app_ended``): a
  complete response, or ``RESET(APP_ERROR)`` -- 500 before the start, an
  aborted client connection after it, never a silently truncated body.
* The stream is *closed* (``on_closed`` fires once) when the response is
  DONE and the request half finished, or on any RESET.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wire import (
    DEFAULT_LIMITS,
    ProtocolViolation,
    ReceiveWindow,
    RequestHalf,
    RequestTracker,
    ResetCode,
    ResponseHalf,
    ResponseTracker,
    SendWindow,
)
from wire import events as ev
from wire.scope import http_scope

log = logging.getLogger(__name__)

RESPONSE_CHUNK_BYTES = 64 * 1024  # Rule 16: small enough to interleave streams, big enough to be cheap
Emit = Callable[[Any], None]
_ENDED = (ResponseHalf.DONE, ResponseHalf.RESET)


class ClientDisconnected(OSError):
    """The client went away (or the stream was reset): ``send()`` cannot deliver.

    Not an error: the worker logs it at debug only (ASGI spec: servers should
    not log it as an error).
    """


@dataclass(frozen=True, slots=True, eq=False)
class StreamSettings:
    """What every stream of one connection shares, fixed at WELCOME."""

    request_window_bytes: int  # HELLO.window_bytes: what the front end may send us
    response_window_bytes: int  # WELCOME.window_bytes: what we may send it
    chunk_bytes: int = RESPONSE_CHUNK_BYTES
    request_slack_bytes: int = DEFAULT_LIMITS.max_payload_bytes  # Rule 16's one-event overrun
    trailers: bool = True  # front end accepted feature "trailers"
    pathsend: bool = False  # front end accepted feature "pathsend"
    state: dict[str, Any] | None = None  # lifespan state; each scope gets a shallow copy


class HttpCycle:
    def __init__(
        self,
        request: ev.Request,
        *,
        emit: Emit,
        settings: StreamSettings,
        on_closed: Callable[[HttpCycle], None] | None = None,
    ) -> None:
        """Raises ProtocolViolation if the REQUEST's first chunk overruns its window."""
        self.stream_id = request.stream_id
        self.scope = http_scope(request, state=settings.state)
        if not settings.trailers:
            del self.scope["extensions"]["http.response.trailers"]
        request_id = request.ext.get("request_id")
        self.request_id = None if request_id is None else str(request_id)
        self._emit = emit
        self._settings = settings
        self._on_closed = on_closed
        self._request = RequestTracker(request)
        self._response = ResponseTracker()
        self._recv_window = ReceiveWindow(
            0 if request.expect_continue else settings.request_window_bytes,
            slack_bytes=settings.request_slack_bytes,
        )
        self._recv_window.received(len(request.body), stream_id=self.stream_id)
        self._send_window = SendWindow(settings.response_window_bytes)
        self._chunks: deque[tuple[bytes, bool]] = deque()
        if request.body or not request.more_body:  # an empty "more to come" chunk says nothing
            self._chunks.append((request.body, request.more_body))
        self._continue_owed = request.expect_continue and request.more_body
        self._pending_start: tuple[int, ev.Headers, bool] | None = None
        self._readable = asyncio.Event()  # body queued, or the stream ended
        self._writable = asyncio.Event()  # credit arrived, or the stream ended

    @property
    def request_state(self) -> RequestHalf:
        return self._request.state

    @property
    def response_state(self) -> ResponseHalf:
        return self._response.state

    @property
    def closed(self) -> bool:
        state = self._response.state
        return state is ResponseHalf.RESET or (
            state is ResponseHalf.DONE and self._request.state is not RequestHalf.RECEIVING
        )

    # ------------------------------------------------------------ running the app

    async def run(self, app: Callable[..., Any]) -> None:
        """Run ``app`` for this stream; never raises except CancelledError."""
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self.abort(ResetCode.CANCELLED, "worker stopped the request")
            raise
        except BaseException as exc:  # the app's failure is reported on the wire, not raised
            self._app_ended(exc)
        else:
            self._app_ended(None)

    def _app_ended(self, error: BaseException | None) -> None:
        self._pending_start = None  # a start never sent: a clean 500 beats headers + abort
        client_gone = (
            self._request.state is RequestHalf.DISCONNECTED or self._response.state is ResponseHalf.RESET
        )
        if error is not None:
            if isinstance(error, ClientDisconnected) or (client_gone and isinstance(error, OSError)):
                self._log(logging.DEBUG, "client went away: %s", error)
            else:
                self._log(logging.ERROR, "exception in ASGI application", exc_info=error)
        if self._response.state in _ENDED:
            return
        if client_gone:
            self.abort(ResetCode.CANCELLED, "client went away")
            return
        if error is not None:
            reason = f"app raised {type(error).__name__}"
        elif self._response.state is ResponseHalf.WAITING:
            reason = "ASGI app returned without starting a response"
        else:
            reason = "ASGI app returned without completing the response"
        if error is None:
            self._log(logging.ERROR, reason)
        self.abort(ResetCode.APP_ERROR, reason)

    # ------------------------------------------------------------ from the front end

    def feed(self, event: Any) -> None:
        """Deliver one front-end event. Raises ProtocolViolation if it is illegal here."""
        kind = type(event)
        if kind is ev.Body:
            self._on_body(event)
        elif kind is ev.Credit:
            self._send_window.grant(event.bytes)
            self._writable.set()
        elif kind is ev.Disconnect:
            self._request.feed(event)
            self._stream_ended()
        elif kind is ev.Reset:
            self.fail_locally(event.reason or "reset by the front end")
        else:
            raise ProtocolViolation(
                f"{kind.__name__} is not allowed on an HTTP stream", stream_id=self.stream_id
            )

    def _on_body(self, event: ev.Body) -> None:
        self._request.feed(event)
        n = len(event.body)
        self._recv_window.received(n, stream_id=self.stream_id)
        if self._response.state is ResponseHalf.DONE:
            # Answered already: discard, but keep crediting so the body can finish.
            if event.more_body:
                self._credit(self._recv_window.consumed(n))
            self._check_closed()
            return
        self._chunks.append((event.body, event.more_body))
        self._readable.set()

    def fail_locally(self, reason: str) -> None:
        """The stream is gone without a word to send (peer RESET, UNKNOWN_PEER, lost link)."""
        if self._response.state is not ResponseHalf.DONE:
            self._response.feed(ev.Reset(self.stream_id, ResetCode.CANCELLED, reason))
        self._request.feed(ev.Disconnect(self.stream_id))
        self._stream_ended()

    def abort(self, code: int, reason: str) -> None:
        """Reset the stream from our side (app error, protocol error, shutdown)."""
        if self.closed:
            return
        if self._response.state is not ResponseHalf.DONE:
            self._response.feed(ev.Reset(self.stream_id, code, reason))
        # After DONE the request half may still be open (§6.1): RESET closes it.
        self._emit(ev.Reset(self.stream_id, code, reason))
        self._request.feed(ev.Disconnect(self.stream_id))
        self._stream_ended()

    def _stream_ended(self) -> None:
        self._readable.set()
        self._writable.set()
        self._check_closed()

    def _check_closed(self) -> None:
        if self._on_closed is not None and self.closed:
            callback, self._on_closed = self._on_closed, None
            callback(self)

    # ------------------------------------------------------------ ASGI receive

    async def receive(self) -> dict[str, Any]:
        if self._continue_owed:
            self._continue_owed = False  # Rule 18: the first receive() opens the window
            if self._live():
                self._credit(self._recv_window.grant(self._settings.request_window_bytes))
        while True:
            if self._request.state is RequestHalf.DISCONNECTED or self._response.state in _ENDED:
                return {"type": "http.disconnect"}
            if self._chunks:
                return self._take_chunks()
            if self._request.state is RequestHalf.RECEIVING:
                self._credit(self._recv_window.flush())  # idle: return everything consumed
            self._readable.clear()
            await self._readable.wait()

    def _take_chunks(self) -> dict[str, Any]:
        chunks = self._chunks
        if len(chunks) == 1:
            body, more = chunks.popleft()
        else:  # batch what arrived while the app was busy: one copy, one await fewer per chunk
            more = chunks[-1][1]
            body = b"".join([chunk for chunk, _ in chunks])
            chunks.clear()
        if more:
            self._credit(self._recv_window.consumed(len(body)))
        return {"type": "http.request", "body": body, "more_body": more}

    def _credit(self, n: int) -> None:
        if n > 0:
            self._emit(ev.Credit(self.stream_id, n))

    # ------------------------------------------------------------ ASGI send

    async def send(self, message: dict[str, Any]) -> None:
        if not self._live():
            raise ClientDisconnected(f"stream {self.stream_id}: the client went away")
        kind = message.get("type")
        handler = _SENDERS.get(kind)  # type: ignore[arg-type]
        if handler is None:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} on an http connection")
        await handler(self, message)

    def _live(self) -> bool:
        return (
            self._request.state is not RequestHalf.DISCONNECTED
            and self._response.state is not ResponseHalf.RESET
        )

    async def _send_start(self, message: dict[str, Any]) -> None:
        if self._pending_start is not None or self._response.state is not ResponseHalf.WAITING:
            raise RuntimeError("http.response.start sent twice (the response already started)")
        status = message.get("status")
        if type(status) is not int or not 100 <= status <= 999:
            raise RuntimeError(f"http.response.start: status must be an int 100..999, got {status!r}")
        headers = _checked_headers(message.get("headers", ()))
        trailers = bool(message.get("trailers", False))
        if trailers and not self._settings.trailers:
            raise RuntimeError("http.response.start: trailers=True but the front end does not support them")
        self._pending_start = (status, headers, trailers)
        asyncio.get_running_loop().call_soon(self._flush_start)

    def _flush_start(self) -> None:
        """Send a held start alone (with more_body=True): no body came in the same tick."""
        start = self._pending_start
        if start is None or not self._live():
            return
        self._pending_start = None
        self._emit_response(ev.Response(self.stream_id, start[0], start[1], b"", True, start[2]))

    async def _send_body(self, message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if type(body) is not bytes:
            if not isinstance(body, (bytearray, memoryview)):
                raise TypeError(f"http.response.body: body must be bytes, got {type(body).__name__}")
            body = bytes(body)  # our own immutable copy: the app may reuse its buffer
        more = bool(message.get("more_body", False))
        self._expect_body_allowed("http.response.body")
        size = self._settings.chunk_bytes
        if len(body) <= size:
            await self._send_chunk(body, more)
            return
        view = memoryview(body)
        for offset in range(0, len(body), size):
            await self._send_chunk(view[offset : offset + size], more or offset + size < len(body))

    async def _send_chunk(self, payload: Any, more: bool) -> None:
        if payload and not self._send_window.open:
            await self._wait_window()
        if not self._live():
            raise ClientDisconnected(f"stream {self.stream_id}: the client went away")
        start = self._pending_start
        if start is not None:
            self._pending_start = None
            event: Any = ev.Response(self.stream_id, start[0], start[1], payload, more, start[2])
        else:
            event = ev.Body(self.stream_id, payload, more)
        self._send_window.spend(len(payload))
        self._emit_response(event)

    async def _wait_window(self) -> None:
        while not self._send_window.open and self._live():
            self._writable.clear()
            await self._writable.wait()

    async def _send_trailers(self, message: dict[str, Any]) -> None:
        if self._response.state is not ResponseHalf.TRAILERS:
            raise RuntimeError(
                "http.response.trailers needs a start with trailers=True and the whole body sent first"
            )
        headers = _checked_headers(message.get("headers", ()))
        self._emit_response(ev.Trailers(self.stream_id, headers, bool(message.get("more_trailers", False))))

    async def _send_pathsend(self, message: dict[str, Any]) -> None:
        path = message.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise RuntimeError(f"http.response.pathsend: path must be an absolute path, got {path!r}")
        self._expect_body_allowed("http.response.pathsend")
        if not self._settings.pathsend:
            await self._send_file(path)
            return
        self._flush_start()
        self._emit_response(ev.Pathsend(self.stream_id, path))

    async def _send_file(self, path: str) -> None:
        """pathsend without the front end's help: read in a thread, send under credit."""
        loop = asyncio.get_running_loop()
        size = self._settings.chunk_bytes
        file = await loop.run_in_executor(None, open, path, "rb")
        try:
            while data := await loop.run_in_executor(None, file.read, size):
                await self._send_chunk(data, True)
        finally:
            file.close()
        await self._send_chunk(b"", False)

    def _expect_body_allowed(self, kind: str) -> None:
        if self._pending_start is None and self._response.state is not ResponseHalf.SENDING:
            where = {ResponseHalf.WAITING: "before http.response.start"}.get(
                self._response.state, "after the response body completed"
            )
            raise RuntimeError(f"{kind} sent {where}")

    def _emit_response(self, event: Any) -> None:
        try:
            state = self._response.feed(event)
        except ProtocolViolation as exc:  # our checks above should make this unreachable
            raise RuntimeError(f"illegal response event: {exc}") from None
        self._emit(event)
        if state is ResponseHalf.DONE:
            self._response_done()

    def _response_done(self) -> None:
        # Body the app never read: discard it and give its credit back, so the
        # front end can finish forwarding and the stream can close.
        if self._request.state is RequestHalf.RECEIVING and self._chunks:
            n = sum(len(chunk) for chunk, _ in self._chunks)
            self._chunks.clear()
            self._credit(self._recv_window.consumed(n) + self._recv_window.flush())
        self._readable.set()
        self._check_closed()

    # ------------------------------------------------------------ logging

    def _log(self, level: int, msg: str, *args: Any, exc_info: BaseException | None = None) -> None:
        if self.request_id is not None:
            msg, args = "[%s] " + msg, (self.request_id, *args)
        log.log(level, msg, *args, exc_info=exc_info, extra={"request_id": self.request_id})


_SENDERS: dict[str, Callable[[HttpCycle, dict[str, Any]], Any]] = {
    "http.response.start": HttpCycle._send_start,
    "http.response.body": HttpCycle._send_body,
    "http.response.trailers": HttpCycle._send_trailers,
    "http.response.pathsend": HttpCycle._send_pathsend,
}


def _checked_headers(headers: Any) -> ev.Headers:
    out: list[tuple[bytes, bytes]] = []
    try:
        for name, value in headers:
            if type(name) is not bytes or type(value) is not bytes:
                raise TypeError
            out.append((name, value))
    except (TypeError, ValueError):
        raise RuntimeError(f"response headers must be (bytes, bytes) pairs, got {headers!r:.200}") from None
    return tuple(out)
