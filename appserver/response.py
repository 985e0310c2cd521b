"""The response half of one stream: ASGI ``*.response.*`` messages -> RESPONSE/BODY/TRAILERS/PATHSEND.

``ResponseSender`` is the send side of ``HttpCycle`` and, unchanged, the
WebSocket denial response (``websocket.http.response.*``, feature
``ws-denial``): both are an HTTP response on a stream. It owns the response
``ResponseTracker`` and the one fact the wire cannot know, a start held back
to be coalesced with the first body chunk. Invariants:

* A start is coalesced with a body sent in the same loop iteration; otherwise
  it leaves alone on the next tick (``call_soon``), so streaming headers are
  never delayed behind a slow first chunk.
* A body waits while the stream's ``CreditGate`` is closed (Rule 16): a slow
  client pauses the app. Bodies leave in ``chunk_bytes`` memoryview slices.
* Whether the client is still there is the owning cycle's business
  (``live``); a send into a dead stream raises ``ClientDisconnected``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from wire import ProtocolViolation, ResponseHalf, ResponseTracker
from wire import events as ev

from .stream import ClientDisconnected, CreditGate, Emit, StreamSettings, checked_headers


class ResponseSender:
    __slots__ = ("_stream_id", "_emit", "_gate", "_settings", "_live", "_on_done", "_prefix", "_tracker",
                 "_pending_start")  # fmt: skip

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
        self._stream_id = stream_id
        self._emit = emit
        self._gate = gate
        self._settings = settings
        self._live = live
        self._on_done = on_done
        self._prefix = prefix
        self._tracker = ResponseTracker()
        self._pending_start: tuple[int, ev.Headers, bool] | None = None

    @property
    def state(self) -> ResponseHalf:
        return self._tracker.state

    @property
    def started(self) -> bool:
        """The app sent a start (held back or on the wire)."""
        return self._pending_start is not None or self._tracker.state is not ResponseHalf.WAITING

    def drop_pending(self) -> None:
        """Forget a start never sent: the app failed, and a clean 500 beats headers + abort."""
        self._pending_start = None

    def reset(self, code: int, reason: str) -> None:
        """Record a RESET (sent or received by the owner) unless the response already ended."""
        if self._tracker.state is not ResponseHalf.DONE:
            self._tracker.feed(ev.Reset(self._stream_id, code, reason))

    # ------------------------------------------------------------ ASGI messages

    async def start(self, message: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError(f"{self._prefix}.start sent twice (the response already started)")
        status = message.get("status")
        if type(status) is not int or not 100 <= status <= 999:
            raise RuntimeError(f"{self._prefix}.start: status must be an int 100..999, got {status!r}")
        headers = checked_headers(message.get("headers", ()))
        trailers = bool(message.get("trailers", False))
        if trailers and not self._settings.trailers:
            raise RuntimeError(f"{self._prefix}.start: trailers=True but the front end does not support them")
        self._pending_start = (status, headers, trailers)
        asyncio.get_running_loop().call_soon(self._flush_start)

    async def body(self, message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if type(body) is not bytes:
            if not isinstance(body, (bytearray, memoryview)):
                raise TypeError(f"{self._prefix}.body: body must be bytes, got {type(body).__name__}")
            body = bytes(body)  # our own immutable copy: the app may reuse its buffer
        more = bool(message.get("more_body", False))
        self._expect_body_allowed(f"{self._prefix}.body")
        size = self._settings.chunk_bytes
        if len(body) <= size:
            await self._send_chunk(body, more)
            return
        view = memoryview(body)
        for offset in range(0, len(body), size):
            await self._send_chunk(view[offset : offset + size], more or offset + size < len(body))

    async def trailers(self, message: dict[str, Any]) -> None:
        if self._tracker.state is not ResponseHalf.TRAILERS:
            raise RuntimeError(
                f"{self._prefix}.trailers needs a start with trailers=True and the whole body sent first"
            )
        headers = checked_headers(message.get("headers", ()))
        self._put(ev.Trailers(self._stream_id, headers, bool(message.get("more_trailers", False))))

    async def pathsend(self, message: dict[str, Any]) -> None:
        path = message.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise RuntimeError(f"{self._prefix}.pathsend: path must be an absolute path, got {path!r}")
        self._expect_body_allowed(f"{self._prefix}.pathsend")
        if not self._settings.pathsend:
            await self._send_file(path)
            return
        self._flush_start()
        self._put(ev.Pathsend(self._stream_id, path))

    # ------------------------------------------------------------ wire events

    def _flush_start(self) -> None:
        """Send a held start alone (with more_body=True): no body came in the same tick."""
        start = self._pending_start
        if start is None or not self._live():
            return
        self._pending_start = None
        self._put(ev.Response(self._stream_id, start[0], start[1], b"", True, start[2]))

    async def _send_chunk(self, payload: Any, more: bool) -> None:
        if payload and not self._gate.open:
            await self._gate.wait(self._live)
        if not self._live():
            raise ClientDisconnected(f"stream {self._stream_id}: the client went away")
        start = self._pending_start
        if start is not None:
            self._pending_start = None
            event: Any = ev.Response(self._stream_id, start[0], start[1], payload, more, start[2])
        else:
            event = ev.Body(self._stream_id, payload, more)
        self._gate.spend(len(payload))
        self._put(event)

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
        if self._pending_start is None and self._tracker.state is not ResponseHalf.SENDING:
            where = {ResponseHalf.WAITING: f"before {self._prefix}.start"}.get(
                self._tracker.state, "after the response body completed"
            )
            raise RuntimeError(f"{kind} sent {where}")

    def _put(self, event: Any) -> None:
        try:
            state = self._tracker.feed(event)
        except ProtocolViolation as exc:  # our checks above should make this unreachable
            raise RuntimeError(f"illegal response event: {exc}") from None
        self._emit(event)
        if state is ResponseHalf.DONE:
            self._on_done()
