"""A client connection after a WebSocket upgrade request: our protocol object, frames by ws_frames.

Theory of operation. ``connection.Connection`` hands the transport over when a
WebSocket upgrade's turn comes (upgrade.py ``Upgrades.hand_over``), with the
parsed request head (``message``) and whatever followed it. Until the
bridge (ws_bridge) has the worker's answer, bytes from the client are only
kept (bounded: reading pauses past ``MAX_EARLY_BYTES``). Then either a plain
HTTP answer is written and the connection closes (``answer``), or the 101
goes out and the session opens (``open``): from then on

* client -> worker runs in ``data_received``: frames are parsed
  (``ws_frames.FrameReader``: fragments joined, UTF-8 checked, deflate undone,
  the size limit) and each message goes to ``WsStream.send_message``; pings
  are answered at once. When the stream cannot take more (its send window
  spent, or a handoff holding enough), reading pauses and the messages
  already parsed wait in ``_backlog`` until the window reopens
  (``_wait_window``, a task that exists only while it waits).
* worker -> client: ``send`` writes a frame (ws_session.deliver, called from
  the dispatcher's callback); ``credit`` returns the worker's credit at once,
  or after ``resume_writing`` while the transport's buffer is over its
  high-water mark. (``drain`` is for the denial response's task.)
* closing: ``close`` writes our close frame and waits ``CLOSE_TIMEOUT_S`` at
  most for the client's; a client's close frame is answered with its code and
  the connection ends; a framing error fails it with its code (1002, 1007,
  1009); a missing pong (``ping_timeout_s`` after a ping with nothing heard)
  or a vanished client tells the worker 1006.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from .ws_frames import BINARY, CLOSE, PING, PONG, TEXT, Deflate, FrameError, FrameReader, FrameWriter
from .ws_stream import ABNORMAL, WsPhase

if TYPE_CHECKING:
    from .config import WebSocket as WebSocketSettings
    from .pool import WorkerRecord
    from .upgrade import Upgrades
    from .ws_stream import WsStream

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview  # what the codec's WS_MESSAGE / BODY payloads may be
CLOSE_TIMEOUT_S = 5.0  # how long our close waits for the client's close frame
MAX_EARLY_BYTES = 2**16  # client bytes kept before the handshake is answered


class WsConnection(asyncio.Protocol):
    __slots__ = (
        "transport", "message", "tail", "admitted", "rid", "started", "peer", "client", "client_set",
        "worker",
        "stream", "handler", "_upgrades", "_loop", "_reader", "_writer", "_closing", "_client_gone",
        "_timer", "_ping_at", "_seen_at", "_settings", "_backlog", "_window_task", "_write_paused",
        "_drain_waiter", "_read_paused", "delivering", "_owed", "resuming",
    )  # fmt: skip

    def __init__(self, upgrades: Upgrades, message: Any, tail: bytes, admitted: bool) -> None:
        self._upgrades = upgrades
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.message = message  # aiohttp's RawRequestMessage of the upgrade request
        self.tail = tail  # client bytes before the session opens
        self.admitted = admitted  # holds a --limit-concurrency slot (gate.py)
        self.rid = ""
        self.started = 0.0
        self.peer: Any = None  # (host, port) of the TCP peer
        self.client: Any = None  # from trusted proxy headers, when client_set
        self.client_set = False
        self.worker: WorkerRecord | None = None  # the session's first worker, for the access log
        self.stream: WsStream | None = None  # once the session is open
        self.handler: asyncio.Task[None] | None = None  # the bridge's handshake (and session) task
        self._reader: FrameReader | None = None  # None: not open yet, or no more frames to read
        self._writer: FrameWriter | None = None
        self._closing = False  # our close frame went out
        self._client_gone = False  # the worker was told the client's side ended
        self._timer: asyncio.TimerHandle | None = None  # ping / ping timeout / close timeout
        self._ping_at = 0.0
        self._seen_at = 0.0
        self._settings: WebSocketSettings | None = None
        self._backlog: list[tuple[bool, bytes]] | None = None  # parsed, waiting for the window
        self._window_task: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self.delivering = False  # ws_session.deliver is running (a re-entry guard)
        self.resuming: asyncio.Task[None] | None = None  # a handed-off session waits for a worker
        self._owed = 0  # credit held back while the transport's buffer drains

    # ------------------------------------------------------ asyncio side

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()
        owed, self._owed = self._owed, 0
        if owed and self.stream is not None:
            self.stream.consumed(owed)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            if self.stream is None and not self._closing:  # before the handshake's answer: keep it
                self.tail += data
                if len(self.tail) > MAX_EARLY_BYTES:
                    self._pause_reading()
            return
        self._seen_at = self._loop.time()
        try:
            frames = reader.feed(data)
        except FrameError as exc:
            log.debug("WebSocket client failed the connection (%d): %s", exc.code, exc)
            self._reader = None
            self._client_ended(exc.code, "")
            self._write_close(exc.code, "")
            self._end()
            return
        for opcode, payload in frames:
            if opcode == TEXT or opcode == BINARY:
                self._message(opcode == TEXT, cast(bytes, payload))
            elif opcode == PING:
                self._write(PONG, cast(bytes, payload))
            elif opcode == CLOSE:
                self._reader = None
                code, reason = cast("tuple[int, str]", payload)
                if not self._closing:  # the client closes: answer with its code, tell the worker
                    self._client_ended(code, reason)
                    self._write_close(code, "")
                self._end()
                return

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timer()
        self._reader = None
        self._backlog = None
        if self.stream is not None:
            self._client_ended(ABNORMAL, "")  # (a no-op once either side closed)
        elif self.handler is not None and not self._closing:
            self.handler.cancel()  # the client left during the handshake: the bridge cleans up
        if self._window_task is not None:
            self._window_task.cancel()
        self._wake_drain()
        self.transport = None
        self._upgrades.lost(self)

    # ------------------------------------------------------- bridge side

    def answer(self, data: bytes) -> None:
        """A plain HTTP answer to the upgrade request, then the connection ends."""
        self._closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            transport.close()

    def write_head(self, data: Buffer) -> bool:
        """The head (and maybe a part of the body) of a denial response; False if the client is gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def open(
        self, head: bytes, stream: WsStream, settings: WebSocketSettings, deflate: Deflate | None
    ) -> bool:
        """Send the 101 and start the session; False if the client is gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(head)
        self.stream = stream
        self._settings = settings
        self._reader = FrameReader(settings.max_message_bytes, deflate)
        self._writer = FrameWriter(deflate)
        self._seen_at = self._loop.time()
        if settings.ping_interval_s:
            self._timer = self._loop.call_later(settings.ping_interval_s, self._ping)
        tail, self.tail = self.tail, b""
        if self._read_paused:
            self._resume_reading()
        if tail:
            self.data_received(tail)
        return True

    def send(self, text: bool, data: Buffer) -> bool:
        """A worker message to the client; False if the connection is closing or gone."""
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            return False
        assert self._writer is not None
        transport.write(self._writer.frame(TEXT if text else BINARY, data))
        return True

    def credit(self, n: int) -> None:
        """``n`` bytes of worker messages were written: credit them now, or once the buffer drains."""
        if self._write_paused:
            self._owed += n
        else:
            self.stream.consumed(n)  # type: ignore[union-attr]

    async def drain(self) -> None:
        """Until the transport's buffer is below its high-water mark (or the connection is gone)."""
        while self._write_paused and self.transport is not None:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def close(self, code: int, reason: str) -> None:
        """Our close frame; the connection ends on the client's answer or ``CLOSE_TIMEOUT_S`` later."""
        if self._closing or self.transport is None:
            return
        self._write_close(code, reason)
        self._cancel_timer()
        self._timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._end)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ helpers

    def _message(self, text: bool, data: bytes) -> None:
        stream = self.stream
        assert stream is not None
        if self._backlog is not None:
            self._backlog.append((text, data))
            return
        if stream.worker is None and stream.phase is not WsPhase.HANDING_OFF:
            return  # closed on the wire: the message has nobody to go to
        stream.send_message(text, data)
        if not stream.can_take():
            self._backlog = []
            self._pause_reading()
            self._window_task = self._loop.create_task(self._wait_window())

    async def _wait_window(self) -> None:
        """While the stream cannot take more: reading paused, parsed messages kept in order."""
        stream = self.stream
        assert stream is not None
        try:
            while await stream.wait_window():
                backlog = self._backlog
                if backlog is None:
                    return  # the connection is gone
                while backlog and stream.can_take():
                    text, data = backlog.pop(0)
                    stream.send_message(text, data)
                if not backlog and stream.can_take():
                    self._backlog = None
                    self._resume_reading()
                    return
        finally:
            self._window_task = None

    def _client_ended(self, code: int, reason: str) -> None:
        if not self._client_gone and self.stream is not None:
            self._client_gone = True
            self._backlog = None
            self.stream.client_closed(code, reason)

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and self._writer is not None:
            transport.write(self._writer.frame(opcode, payload))

    def _write_close(self, code: int, reason: str) -> None:
        self._closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write((self._writer or FrameWriter()).close(code, reason))

    def _end(self) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def _ping(self) -> None:
        settings = self._settings
        assert settings is not None
        self._write(PING, b"")
        self._ping_at = self._loop.time()
        self._timer = self._loop.call_later(settings.ping_timeout_s, self._ping_check)

    def _ping_check(self) -> None:
        settings = self._settings
        assert settings is not None
        if self._seen_at < self._ping_at:  # nothing heard since the ping: the client is gone
            log.debug("WebSocket ping timed out")
            self._timer = None
            self._client_ended(ABNORMAL, "")
            self.abort()
            return
        next_ping_s = max(settings.ping_interval_s - settings.ping_timeout_s, 0)
        self._timer = self._loop.call_later(next_ping_s, self._ping)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
