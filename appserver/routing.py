"""The streams of one front-end connection: open, route, refuse, drain, fail.

``StreamRouter`` is the half of a connection that knows about streams
(PROTOCOL.md §6); ``FrontendConnection`` (connection.py) is the other half,
the socket, handshake and liveness, and hands it every stream event of a
welcomed connection. Theory of operation:

* REQUEST opens an ``HttpCycle``, WS_CONNECT a ``WebSocketCycle``; each runs
  its app in one task. Every later event of the stream (BODY, CREDIT,
  DISCONNECT, WS_MESSAGE, WS_CLOSE, RESET) is a direct call to the cycle's
  ``feed`` -- no queue, no task per event -- so thousands of chatty streams
  share the loop fairly with HTTP.
* Rule 14: events for closed streams are dropped; for never-opened ids we
  answer RESET(PROTOCOL_ERROR). An illegal event resets only its stream.
* Rule 19: HTTP streams open on the wire count against ``capacity``,
  WebSocket streams against ``ws_capacity`` -- counted as the front end
  counts them, so a stream it may open is never refused: an app still running
  after its response ended (background work) no longer holds a slot, and the
  front end reuses the slot as soon as the response's last event left.
  Beyond that, or while draining, RESET(REFUSED) with the app untouched.
  WebSockets only open when both sides agreed on feature "websocket" at
  WELCOME.
* Drain (``start_drain``): WebSockets whose app opted in to the handoff
  extension (feature "handoff") are offered it at once; the app answers with
  its state and the session moves to another worker (WS_HANDOFF). The worker
  (worker.py) then waits for the streams: all of them for the grace period,
  or, when it may linger, only the ``pending`` ones -- everything but the
  *sessions*: open WebSockets and HTTP responses already started, which a
  lingering worker keeps serving. ``close_sessions`` ends what is left:
  WebSockets still open are closed with 1012 (service restart) and their
  apps get a short while to return before everything left is cancelled.
  WS_RESUME opens a handed-off session here like WS_CONNECT (refused while
  draining or at ``ws_capacity``: the front end tries another).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

from wire import ProtocolViolation, RequestHalf, ResetCode, WsState
from wire import events as ev

from .cycle import HttpCycle
from .stream import Emit, EndOfTick, StreamSettings
from .websocket import IdleCredit, WebSocketCycle

log = logging.getLogger(__name__)

_RECEIVING = RequestHalf.RECEIVING
WS_CLOSE_GRACE_S = 1.0  # after the 1012 close, time for WebSocket apps to see the disconnect and return
HTTP_TASK_NAME = "zasgi-http"  # every HTTP stream's task (its repr shows HttpCycle.run too)


class Cycle(Protocol):
    stream_id: int

    def feed(self, event: Any) -> None: ...
    def abort(self, code: int, reason: str) -> None: ...
    def fail_locally(self, reason: str) -> None: ...
    async def run(self, app: Callable[..., Any]) -> None: ...


class StreamRouter:
    def __init__(
        self,
        *,
        app: Callable[..., Any],
        post: Emit,
        endpoint: str,
        capacity: int,
        ws_capacity: int,
        completed: Callable[[float | None], None] | None = None,
    ) -> None:
        """``post`` sends an event to the front end. Built in the running loop that will run the apps.
        ``completed``: told each finished HTTP request's latency (admission.py), None for one
        whose body was still arriving when it opened (not a fair sample)."""
        self._loop = asyncio.get_running_loop()
        self._defer = EndOfTick(self._loop).defer  # the HTTP responses' end-of-tick flushes
        self._idle_credit = IdleCredit(self._loop)  # the WebSockets' idle credit, swept together
        self.http_tasks: set[asyncio.Task[None]] = set()
        self.ws_tasks: set[asyncio.Task[None]] = set()
        self._app = app
        self._post = post
        self._endpoint = endpoint
        self._capacity = capacity
        self._ws_capacity = ws_capacity
        # New streams are welcome: WELCOME sets it, the connection's drain() clears it. An
        # attribute, not a callback into the connection: read once per request.
        self.accepting = True
        self._settings = StreamSettings(request_window_bytes=0, response_window_bytes=0)
        self._websocket = False  # feature "websocket" agreed at WELCOME
        self._draining = False  # finish() began: apps opting in to the handoff get it at once
        self._is_draining = lambda: self._draining  # one callable shared by every WebSocketCycle
        self._open: dict[int, Any] = {}
        self._http_open = 0  # HttpCycles in _open (Rule 19); the rest of _open is WebSockets
        self._http_peak = 0  # the most of them open at once since take_peak()
        self._completed = completed
        self._uploading: list[HttpCycle] = []  # opened with a body still arriving (admission_counts)
        self._highest = 0  # highest stream id opened in this handshake
        self._openers: dict[type, Callable[[Any], None]] = {
            ev.Request: self._open_http,
            ev.WsConnect: self._open_websocket,
            ev.WsResume: self._open_websocket,  # feature "handoff"
        }

    @property
    def open_streams(self) -> int:
        return len(self._open)

    def welcomed(self, settings: StreamSettings, *, websocket: bool) -> None:
        """A new handshake: new stream settings, and stream ids start over."""
        self._settings = settings
        self._websocket = websocket
        self._highest = 0
        self.accepting = True

    # ------------------------------------------------------------ inbound

    def on_event(self, event: Any) -> None:
        sid = event.stream_id
        opener = self._openers.get(type(event))
        if opener is not None:
            if sid <= self._highest:
                self._protocol_error(sid, f"stream id {sid} reused")
                return
            self._highest = sid
            opener(event)
            return
        cycle = self._open.get(sid)
        if cycle is None:
            self._on_unrouted(event)
            return
        if type(event) is ev.Invalid:
            self._protocol_error(sid, event.reason)
            return
        try:
            cycle.feed(event)
        except ProtocolViolation as exc:
            self._protocol_error(sid, str(exc))

    def _on_unrouted(self, event: Any) -> None:
        sid = event.stream_id
        if sid <= self._highest:
            return  # Rule 14: raced the close; drop silently
        self._highest = sid  # an unreadable or unknown opener: it is reset now, and closed
        if type(event) is not ev.Reset:  # never answer a RESET with a RESET
            reason = (
                event.reason
                if type(event) is ev.Invalid
                else f"{type(event).__name__} on a stream never opened"
            )
            self._protocol_error(sid, reason)

    def _protocol_error(self, sid: int, reason: str) -> None:
        log.warning("protocol error on stream %d from %s: %s", sid, self._endpoint, reason)
        cycle = self._open.get(sid)
        if cycle is not None:
            cycle.abort(ResetCode.PROTOCOL_ERROR, reason)
        else:
            self._post(ev.Reset(sid, ResetCode.PROTOCOL_ERROR, reason))

    # ------------------------------------------------------------ opening streams

    def _open_unsupported(self, event: Any) -> None:
        self._protocol_error(event.stream_id, f"{type(event).__name__}: feature not agreed at WELCOME")

    def _refused(self, sid: int, running: int, capacity: int) -> bool:
        if self.accepting and running < capacity:
            return False
        why = "worker at capacity" if self.accepting else "worker draining"
        self._post(ev.Reset(sid, ResetCode.REFUSED, why))
        return True

    def _open_http(self, request: ev.Request) -> None:
        sid = request.stream_id
        if self._http_open >= self._capacity or not self.accepting:  # the hot path: no _refused call
            self._refused(sid, self._http_open, self._capacity)
            return
        try:
            # By position: keyword arguments to a class cost a dict per call (~0.2 µs).
            cycle = HttpCycle(request, self._post, self._settings, self._on_closed, self._defer)
        except ProtocolViolation as exc:
            self._protocol_error(sid, str(exc))
            return
        # The task leaves http_tasks as its run() ends: no done callback.
        self._open[sid] = cycle
        self._http_open += 1
        if self._http_open > self._http_peak:
            self._http_peak = self._http_open
        if self._completed is not None:
            if request.more_body:
                self._uploading.append(cycle)
            else:
                cycle.opened_at = perf_counter()
        coro = cycle.run(self._app, self.http_tasks)
        loop = self._loop
        if loop.get_task_factory() is None:
            # What create_task does, with a name: unnamed, each task formats "Task-N" (~0.2 µs).
            task = asyncio.Task(coro, loop=loop, name=HTTP_TASK_NAME)
        else:
            task = loop.create_task(coro)
        cycle.task = task
        self.http_tasks.add(task)

    def _open_websocket(self, opener: ev.WsConnect | ev.WsResume) -> None:
        if not self._websocket or (type(opener) is ev.WsResume and not self._settings.handoff):
            self._open_unsupported(opener)
            return
        if self._refused(opener.stream_id, len(self._open) - self._http_open, self._ws_capacity):
            return
        try:
            cycle = WebSocketCycle(
                opener, emit=self._post, settings=self._settings, on_closed=self._on_closed,
                draining=self._is_draining, idle_credit=self._idle_credit,
            )  # fmt: skip
        except ProtocolViolation as exc:
            self._protocol_error(opener.stream_id, str(exc))
            return
        self._open[cycle.stream_id] = cycle
        task = cycle.task = self._loop.create_task(cycle.run(self._app))
        self.ws_tasks.add(task)
        task.add_done_callback(self.ws_tasks.discard)

    def _on_closed(self, cycle: Cycle) -> None:
        if self._open.get(cycle.stream_id) is cycle:
            del self._open[cycle.stream_id]
            if type(cycle) is HttpCycle:
                self._http_open -= 1
                completed = self._completed
                if completed is not None:
                    opened_at = cycle.opened_at
                    completed(perf_counter() - opened_at if opened_at else None)

    def cycle_of(self, task: Any) -> Any:
        """The open stream whose app runs in ``task``, or None (read by the pulse thread: a snapshot)."""
        for cycle in list(self._open.values()):
            if cycle.task is task:
                return cycle
        return None

    def has_http_open(self) -> bool:
        return self._http_open > 0

    def take_peak(self) -> int:
        """The most HTTP streams open at once since the last call. What a front end runs here, where
        the count now misses requests that start and end within one loop iteration (a CPU-bound
        app runs every request it read at once, so between iterations nothing is open)."""
        peak = max(self._http_peak, self._http_open)
        self._http_peak = self._http_open
        return peak

    def admission_counts(self) -> tuple[int, int]:
        """(HTTP streams open, of which bodies still arriving): a slow upload costs the app nothing
        while it waits in receive(), so admission counts it apart."""
        open_, uploading = self._open, self._uploading
        if uploading:
            uploading[:] = [
                c for c in uploading if c.request_state is _RECEIVING and open_.get(c.stream_id) is c
            ]
        return self._http_open, len(uploading)

    # ------------------------------------------------------------ ending streams

    def fail_all(self, reason: str) -> None:
        """The front end forgot our streams (lost, BYE, UNKNOWN_PEER): fail them without a word."""
        cycles, self._open, self._http_open, self._http_peak = list(self._open.values()), {}, 0, 0
        self._uploading.clear()
        for cycle in cycles:
            cycle.fail_locally(reason)

    def start_drain(self) -> None:
        """The worker drains: apps that opted in to the handoff are offered it (once)."""
        self._draining = True
        offered = [c for c in list(self._open.values()) if type(c) is WebSocketCycle and c.offer_handoff()]
        if offered:
            log.info("offered %d WebSocket(s) to %s a handoff", len(offered), self._endpoint)

    @property
    def running(self) -> set[asyncio.Task[None]]:
        """The app tasks not finished yet (HTTP, background work after a response, WebSocket)."""
        return {task for task in self.http_tasks | self.ws_tasks if not task.done()}

    def sessions(self) -> set[asyncio.Task[None]]:
        """The tasks of what a lingering worker keeps: WebSockets open and HTTP responses under way."""
        kept: set[asyncio.Task[None]] = set()
        for cycle in self._open.values():
            if type(cycle) is HttpCycle:
                if not cycle.started:
                    continue
            elif cycle.state is not WsState.OPEN:
                continue
            if cycle.task is not None and not cycle.task.done():
                kept.add(cycle.task)
        return kept

    def pending(self) -> set[asyncio.Task[None]]:
        """The running tasks that are not sessions: requests not answered yet, handshakes, background work."""
        return self.running - self.sessions()

    async def cancel_pending(self) -> None:
        left = self.pending()
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
        self.http_tasks.difference_update(left)

    async def finish(self, timeout_s: float) -> None:
        """Drain without lingering: offer handoffs, wait up to ``timeout_s`` for the apps, then
        ``close_sessions``."""
        self.start_drain()
        tasks = self.http_tasks | self.ws_tasks
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        await self.close_sessions()

    async def close_sessions(self) -> None:
        """Close the WebSockets still open with 1012, give their apps a moment, cancel everything left."""
        closed = [c for c in list(self._open.values()) if type(c) is WebSocketCycle and c.going_away()]
        if closed:
            log.info("closed %d WebSocket(s) to %s with 1012 (service restart)", len(closed), self._endpoint)
            if self.ws_tasks:
                await asyncio.wait(set(self.ws_tasks), timeout=WS_CLOSE_GRACE_S)
        await self.cancel()

    async def cancel(self) -> None:
        left = [task for task in self.http_tasks | self.ws_tasks if not task.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
        self.http_tasks.difference_update(left)  # those cancelled before they started (HttpCycle.run)
