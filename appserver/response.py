"""The response half of one stream: ASGI ``*.response.*`` messages -> RESPONSE/BODY/TRAILERS/PATHSEND.

``ResponseSide`` is the send side, written once for the two HTTP responses a
stream can carry: it is the base class of ``HttpCycle`` (one object per HTTP
stream: the hot path creates no helper objects) and, through
``ResponseSender``, the WebSocket denial response (``websocket.http.response.*``,
feature ``ws-denial``). It owns the response ``ResponseTracker`` and what the
wire does not know yet: a start and small chunks held back to be coalesced. The owner supplies the rest as methods: whether the client is still
there (``_live``), the stream's send window (``_window_open``, ``_spend``,
``_wait_window``: Rule 16) and what happens once the response is DONE
(``_response_done``). Invariants:

* What the app sends in one loop iteration leaves together: a start is
  coalesced with the body that follows it, and body chunks smaller than
  ``chunk_bytes`` (with more to come) are held and joined, up to
  ``chunk_bytes``, until a final or full-size chunk, or the next tick
  (``EndOfTick``). So streaming headers and small chunks are never delayed
  behind a slow next chunk, and an app writing 4 KiB pieces costs the front
  end one event per 64 KiB, not sixteen. A RESPONSE says more_body=True
  whenever the app's first chunk did: a streamed response stays chunked for
  the client.
* A body waits while the send window is spent (Rule 16): a slow client
  pauses the app. Held chunks spend the window when the app sends them.
  Bodies leave in ``chunk_bytes`` memoryview slices. A response that leaves
  whole in its first message (RESPONSE, more=False) does no window
  accounting: nothing follows it.
* A send into a dead stream raises ``ClientDisconnected``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from wire import ProtocolViolation, ResponseHalf, ResponseTracker
from wire import events as ev
from wire.shm import joinable

from .stream import ClientDisconnected, CreditGate, Defer, Emit, StreamSettings, checked_headers

# (hot-path rule 1: tests/benchmarks/README.md)
_WAITING, _SENDING = ResponseHalf.WAITING, ResponseHalf.SENDING
_TRAILERS, _DONE = ResponseHalf.TRAILERS, ResponseHalf.DONE


class ResponseSide:
    """The send side of an HTTP response; subclasses provide the hooks below."""

    __slots__ = ("stream_id", "_emit", "_defer", "_settings", "_tracker", "_pending_start", "_held",
                 "_held_bytes")  # fmt: skip
    _prefix = "http.response"  # names the ASGI messages in errors

    stream_id: int
    _emit: Emit
    _defer: Defer  # runs a callback once the app yields (EndOfTick.defer, or call_soon)
    _settings: StreamSettings
    _tracker: ResponseTracker
    _pending_start: tuple[int, ev.Headers, bool] | None
    _held: list[Any] | None  # body chunks sent this tick, not on the wire yet (more to come)
    _held_bytes: int

    # ------------------------------------------------------------ the owner's hooks

    def _live(self) -> bool:
        raise NotImplementedError

    def _window_open(self) -> bool:
        raise NotImplementedError

    def _spend(self, n: int) -> None:
        raise NotImplementedError

    async def _wait_window(self) -> None:
        """Return once the window is open or the stream is no longer live."""
        raise NotImplementedError

    def _response_done(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ state

    @property
    def response_state(self) -> ResponseHalf:
        return self._tracker.state

    @property
    def started(self) -> bool:
        """The app sent a start (held back or on the wire)."""
        return self._pending_start is not None or self._tracker.state is not _WAITING

    def drop_pending(self) -> None:
        """The app ended: body it sent goes out; a start alone is forgotten (a 500 beats headers + abort)."""
        if self._held is not None:
            self._flush()
        self._pending_start = None

    def reset(self, code: int, reason: str) -> None:
        """Record a RESET (sent or received by the owner) unless the response already ended."""
        self._held = None
        if self._tracker.state is not _DONE:
            self._tracker.feed(ev.Reset(self.stream_id, code, reason))

    # ------------------------------------------------------------ ASGI messages

    async def start(self, message: dict[str, Any]) -> None:
        self._start(message)

    async def body(self, message: dict[str, Any]) -> None:
        body, more = self._body_fields(message)
        await self._send_body(body, more)

    async def trailers(self, message: dict[str, Any]) -> None:
        if self._tracker.state is not ResponseHalf.TRAILERS:
            raise RuntimeError(
                f"{self._prefix}.trailers needs a start with trailers=True and the whole body sent first"
            )
        headers = checked_headers(message.get("headers", ()))
        self._put(ev.Trailers(self.stream_id, headers, bool(message.get("more_trailers", False))))

    async def pathsend(self, message: dict[str, Any]) -> None:
        path = message.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise RuntimeError(f"{self._prefix}.pathsend: path must be an absolute path, got {path!r}")
        self._expect_body_allowed(f"{self._prefix}.pathsend")
        if not self._settings.pathsend:
            await self._send_file(path)
            return
        self._flush()
        self._put(ev.Pathsend(self.stream_id, path))

    async def early_hint(self, message: dict[str, Any]) -> None:
        """``http.response.early_hint`` (feature "early-hints"): EARLY_HINTS, ahead of the start."""
        if not self._settings.early_hints:
            raise RuntimeError("http.response.early_hint: not offered (not in the scope's extensions)")
        if self.started:
            raise RuntimeError("http.response.early_hint sent after http.response.start")
        links = message.get("links", ())
        if not isinstance(links, (list, tuple)):
            raise TypeError(f"http.response.early_hint: links must be a list, got {type(links).__name__}")
        for link in links:
            if type(link) is not bytes:
                raise TypeError(f"http.response.early_hint: a link must be bytes, got {type(link).__name__}")
            # A link becomes a header field value: CR/LF would split the 103 (response splitting).
            if b"\r" in link or b"\n" in link or b"\0" in link:
                raise ValueError(f"http.response.early_hint: a link contains CR, LF or NUL: {link!r}")
        if not self._live():
            raise ClientDisconnected(f"stream {self.stream_id}: the client went away")
        if links:
            self._emit(ev.EarlyHints(self.stream_id, tuple(links)))

    # ------------------------------------------------------------ the steps, synchronous where possible

    def _start(self, message: dict[str, Any]) -> None:
        if self._pending_start is not None or self._tracker.state is not _WAITING:
            raise RuntimeError(f"{self._prefix}.start sent twice (the response already started)")
        status = message.get("status")
        if type(status) is not int or not 100 <= status <= 999:
            raise RuntimeError(f"{self._prefix}.start: status must be an int 100..999, got {status!r}")
        headers = checked_headers(message.get("headers", ()))
        trailers = bool(message.get("trailers", False))
        if trailers and not self._settings.trailers:
            raise RuntimeError(f"{self._prefix}.start: trailers=True but the front end does not support them")
        self._pending_start = (status, headers, trailers)
        self._defer(self._flush)

    def _body_fields(self, message: dict[str, Any]) -> tuple[bytes, bool]:
        body = message.get("body", b"")
        if type(body) is not bytes:
            if not isinstance(body, (bytearray, memoryview)):
                raise TypeError(f"{self._prefix}.body: body must be bytes, got {type(body).__name__}")
            body = bytes(body)  # our own immutable copy: the app may reuse its buffer
        if self._pending_start is None and self._tracker.state is not _SENDING:
            self._expect_body_allowed(f"{self._prefix}.body")
        return body, bool(message.get("more_body", False))

    async def _send_body(self, body: bytes, more: bool) -> None:
        size = self._settings.chunk_bytes
        if len(body) <= size:
            await self._send_chunk(body, more)
            return
        view = memoryview(body)
        for offset in range(0, len(body), size):
            await self._send_chunk(view[offset : offset + size], more or offset + size < len(body))

    async def _send_chunk(self, payload: Any, more: bool) -> None:
        if payload and not self._window_open():
            await self._wait_window()  # what is held leaves meanwhile: its flush is scheduled
        if not self._live():
            raise ClientDisconnected(f"stream {self.stream_id}: the client went away")
        self._chunk(payload, more)

    def _chunk(self, payload: Any, more: bool) -> None:
        """Send (or hold) one chunk now: the stream is live (the caller checked) and the window
        is open, or the chunk is empty."""
        n = len(payload)
        limit = self._settings.chunk_bytes
        held = self._held
        if held is not None:
            # Join, unless this is the last chunk and the start is still held: a response the
            # app streamed (more_body=True) stays streamed (chunked) on the client's side.
            if self._held_bytes + n <= limit and (more or self._pending_start is None):
                held.append(payload)
                self._spend(n)
                if more:
                    self._held_bytes += n
                    return
                self._held = None
                self._out(joinable(held, self._held_bytes + n), False)  # the last chunk, with everything held
                return
            self._flush()  # what is held goes first, as its own event
        if more and n < limit:
            # Hold: more may come in this tick. A held start has its flush scheduled already.
            if self._pending_start is None:
                self._defer(self._flush)
            self._held = [payload]
            self._held_bytes = n
            self._spend(n)
            return
        if more or self._pending_start is None:
            self._spend(n)
        # else: the whole response in one RESPONSE: no window left to account for
        self._out(payload, more)

    def _out(self, payload: Any, more: bool) -> None:
        """RESPONSE with the held start, or BODY.

        Both are always legal here (RESPONSE from WAITING, BODY while SENDING): the tracker
        is set to the state its feed() would reach (tests/appserver/test_hot_path.py checks)
        without the call and its Enum-keyed table lookup (~0.4 µs a response).
        """
        tracker = self._tracker
        start = self._pending_start
        if start is not None:
            self._pending_start = None
            event: Any = ev.Response(self.stream_id, start[0], start[1], payload, more, start[2])
            if tracker.state is not _WAITING:
                self._put(event)  # unreachable: _start checks; _put explains
                return
            trailers = tracker.trailers = start[2]
            state = tracker.state = _SENDING if more else _TRAILERS if trailers else _DONE
        else:
            event = ev.Body(self.stream_id, payload, more)
            if tracker.state is not _SENDING:
                self._put(event)  # unreachable: _body_fields checks; _put explains
                return
            if not more:
                tracker.state = _TRAILERS if tracker.trailers else _DONE
            state = tracker.state
        self._emit(event)
        if state is _DONE:
            self._response_done()

    def _flush(self) -> None:
        """Send what this tick held back (a start, small chunks), with more_body=True."""
        held = self._held
        if held is None:
            if self._pending_start is not None and self._live():
                self._out(b"", True)  # headers alone: no body came in the same tick
            return
        self._held = None
        if self._live():
            self._out(held[0] if len(held) == 1 else joinable(held, self._held_bytes), True)

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
        if self._pending_start is None and self._tracker.state is not _SENDING:
            where = {_WAITING: f"before {self._prefix}.start"}.get(
                self._tracker.state, "after the response body completed"
            )
            raise RuntimeError(f"{kind} sent {where}")

    def _put(self, event: Any) -> None:
        try:
            state = self._tracker.feed(event)
        except ProtocolViolation as exc:  # our checks above should make this unreachable
            raise RuntimeError(f"illegal response event: {exc}") from None
        self._emit(event)
        if state is _DONE:
            self._response_done()


class ResponseSender(ResponseSide):
    """A response whose window and liveness belong to someone else: the WebSocket denial response."""

    __slots__ = ("_gate", "_is_live", "_on_done", "_prefix")

    def __init__(
        self,
        stream_id: int,
        *,
        emit: Emit,
        gate: CreditGate,
        settings: StreamSettings,
        live: Callable[[], bool],
        on_done: Callable[[], None],
        prefix: str = "http.response",
    ) -> None:
        """``prefix`` names the ASGI messages in errors; ``on_done`` fires when the response is DONE."""
        self.stream_id = stream_id
        self._emit = emit
        self._defer = asyncio.get_running_loop().call_soon
        self._gate = gate
        self._settings = settings
        self._is_live = live
        self._on_done = on_done
        self._prefix = prefix  # a slot here, a class default in ResponseSide
        self._tracker = ResponseTracker()
        self._pending_start = None
        self._held = None
        self._held_bytes = 0

    @property
    def state(self) -> ResponseHalf:
        return self._tracker.state

    def _live(self) -> bool:
        return self._is_live()

    def _window_open(self) -> bool:
        return self._gate.open

    def _spend(self, n: int) -> None:
        self._gate.spend(n)

    async def _wait_window(self) -> None:
        await self._gate.wait(self._is_live)

    def _response_done(self) -> None:
        self._on_done()
