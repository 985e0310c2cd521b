"""One WebSocket's stream to a worker: the front end's half of PROTOCOL §6.2, §7 and §9.

Theory of operation. As ``stream.HttpStream`` does, the dispatcher calls
``on_event`` / ``on_violation`` / ``on_worker_lost`` synchronously from the
ZeroMQ reader callback. Worker events are checked with ``wire.states.WsTracker``
and put in a small inbox the handshake's task drains with ``next()`` (an open
session's connection is called instead: ``listener``, ``take``);
local happenings (worker lost, protocol violation, client closed, shutdown)
travel the same way as ``WsLocal`` markers, so one place decides what the
client sees. The client's connection (ws_connection) sends WS_MESSAGE through
``send_message`` and, with the send window spent, stops reading and parks on
``wait_window()``; a CREDIT reopens it by resolving that one future.

Two views of the same stream, each an explicit state:
* ``phase`` (``WsPhase``, ``TRANSITIONS``): what the *client* has seen.
  QUEUED -> CONNECTING -> OPEN | DENYING -> DONE, or FAILED; OPEN <->
  HANDING_OFF while a handed-off session is between two workers (the client
  still sees an open socket). Written only here; ws_bridge calls ``opened``,
  ``denying``, ``done``, ``fail``.
* the wire: ``tracker`` (WsTracker) plus ``worker``, which is None once the
  stream is closed on the wire (WS_CLOSE either way, RESET, WS_HANDOFF, denial
  done) and its WebSocket slot is free.

Handoff (feature "handoff", PROTOCOL §8.1, Rule 22). With a worker that
agreed to it, every client message sent on the stream is kept (``_unacked``)
until CREDIT covers it; the worker credits exactly what its app consumed, so
at WS_HANDOFF the ones still kept are exactly those no app received. They go
to the front of ``_held``, the pump goes on reading the client into ``_held``
(bounded by the old window), and ``resume`` opens a new stream on another
worker with WS_RESUME, then sends ``_held`` in order within the new window.
A resume that never reached an app (RESET REFUSED; lost unsent, or to a
worker that said BYE) is retried the same way, at most ``MAX_REPLAYS`` times;
so is one whose worker was lost before it sent anything but credit
(``_retryable``, Rule 22a: every message since the resume is kept for it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from enum import Enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wire import events as ev
from wire.errors import ProtocolViolation
from wire.events import ResetCode
from wire.flow import WS_MESSAGE_OVERHEAD_BYTES, ReceiveWindow, SendWindow, cost
from wire.states import WorkerState, WsState, WsTracker

from .stream import MAX_REPLAYS

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .pool import WorkerRecord

ABNORMAL = 1006  # RFC 6455: the connection dropped without a close frame
_LEAVING = (WorkerState.DRAINING, WorkerState.LINGERING)  # lost after it was told to leave: 1012


class WsPhase(Enum):
    QUEUED = "queued"  # waiting for a WebSocket slot
    CONNECTING = "connecting"  # WS_CONNECT sent, the client still waits for the handshake
    OPEN = "open"  # 101 sent: messages flow
    HANDING_OFF = "handing off"  # open for the client; between two workers, its messages are held
    DENYING = "denying"  # the worker's denial response is being written
    DONE = "done"
    FAILED = "failed"


_OVER = frozenset({WsPhase.DONE, WsPhase.FAILED})
TRANSITIONS: dict[WsPhase, frozenset[WsPhase]] = {
    WsPhase.QUEUED: frozenset({WsPhase.CONNECTING}) | _OVER,
    WsPhase.CONNECTING: frozenset({WsPhase.CONNECTING, WsPhase.OPEN, WsPhase.HANDING_OFF, WsPhase.DENYING})
    | _OVER,  # (CONNECTING again: a replay; HANDING_OFF: handed off before the 101 went out)
    WsPhase.OPEN: frozenset({WsPhase.HANDING_OFF}) | _OVER,
    WsPhase.HANDING_OFF: frozenset({WsPhase.OPEN}) | _OVER,
    WsPhase.DENYING: _OVER,
    WsPhase.DONE: frozenset(),
    WsPhase.FAILED: frozenset(),
}


class IllegalTransition(Exception):  # (a bug of ours; Exception: mypyc compiles no RuntimeError subclass)
    pass


class WsLocal(Enum):
    """Inbox markers for things found on this side of the wire."""

    WORKER_LOST = "worker lost"
    WORKER_LOST_DRAINING = "worker lost while draining"
    VIOLATION = "protocol violation"
    CLIENT_CLOSED = "client closed"
    GOING_AWAY = "front end shutting down"
    RESTARTING = "front end replaced"  # a retired front end's grace ended (retire.py): 1012


class WsStream:
    websocket = True  # holds a WebSocket slot (dispatch.Stream)
    __slots__ = (
        "stream_id", "worker", "phase", "replays", "resumes", "tracker", "window", "recv", "acquiring",
        "_dispatcher", "_connect", "_delivered", "_inbox", "_waiter", "_window_waiter",
        "_keep", "_unacked", "_credited", "_held", "_held_bytes", "_hold_limit", "_subprotocol", "_state",
        "_retryable", "listener",
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
        # Handoff. Deques exist only while they hold something: 10,000 idle sockets stay cheap.
        self.resumes = 0  # WS_RESUMEs sent since the last WS_HANDOFF
        self.acquiring: asyncio.Future[Any] | None = None  # the handler's wait for a worker to resume on
        self._keep = False  # the worker agreed to "handoff": keep client messages until credited
        self._unacked: deque[tuple[bool, bytes]] | None = None  # sent on this stream, not yet credited
        self._credited = 0  # credit not yet matched to a whole kept message
        self._held: deque[tuple[bool, bytes]] | None = None  # not sent yet: waiting for a worker or window
        self._held_bytes = 0
        self._hold_limit = 0  # stop reading the client while more than this is held
        self._subprotocol: str | None = None  # the accepted one, for WS_RESUME
        self._state: Any = None  # the app's handoff state, for WS_RESUME
        self._retryable = False  # a resumed session the client saw nothing of yet: a lost worker retries it
        # An open session's connection (ws_session.deliver): called as each item is pushed, so the
        # session needs no task waiting on ``next()`` (which still works: it is woken too).
        self.listener: Callable[[], None] | None = None

    # ------------------------------------------------------ handler side

    def dispatch(self, worker: WorkerRecord) -> None:
        """Open the stream on ``worker`` (which holds a WebSocket slot for it): WS_CONNECT."""
        self.worker = worker
        self.stream_id = self._dispatcher.open_stream(self)
        self.tracker = WsTracker()
        self._attach(worker)
        self._to(WsPhase.CONNECTING)
        self._dispatcher.post(ev.WsConnect(self.stream_id, *self._connect), worker)

    def resume(self, worker: WorkerRecord) -> None:
        """Open the handed-off session on ``worker`` (holding a WebSocket slot, feature "handoff"):
        WS_RESUME, then the held client messages as the new window allows."""
        self.worker = worker
        self.stream_id = self._dispatcher.open_stream(self)
        self.tracker = WsTracker(resumed=True)
        self._attach(worker)
        self.resumes += 1
        self._retryable = True
        self._to(WsPhase.OPEN)
        connect = ev.WsConnect(self.stream_id, *self._connect)
        self._dispatcher.post(ev.WsResume(self.stream_id, connect, self._subprotocol, self._state), worker)
        self._send_held()
        self._wake_window()

    def _attach(self, worker: WorkerRecord) -> None:
        backend = self._dispatcher.config.backend
        self.window = SendWindow(worker.window_bytes)
        self.recv = ReceiveWindow(backend.window_bytes, slack_bytes=backend.max_payload_bytes)
        self._keep = "handoff" in worker.features
        self._unacked, self._credited = None, 0
        self._delivered = False

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

    def take(self) -> Any:
        """The next worker event or ``WsLocal`` marker, or None (for ``listener``'s owner)."""
        inbox = self._inbox
        return inbox.popleft() if inbox else None

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
        """A client message to the worker; spends the window (Rule 16: may go below zero once).

        Between two workers (or behind messages still held) it is held instead.
        """
        if self.phase is WsPhase.HANDING_OFF or self._held:
            if self._held is None:
                self._held = deque()
            self._held.append((text, data))
            self._held_bytes += len(data) + WS_MESSAGE_OVERHEAD_BYTES
            return
        if self.worker is None:
            return  # closed on the wire: the message has nobody to go to
        self._post_message(text, data)

    def _post_message(self, text: bool, data: bytes) -> None:
        assert self.worker is not None
        message = ev.WsMessage(self.stream_id, text, data)
        self.tracker.feed(message)
        self.window.spend(cost(message))
        if self._keep:  # until credit shows an app consumed it (Rule 22)
            if self._unacked is None:
                self._unacked = deque()
            self._unacked.append((text, data))
        self._dispatcher.post(message, self.worker)

    def _send_held(self) -> None:
        held = self._held
        while held and self.worker is not None and self.window.open:
            text, data = held.popleft()
            self._held_bytes -= len(data) + WS_MESSAGE_OVERHEAD_BYTES
            self._post_message(text, data)
        if not held:
            self._held = None

    def can_take(self) -> bool:
        """May the client connection read another message now? (ws_connection)"""
        if self.phase is WsPhase.HANDING_OFF:
            return self._held_bytes < self._hold_limit
        return self.worker is not None and self.window.open and not self._held

    async def wait_window(self) -> bool:
        """Until the stream can take another client message (True) or the session is over (False)."""
        while not self.can_take():
            if self.worker is None and self.phase is not WsPhase.HANDING_OFF:
                return False
            self._window_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._window_waiter
            finally:
                self._window_waiter = None
        return True

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
        self._held, self._held_bytes = None, 0
        self._push(WsLocal.CLIENT_CLOSED)
        self._stop_acquiring()

    def going_away(self, restart: bool = False) -> None:
        """The front end shuts down: the handler closes both sides with 1001 (1012 if ``restart``:
        a successor front end serves the port, the client should reconnect)."""
        if self.phase in (WsPhase.QUEUED, WsPhase.CONNECTING, WsPhase.OPEN, WsPhase.HANDING_OFF):
            self._push(WsLocal.RESTARTING if restart else WsLocal.GOING_AWAY)
            self._stop_acquiring()

    def _stop_acquiring(self) -> None:
        # A handler waiting for a worker to resume on reads the marker just pushed instead.
        if self.acquiring is not None:
            self.acquiring.cancel()

    def reset(self, code: ResetCode, reason: str) -> None:
        """Give up on the stream on the wire (we are the side that found the problem)."""
        if self.worker is not None:
            self.tracker.feed(ev.Reset(self.stream_id, code, reason))
            self._dispatcher.post(ev.Reset(self.stream_id, code, reason), self.worker)
            self._detach()

    def finish(self) -> None:
        """The handler is done: a stream still open on the wire ends as a vanished client."""
        self.fail()
        self.close(ABNORMAL)

    def opened(self) -> None:
        """The 101 went to the client (a session handed off at once stays HANDING_OFF)."""
        if self.phase is WsPhase.CONNECTING:
            self._to(WsPhase.OPEN)

    def denying(self) -> None:
        """The worker's denial response is being written."""
        self._to(WsPhase.DENYING)

    def done(self) -> None:
        """The session (or its denial) ended as it should: closed, refused, handed back with 1012."""
        if self.phase not in _OVER:  # (the first end wins)
            self._to(WsPhase.DONE)

    def fail(self) -> None:
        """The session ended badly for the client (gone, cut short, an error from the worker side)."""
        if self.phase not in _OVER:
            self._to(WsPhase.FAILED)

    def _to(self, phase: WsPhase) -> None:
        if phase not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"WebSocket stream {self.stream_id}: {self.phase.name} -> {phase.name}")
        self.phase = phase

    # --------------------------------------------------- dispatcher side

    def on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is ev.Reset:
            self.tracker.feed(event)
            if event.code == ResetCode.REFUSED and 0 < self.resumes <= MAX_REPLAYS:
                self._hand_off(self._state)  # the resume never reached the app: try another worker
            self._detach()
            self._push(event)
            return
        self._delivered = True
        if kind is ev.Credit:
            self.window.grant(event.bytes)
            if self._unacked:
                self._acked(event.bytes)
            self._send_held()
            self._wake_window()
            return
        if self._retryable:  # the new app answered: the client may see it, the old state is stale
            self._release()
        try:
            state = self.tracker.feed(event)
            n = cost(event)  # WS_MESSAGE: len + 32; a denial's RESPONSE/BODY: the body
            if n and self.recv is not None:
                self.recv.received(n, stream_id=self.stream_id)
        except ProtocolViolation as exc:
            self.on_violation(str(exc))
            return
        if kind is ev.WsAccept:
            self._subprotocol = event.subprotocol
        elif kind is ev.WsHandoff and self._keep:
            self.resumes = 0
            self._hand_off(event.state)
        if state is WsState.CLOSED:
            self._detach()  # WS_CLOSE, WS_HANDOFF or the denial's end: the slot is free
        self._push(event)

    def on_violation(self, reason: str) -> None:
        self.reset(ResetCode.PROTOCOL_ERROR, reason)
        self._push(WsLocal.VIOLATION)

    def on_worker_lost(self) -> None:
        worker = self.worker
        draining = worker is not None and worker.previous in _LEAVING
        if worker is not None and self._retryable:
            if self.resumes <= MAX_REPLAYS:  # Rule 22a: resume again from the state still held
                self._hand_off(self._state)  # the handler resumes it elsewhere
            draining = True  # retries spent: 1012, standard clients reconnect
        self._detach()
        self._push(WsLocal.WORKER_LOST_DRAINING if draining else WsLocal.WORKER_LOST)

    # ------------------------------------------------------------ helpers

    def _acked(self, n: int) -> None:
        """Credit ``n``: the worker's app consumed that much more, in order (Rule 22)."""
        unacked = self._unacked
        assert unacked is not None
        self._credited += n
        if self._retryable:  # kept whole for a retry, until one window more was consumed
            if self._credited <= self._hold_limit:
                return
            self._retryable = False
        while unacked and len(unacked[0][1]) + WS_MESSAGE_OVERHEAD_BYTES <= self._credited:
            self._credited -= len(unacked.popleft()[1]) + WS_MESSAGE_OVERHEAD_BYTES
        if not unacked:
            self._unacked, self._credited = None, 0

    def _release(self) -> None:
        """The resumed session can no longer be retried: drop what only a retry needed."""
        self._retryable = False
        if self._unacked:
            self._acked(0)

    def _hand_off(self, state: Any) -> None:
        """The session leaves its worker: what it never consumed goes back in front of the held ones."""
        if self.phase in (WsPhase.DONE, WsPhase.FAILED) or self.worker is None:
            return  # nobody to resume for
        self._state = state
        self._hold_limit = self.worker.window_bytes
        unacked, self._unacked, self._credited = self._unacked, None, 0
        if unacked:
            self._held_bytes += sum(len(data) + WS_MESSAGE_OVERHEAD_BYTES for _, data in unacked)
            if self._held:
                unacked.extend(self._held)
            self._held = unacked
        self._to(WsPhase.HANDING_OFF)

    def _detach(self) -> None:
        if self.worker is not None:
            self._dispatcher.close_stream(self)
            self.worker = None
        self._wake_window()  # a pump parked on the window must see the stream is gone

    def _wake_window(self) -> None:
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # the pump re-checks what it waits for

    def _push(self, item: Any) -> None:
        if self.phase in (WsPhase.DONE, WsPhase.FAILED):
            return  # nobody will read it
        self._inbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.listener is not None:
            self.listener()
