"""One WebSocket's stream to a worker: the front end's half of PROTOCOL §6.2, §7 and §9.

Theory of operation. As ``stream.HttpStream`` does, the dispatcher calls
``on_event`` / ``on_violation`` / ``on_worker_lost`` synchronously from the
ZeroMQ reader callback. Worker events are checked with ``wire.states.WsTracker``
and put in a small inbox the connection's handler task drains with ``next()``;
local happenings (worker lost, protocol violation, client closed, shutdown)
travel the same way as ``WsLocal`` markers, so the handler alone decides what
the client sees. The client-reading pump (ws_bridge) sends WS_MESSAGE through
``send_message`` and parks on ``wait_window()`` while the send window is spent;
a CREDIT reopens it by resolving that one future.

Two views of the same stream, each an explicit state:
* ``phase`` (``WsPhase``): what the *client* has seen. QUEUED -> CONNECTING ->
  OPEN | DENYING -> DONE, or FAILED.
* the wire: ``tracker`` (WsTracker) plus ``worker``, which is None once the
  stream is closed on the wire (WS_CLOSE either way, RESET, denial done) and
  its WebSocket slot is free.
"""

from __future__ import annotations

import asyncio
from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Any

from wire import events as ev
from wire.errors import ProtocolViolation
from wire.events import ResetCode
from wire.flow import ReceiveWindow, SendWindow, cost
from wire.states import WorkerState, WsState, WsTracker

from .stream import MAX_REPLAYS

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .pool import WorkerRecord

ABNORMAL = 1006  # RFC 6455: the connection dropped without a close frame


class WsPhase(Enum):
    QUEUED = "queued"  # waiting for a WebSocket slot
    CONNECTING = "connecting"  # WS_CONNECT sent, the client still waits for the handshake
    OPEN = "open"  # 101 sent: messages flow
    DENYING = "denying"  # the worker's denial response is being written
    DONE = "done"
    FAILED = "failed"


class WsLocal(Enum):
    """Inbox markers for things found on this side of the wire."""

    WORKER_LOST = "worker lost"
    WORKER_LOST_DRAINING = "worker lost while draining"
    VIOLATION = "protocol violation"
    CLIENT_CLOSED = "client closed"
    GOING_AWAY = "front end shutting down"


class WsStream:
    websocket = True  # holds a WebSocket slot (dispatch.Stream)
    __slots__ = (
        "stream_id", "worker", "phase", "replays", "tracker", "window", "recv",
        "_dispatcher", "_connect", "_delivered", "_inbox", "_waiter", "_window_waiter",
    )  # fmt: skip

    def __init__(self, dispatcher: Dispatcher, *, connect: tuple[Any, ...]) -> None:
        self.stream_id = 0
        self.worker: WorkerRecord | None = None
        self.phase = WsPhase.QUEUED
        self.replays = 0
        self.tracker = WsTracker()
        self.window = SendWindow(0)  # client -> worker (HELLO.window_bytes once dispatched)
        self.recv: ReceiveWindow | None = None  # worker -> client (WELCOME.window_bytes)
        self._dispatcher = dispatcher
        self._connect = connect  # WS_CONNECT's fields after stream_id, kept for a replay
        self._delivered = False  # Rule 20: the worker showed the stream reached it
        self._inbox: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._window_waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------ handler side

    def dispatch(self, worker: WorkerRecord) -> None:
        """Open the stream on ``worker`` (which holds a WebSocket slot for it): WS_CONNECT."""
        backend = self._dispatcher.config.backend
        self.worker = worker
        self.stream_id = self._dispatcher.open_stream(self)
        self.tracker = WsTracker()
        self.window = SendWindow(worker.window_bytes)
        self.recv = ReceiveWindow(backend.window_bytes, slack_bytes=backend.max_payload_bytes)
        self._delivered = False
        self.phase = WsPhase.CONNECTING
        self._dispatcher.post(ev.WsConnect(self.stream_id, *self._connect), worker)

    async def next(self) -> Any:
        """The next worker event or ``WsLocal`` marker for the handler.

        Unlike HTTP, credit is not returned when the inbox runs dry: a chatty
        socket would answer every message with a CREDIT. ``consumed`` returns
        it once half the window is used, which is all a worker waits for (it is
        only ever blocked with the whole window outstanding).
        """
        inbox = self._inbox
        if not inbox:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return inbox.popleft()

    def can_replay(self, item: Any) -> bool:
        """Rule 20: nothing came back for the stream, and the worker lost it or refused it."""
        if self.phase is not WsPhase.CONNECTING or self._delivered or self.replays >= MAX_REPLAYS:
            return False
        if item is WsLocal.WORKER_LOST or item is WsLocal.WORKER_LOST_DRAINING:
            return True
        return type(item) is ev.Reset and item.code == ResetCode.REFUSED

    def replay(self, worker: WorkerRecord) -> None:
        self.replays += 1
        self.dispatch(worker)

    def send_message(self, text: bool, data: bytes) -> None:
        """A client message to the worker; spends the window (Rule 16: may go below zero once)."""
        if self.worker is None:
            return  # closed on the wire: the message has nobody to go to
        message = ev.WsMessage(self.stream_id, text, data)
        self.tracker.feed(message)
        self.window.spend(cost(message))
        self._dispatcher.post(message, self.worker)

    async def wait_window(self) -> bool:
        """Until the send window reopens (True) or the stream closes on the wire (False)."""
        while self.worker is not None and not self.window.open:
            self._window_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._window_waiter
            finally:
                self._window_waiter = None
        return self.worker is not None

    def consumed(self, n: int) -> None:
        """``n`` bytes of worker messages reached the client socket: credit them (batched)."""
        if self.recv is not None and self.worker is not None:
            credit = self.recv.consumed(n)
            if credit:
                self._dispatcher.post(ev.Credit(self.stream_id, credit), self.worker)

    def close(self, code: int, reason: str = "") -> None:
        """Tell the worker the client is gone (``websocket.disconnect``), if the stream is still open."""
        if self.worker is not None and self.tracker.state in (WsState.CONNECTING, WsState.OPEN):
            close = ev.WsClose(self.stream_id, code, reason)
            self.tracker.feed(close)
            self._dispatcher.post(close, self.worker)
        elif self.worker is not None:  # a denial response in progress: no WS_CLOSE there
            reset = ev.Reset(self.stream_id, ResetCode.CANCELLED, "client went away")
            self._dispatcher.post(reset, self.worker)
        self._detach()

    def client_closed(self, code: int, reason: str) -> None:
        """The pump saw the client's close (or its loss): WS_CLOSE, then wake the handler."""
        self.close(code, reason)
        self._inbox.clear()  # worker messages still queued have no client to go to
        self._push(WsLocal.CLIENT_CLOSED)

    def going_away(self) -> None:
        """The front end shuts down: the handler closes both sides with 1001."""
        if self.phase in (WsPhase.QUEUED, WsPhase.CONNECTING, WsPhase.OPEN):
            self._push(WsLocal.GOING_AWAY)

    def reset(self, code: ResetCode, reason: str) -> None:
        """Give up on the stream on the wire (we are the side that found the problem)."""
        if self.worker is not None:
            self.tracker.feed(ev.Reset(self.stream_id, code, reason))
            self._dispatcher.post(ev.Reset(self.stream_id, code, reason), self.worker)
            self._detach()

    def finish(self) -> None:
        """The handler is done: a stream still open on the wire ends as a vanished client."""
        if self.phase not in (WsPhase.DONE, WsPhase.FAILED):
            self.phase = WsPhase.FAILED
        self.close(ABNORMAL)

    # --------------------------------------------------- dispatcher side

    def on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is ev.Reset:
            self.tracker.feed(event)
            self._detach()
            self._push(event)
            return
        self._delivered = True
        if kind is ev.Credit:
            self.window.grant(event.bytes)
            self._wake_window()
            return
        try:
            state = self.tracker.feed(event)
            n = cost(event)  # WS_MESSAGE: len + 32; a denial's RESPONSE/BODY: the body
            if n and self.recv is not None:
                self.recv.received(n, stream_id=self.stream_id)
        except ProtocolViolation as exc:
            self.on_violation(str(exc))
            return
        if state is WsState.CLOSED:
            self._detach()  # WS_CLOSE, WS_HANDOFF or the denial's end: the slot is free
        self._push(event)

    def on_violation(self, reason: str) -> None:
        self.reset(ResetCode.PROTOCOL_ERROR, reason)
        self._push(WsLocal.VIOLATION)

    def on_worker_lost(self) -> None:
        worker = self.worker
        draining = worker is not None and worker.previous is WorkerState.DRAINING
        self._detach()
        self._push(WsLocal.WORKER_LOST_DRAINING if draining else WsLocal.WORKER_LOST)

    # ------------------------------------------------------------ helpers

    def _detach(self) -> None:
        if self.worker is not None:
            self._dispatcher.close_stream(self)
            self.worker = None
        self._wake_window()  # a pump parked on the window must see the stream is gone

    def _wake_window(self) -> None:
        waiter = self._window_waiter
        if waiter is not None and not waiter.done() and (self.window.open or self.worker is None):
            waiter.set_result(None)

    def _push(self, item: Any) -> None:
        if self.phase in (WsPhase.DONE, WsPhase.FAILED):
            return  # nobody will read it
        self._inbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
