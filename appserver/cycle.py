"""One HTTP stream: the ASGI app's ``receive``/``send`` over wire events.

``HttpCycle`` is uvicorn's RequestResponseCycle with the I/O taken out: the
connection ``feed``s it the front end's events (BODY, CREDIT, DISCONNECT,
RESET) and it ``emit``s RESPONSE/BODY/TRAILERS/PATHSEND/CREDIT/RESET through
an injected callable, so tests pass a list's ``append``. No zmq here.

This module is the receive side and the app's outcome; the send side (start
coalescing, chunking under credit, trailers, pathsend) is ``ResponseSender``
in response.py, shared with the WebSocket denial response. State lives in
the wire trackers (``RequestTracker`` here, ``ResponseTracker`` in the
sender), plus a first ``CREDIT`` owed for Expect: 100-continue. Invariants:

* Credit (Rule 17) goes back when the app's ``receive()`` returns bytes,
  batched by ``ReceiveWindow``, and flushed whenever the app waits with
  nothing queued, so a slow trickle never stalls on batching.
* Once the client is gone (DISCONNECT, RESET, connection lost) ``receive()``
  returns ``http.disconnect`` and ``send()`` raises ``ClientDisconnected``.
* How the app ends decides what the front end hears (``_app_ended``): a
  complete response, or ``RESET(APP_ERROR)`` -- 500 before the start, an
  aborted client connection after it, never a silently truncated body.
* The stream is *closed* (``on_closed`` fires once) when the response is
  DONE and the request half finished, or on any RESET -- including the
  RESET(CANCELLED) sent after a complete response when the app finished
  without reading the whole body (§6.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from wire import ProtocolViolation, ReceiveWindow, RequestHalf, RequestTracker, ResetCode, ResponseHalf
from wire import events as ev
from wire.scope import http_scope

from .logctx import REQUEST_ID
from .response import ResponseSender
from .stream import RESPONSE_CHUNK_BYTES, ClientDisconnected, CreditGate, Emit, StreamSettings, Wakeup

__all__ = ["RESPONSE_CHUNK_BYTES", "ClientDisconnected", "Emit", "HttpCycle", "StreamSettings"]

log = logging.getLogger(__name__)

_ENDED = (ResponseHalf.DONE, ResponseHalf.RESET)


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
        self._gate = CreditGate(settings.response_window_bytes)
        self._response = ResponseSender(
            self.stream_id, emit=emit, gate=self._gate, settings=settings, live=self._live,
            on_done=self._response_done,
        )  # fmt: skip
        self._recv_window = ReceiveWindow(
            0 if request.expect_continue else settings.request_window_bytes,
            slack_bytes=settings.request_slack_bytes,
        )
        self._recv_window.received(len(request.body), stream_id=self.stream_id)
        self._chunks: deque[tuple[bytes, bool]] = deque()
        if request.body or not request.more_body:  # an empty "more to come" chunk says nothing
            self._chunks.append((request.body, request.more_body))
        self._continue_owed = request.expect_continue and request.more_body
        self._readable = Wakeup()  # body queued, or the stream ended

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
        REQUEST_ID.set(self.request_id)  # this task's log lines carry it (logctx)
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
        self._response.drop_pending()
        client_gone = not self._live()
        if error is not None:
            if isinstance(error, ClientDisconnected) or (client_gone and isinstance(error, OSError)):
                self._log(logging.DEBUG, "client went away: %s", error)
            else:
                self._log(logging.ERROR, "exception in ASGI application", exc_info=error)
        if self._response.state is ResponseHalf.DONE and self._request.state is RequestHalf.RECEIVING:
            # §6.1: the app will not read the rest of the body; RESET closes the request half.
            self.abort(ResetCode.CANCELLED, "app finished without reading the body")
            return
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
            self._gate.grant(event.bytes)
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
        self._response.reset(ResetCode.CANCELLED, reason)
        self._request.feed(ev.Disconnect(self.stream_id))
        self._stream_ended()

    def abort(self, code: int, reason: str) -> None:
        """Reset the stream from our side (app error, protocol error, shutdown)."""
        if self.closed:
            return
        self._response.reset(code, reason)
        # After DONE the request half may still be open (§6.1): RESET closes it.
        self._emit(ev.Reset(self.stream_id, code, reason))
        self._request.feed(ev.Disconnect(self.stream_id))
        self._stream_ended()

    def _stream_ended(self) -> None:
        self._readable.set()
        self._gate.release()
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
        await handler(self._response, message)

    def _live(self) -> bool:
        return (
            self._request.state is not RequestHalf.DISCONNECTED
            and self._response.state is not ResponseHalf.RESET
        )

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


_SENDERS: dict[str, Callable[[ResponseSender, dict[str, Any]], Any]] = {
    "http.response.start": ResponseSender.start,
    "http.response.body": ResponseSender.body,
    "http.response.trailers": ResponseSender.trailers,
    "http.response.pathsend": ResponseSender.pathsend,
}
