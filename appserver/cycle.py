"""One HTTP stream: the ASGI app's ``receive``/``send`` over wire events.

``HttpCycle`` is uvicorn's RequestResponseCycle with the I/O taken out: the
connection ``feed``s it the front end's events (BODY, CREDIT, DISCONNECT,
RESET) and it ``emit``s RESPONSE/BODY/TRAILERS/PATHSEND/CREDIT/RESET through
an injected callable, so tests pass a list's ``append``. No zmq here.

One object per stream, because this is the app server's hot path: the send
side (coalescing, chunking under credit, trailers, pathsend) is inherited
from ``ResponseSide`` (response.py, shared with the WebSocket denial
response), the send window is an int here, and nothing on the path of a
request refers back to the cycle, so a finished request is freed by reference
counting, never by the garbage collector (tests/appserver/test_hot_path.py).
This module is the receive side, the window and the app's outcome. State
lives in the wire trackers (``RequestTracker``, ``ResponseTracker``), plus a
first ``CREDIT`` owed for Expect: 100-continue. Invariants:

* Credit (Rule 17) goes back when the app's ``receive()`` returns bytes,
  batched by ``ReceiveWindow`` (built only for a request with a body), and
  flushed whenever the app waits with nothing queued, so a slow trickle never
  stalls on batching.
* The app waits on one ``Wakeup`` whatever it waits for (body, credit, the
  stream's end); every waiter re-checks its condition.
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
from collections.abc import Callable
from typing import Any

from wire import (
    ProtocolViolation,
    ReceiveWindow,
    RequestHalf,
    RequestTracker,
    ResetCode,
    ResponseHalf,
    ResponseTracker,
)
from wire import events as ev
from wire.scope import http_scope

from .logctx import REQUEST_ID
from .response import ResponseSide
from .stream import RESPONSE_CHUNK_BYTES, ClientDisconnected, Defer, Emit, StreamSettings, Wakeup

__all__ = ["RESPONSE_CHUNK_BYTES", "ClientDisconnected", "Emit", "HttpCycle", "StreamSettings"]

log = logging.getLogger(__name__)

_ENDED = (ResponseHalf.DONE, ResponseHalf.RESET)
# (hot-path rule 1: tests/benchmarks/README.md)
_WAITING, _SENDING = ResponseHalf.WAITING, ResponseHalf.SENDING
_DONE, _RESET = ResponseHalf.DONE, ResponseHalf.RESET
_RECEIVING, _DISCONNECTED = RequestHalf.RECEIVING, RequestHalf.DISCONNECTED


class HttpCycle(ResponseSide):
    __slots__ = ("scope", "request_id", "task", "opened_at", "_on_closed", "_request", "_available",
                 "_recv_window", "_chunks", "_continue_owed", "_wakeup")  # fmt: skip

    def __init__(
        self,
        request: ev.Request,
        emit: Emit,
        settings: StreamSettings,
        on_closed: Callable[[HttpCycle], None] | None = None,
        defer: Defer | None = None,
    ) -> None:
        """Raises ProtocolViolation if the REQUEST's first chunk overruns its window.

        ``defer`` runs the response's end-of-tick flush: the connection's
        ``EndOfTick.defer`` (one loop handle for all its streams), else ``call_soon``.
        The router passes everything by position: keyword arguments to a class cost a dict
        per call (~0.2 µs).
        """
        sid = self.stream_id = request.stream_id
        self.scope = http_scope(request, state=settings.state, trailers=settings.trailers)
        request_id = request.ext.get("request_id")
        self.request_id = None if request_id is None else str(request_id)
        self.task: asyncio.Task[None] | None = None  # see run()
        self.opened_at = 0.0  # perf_counter() at open, for admission's latency (routing.py); 0: none
        self._emit = emit
        self._defer = defer if defer is not None else asyncio.get_running_loop().call_soon
        self._settings = settings
        self._on_closed = on_closed
        self._tracker = ResponseTracker()
        self._pending_start = None
        self._held = None
        self._available = settings.response_window_bytes  # the send window (Rule 16)
        self._request = RequestTracker(request)
        body, more = request.body, request.more_body
        # A body-less request never needs its receive window: skip building it.
        self._recv_window: ReceiveWindow | None = None
        if body or more:
            window = self._recv_window = ReceiveWindow(  # by position: no kwargs dict (~0.2 µs)
                0 if request.expect_continue else settings.request_window_bytes, settings.request_slack_bytes
            )
            window.received(len(body), stream_id=sid)
        # Body chunks not given to the app yet. A list, not a deque: they leave all at once
        # (_take_chunks), and a list literal is half the cost of deque() + append.
        # An empty "more to come" chunk says nothing.
        self._chunks: list[tuple[bytes, bool]] = [(body, more)] if body or not more else []  # type: ignore[list-item]
        self._continue_owed = request.expect_continue and more
        # One wake-up for everything the app may wait on here (body, credit, the stream's
        # end): waiters re-check their condition, so sharing costs a rare spurious wake-up.
        # Made by the first wait: most requests never wait.
        self._wakeup: Wakeup | None = None

    @property
    def request_state(self) -> RequestHalf:
        return self._request.state

    @property
    def closed(self) -> bool:
        state = self._tracker.state
        return state is _RESET or (state is _DONE and self._request.state is not _RECEIVING)

    # ------------------------------------------------------------ running the app

    async def run(self, app: Callable[..., Any], tasks: set[asyncio.Task[None]] | None = None) -> None:
        """Run ``app`` for this stream; never raises except CancelledError.

        ``tasks``: a set holding ``self.task``, the task that runs this (set by the owner); the
        task leaves it as the app ends (a done callback would cost a loop handle per request).
        A task cancelled before it started never runs this: its owner removes it. The cycle and
        its task refer to each other only while this runs (its frame is cleared as it returns),
        so a finished request is still freed by reference counting.
        """
        if self.request_id is not None:
            REQUEST_ID.set(self.request_id)  # this task's log lines carry it (logctx)
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self.abort(ResetCode.CANCELLED, "worker stopped the request")
            raise
        except BaseException as exc:  # the app's failure is reported on the wire, not raised
            self._app_ended(exc)
        else:
            # The common case, answered and request read, has nothing left to do: nothing is
            # held once the response is DONE.
            if self._tracker.state is not _DONE or self._request.state is _RECEIVING:
                self._app_ended(None)
        finally:
            if tasks is not None:
                tasks.discard(self.task)

    def _app_ended(self, error: BaseException | None) -> None:
        self.drop_pending()
        state = self._tracker.state
        if error is None and state is _DONE and self._request.state is not _RECEIVING:
            return  # answered, request read
        client_gone = not self._live()
        if error is not None:
            if isinstance(error, ClientDisconnected) or (client_gone and isinstance(error, OSError)):
                self._log(logging.DEBUG, "client went away: %s", error)
            else:
                self._log(logging.ERROR, "exception in ASGI application", exc_info=error)
        if state is _DONE and self._request.state is _RECEIVING:
            # §6.1: the app will not read the rest of the body; RESET closes the request half.
            self.abort(ResetCode.CANCELLED, "app finished without reading the body")
            return
        if state in _ENDED:
            return
        if client_gone:
            self.abort(ResetCode.CANCELLED, "client went away")
            return
        if error is not None:
            reason = f"app raised {type(error).__name__}"
        elif state is _WAITING:
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
            self._available += event.bytes
            self._wake()
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
        self._request.feed(event)  # raises unless the request half is RECEIVING: the window exists
        window = self._recv_window
        assert window is not None
        n = len(event.body)
        window.received(n, stream_id=self.stream_id)
        if self._tracker.state is _DONE:
            # Answered already: discard, but keep crediting so the body can finish.
            if event.more_body:
                self._credit(window.consumed(n))
            self._check_closed()
            return
        self._chunks.append((event.body, event.more_body))  # type: ignore[arg-type]
        self._wake()

    def fail_locally(self, reason: str) -> None:
        """The stream is gone without a word to send (peer RESET, UNKNOWN_PEER, lost link)."""
        self.reset(ResetCode.CANCELLED, reason)
        self._request.feed(ev.Disconnect(self.stream_id))
        self._stream_ended()

    def abort(self, code: int, reason: str) -> None:
        """Reset the stream from our side (app error, protocol error, shutdown)."""
        if self.closed:
            return
        self.reset(code, reason)
        # After DONE the request half may still be open (§6.1): RESET closes it.
        self._emit(ev.Reset(self.stream_id, code, reason))
        self._request.feed(ev.Disconnect(self.stream_id))
        self._stream_ended()

    def _stream_ended(self) -> None:
        self._wake()  # a parked receive() or send() sees the end
        self._check_closed()

    def _check_closed(self) -> None:
        callback = self._on_closed
        if callback is None:
            return
        state = self._tracker.state  # = self.closed, inline: once per request
        if state is _RESET or (state is _DONE and self._request.state is not _RECEIVING):
            self._on_closed = None
            callback(self)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _wakeup_made(self) -> Wakeup:
        if self._wakeup is None:
            self._wakeup = Wakeup()
        return self._wakeup

    # ------------------------------------------------------------ ASGI receive

    async def receive(self) -> dict[str, Any]:
        if self._continue_owed:
            self._continue_owed = False  # Rule 18: the first receive() opens the window
            if self._live():
                assert self._recv_window is not None
                self._credit(self._recv_window.grant(self._settings.request_window_bytes))
        while True:
            if self._request.state is _DISCONNECTED or self._tracker.state in _ENDED:
                return {"type": "http.disconnect"}
            if self._chunks:
                return self._take_chunks()
            if self._request.state is _RECEIVING:
                assert self._recv_window is not None
                self._credit(self._recv_window.flush())  # idle: return everything consumed
            await self._wakeup_made().wait()

    def _take_chunks(self) -> dict[str, Any]:
        chunks = self._chunks
        if len(chunks) == 1:
            body, more = chunks.pop()
        else:  # batch what arrived while the app was busy: one copy, one await fewer per chunk
            more = chunks[-1][1]
            body = b"".join([chunk for chunk, _ in chunks])
            chunks.clear()
        if more:
            assert self._recv_window is not None
            self._credit(self._recv_window.consumed(len(body)))
        return {"type": "http.request", "body": body, "more_body": more}

    def _credit(self, n: int) -> None:
        if n > 0:
            self._emit(ev.Credit(self.stream_id, n))

    # ------------------------------------------------------------ ASGI send

    async def send(self, message: dict[str, Any]) -> None:
        if self._request.state is _DISCONNECTED or self._tracker.state is _RESET:  # = not self._live()
            raise ClientDisconnected(f"stream {self.stream_id}: the client went away")
        kind = message.get("type")
        if kind == "http.response.body":
            body = message.get("body", b"")
            if type(body) is bytes and (self._pending_start is not None or self._tracker.state is _SENDING):
                more = bool(message.get("more_body", False))  # = _body_fields, inline for the common case
            else:
                body, more = self._body_fields(message)
            if len(body) <= self._settings.chunk_bytes and (self._available > 0 or not body):
                # The common cases: no await, no coroutine.
                if more or self._held is not None or self._pending_start is None:
                    self._chunk(body, more)
                else:
                    self._out(body, False)  # the whole response in one RESPONSE: all _chunk would do
            else:
                await self._send_body(body, more)
        elif kind == "http.response.start":
            self._start(message)
        else:
            handler = _SENDERS.get(kind)  # type: ignore[arg-type]
            if handler is None:
                raise RuntimeError(f"unexpected ASGI message type {kind!r} on an http connection")
            await handler(self, message)

    # ------------------------------------------------------------ ResponseSide's hooks

    def _live(self) -> bool:
        return self._request.state is not _DISCONNECTED and self._tracker.state is not _RESET

    def _window_open(self) -> bool:
        return self._available > 0

    def _spend(self, n: int) -> None:
        self._available -= n

    async def _wait_window(self) -> None:
        while self._available <= 0 and self._live():
            await self._wakeup_made().wait()

    def _response_done(self) -> None:
        # Body the app never read: discard it and give its credit back, so the
        # front end can finish forwarding and the stream can close.
        if self._request.state is _RECEIVING and self._chunks:
            window = self._recv_window
            assert window is not None
            n = sum(len(chunk) for chunk, _ in self._chunks)
            self._chunks.clear()
            self._credit(window.consumed(n) + window.flush())
        if self._wakeup is not None:  # = _wake(), inline: once per request
            self._wakeup.set()
        callback = self._on_closed  # = _check_closed(), inline: DONE, so closed unless still receiving
        if callback is not None and self._request.state is not _RECEIVING:
            self._on_closed = None
            callback(self)

    # ------------------------------------------------------------ logging

    def _log(self, level: int, msg: str, *args: Any, exc_info: BaseException | None = None) -> None:
        if self.request_id is not None:
            msg, args = "[%s] " + msg, (self.request_id, *args)
        log.log(level, msg, *args, exc_info=exc_info, extra={"request_id": self.request_id})


# The rarer messages; start and body are handled in HttpCycle.send itself.
_SENDERS: dict[str, Callable[[HttpCycle, dict[str, Any]], Any]] = {
    "http.response.trailers": HttpCycle.trailers,
    "http.response.pathsend": HttpCycle.pathsend,
}
