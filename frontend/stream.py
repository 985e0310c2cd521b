"""One HTTP request's stream to a worker: the front end's half of PROTOCOL §6.1 and §9.

Theory of operation. The dispatcher calls ``on_event`` / ``on_violation`` /
``on_worker_lost`` synchronously from the ZeroMQ reader callback. Worker
events are validated against ``wire.states`` trackers on arrival and put in a
small inbox (a deque); the request's handler task awaits ``next()``, which
parks on one future only when the inbox is empty. Local failures travel the
same way as ``Local`` markers, so the handler alone decides what the client
sees (http_requests): replay, an error status, or an aborted connection.

Two views of the same stream, each an explicit state:
* ``phase`` (``Phase``, ``TRANSITIONS``): what the *client* has seen.
  QUEUED -> DISPATCHED -> RESPONDING -> DONE | FAILED; written only here, by
  ``dispatch``/``responding``/``done``/``fail`` (the request path and the
  response writer call them), each move checked against the table.
* the wire: ``request_half``/``response`` trackers, plus ``worker``, which is
  None when the stream is closed on the wire (or not yet open). A stream whose
  client is done but whose worker is still answering (after DISCONNECT) stays
  routed ("lingers") until the worker's last event, so the worker's slot is
  counted until it is really free (Rule 19).

Replay after a lost worker (PROTOCOL §9) needs the request in hand again
(``Upload`` keeps it) and a reason to think running it twice is harmless: an
idempotent method, or proof the app never got it -- its REQUEST never left
this process, or the worker said BYE (it runs nothing more) before showing
the stream had reached the app (Rule 20). A worker killed mid-request shows
nothing either way, so a POST it had been sent gets 502, never a second run.
And once only (replay.py): a request lost with a second worker is 502, and
logged as a likely poison request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

from wire import events as ev
from wire.errors import ProtocolViolation
from wire.events import ResetCode
from wire.flow import ReceiveWindow, cost
from wire.states import RequestHalf, RequestTracker, ResponseHalf, ResponseTracker

from .replay import may_replay, poison_message
from .upload import BodyTooLarge, NoBody, Upload

if TYPE_CHECKING:
    from .http_requests import HttpRequests
    from .pool import WorkerRecord
    from .writer import RequestWriter

log = logging.getLogger(__name__)

MAX_REPLAYS = 2  # refused (never delivered) twice: give up; a lost worker's: once (replay.may_replay)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class Phase(Enum):
    QUEUED = "queued"  # waiting for a worker slot
    DISPATCHED = "dispatched"  # REQUEST sent, nothing written to the client yet
    RESPONDING = "responding"  # the status line went to the client
    DONE = "done"
    FAILED = "failed"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.DISPATCHED, Phase.FAILED}),
    Phase.DISPATCHED: frozenset({Phase.DISPATCHED, Phase.RESPONDING, Phase.DONE, Phase.FAILED}),  # (a replay)
    Phase.RESPONDING: frozenset({Phase.DONE, Phase.FAILED}),
    Phase.DONE: frozenset({Phase.FAILED}),  # a bug of ours after the response: the stream still ends
    Phase.FAILED: frozenset({Phase.FAILED}),  # failures race (client gone, worker lost): the first wins
}


@mypyc_attr(native_class=False)  # compiled (wire/compiled.py): mypyc cannot subclass RuntimeError natively
class IllegalTransition(RuntimeError):
    pass


class Local(Enum):
    """Inbox markers for failures found on this side of the wire."""

    WORKER_LOST = "worker lost"
    WORKER_BLOCKED = "worker blocked past --timeout-worker-blocked"  # evicted (Rule 9b): 504, no replay
    VIOLATION = "protocol violation"
    BODY_TOO_LARGE = "request body too large"
    BAD_BODY = "unreadable request body"


class HttpStream:
    websocket = False  # holds an HTTP slot (dispatch.Stream)
    __slots__ = (
        "stream_id", "worker", "phase", "replays", "upload", "request_half", "response", "recv",
        "undelivered", "lost_on", "writer", "_requests", "_first", "_dispatcher", "_head", "_ext", "_idempotent",
        "_inbox", "_waiter", "_pump",
    )  # fmt: skip

    def __init__(
        self,
        requests: HttpRequests,
        head: tuple[Any, ...],  # REQUEST's fields from method to server, in wire order
        ext: dict[str, Any],
        upload: Upload | NoBody,
        writer: RequestWriter,  # where its response goes
    ) -> None:
        self.stream_id = 0
        self.worker: WorkerRecord | None = None
        self.phase = Phase.QUEUED
        self.replays = 0
        self.undelivered = False  # set when the worker is lost: its app never saw this attempt
        self.lost_on: tuple[str, ...] = ()  # the workers lost with this request on them (replay.py)
        self.upload = upload
        if upload.has_body:
            upload.send = self._send_body
        self.request_half: RequestTracker | None = None
        self.response = ResponseTracker()
        self.recv: ReceiveWindow | None = None
        self.writer: RequestWriter | None = writer  # (None once finished)
        self._requests = requests
        self._first = False  # ``first_event``: the request path awaits the first event without a task
        self._dispatcher = requests.dispatcher
        self._head = head
        self._ext = ext
        self._idempotent = head[0] in IDEMPOTENT
        self._inbox: deque[Any] | None = None  # made by the first ``queue`` (the task path only)
        self._waiter: asyncio.Future[None] | None = None
        self._pump: asyncio.Task[None] | None = None

    # ------------------------------------------------------ handler side

    def dispatch(self, worker: WorkerRecord, first: bool) -> None:
        """Open the stream on ``worker`` (which holds a slot for it) and send REQUEST. ``first``: the
        request path awaits the first worker event (or ``Local`` marker) without a task: it goes to
        ``HttpRequests.first_event``, from the dispatcher's callback; the rest queue."""
        phase = self.phase
        # TRANSITIONS, inline (hot-path rule 7)
        if phase is not Phase.QUEUED and phase is not Phase.DISPATCHED:
            self._illegal(Phase.DISPATCHED)
        dispatcher = self._dispatcher
        upload = self.upload
        self.worker = worker
        self.undelivered = False
        self.stream_id = stream_id = dispatcher.open_stream(self)
        if self.replays:  # a replay starts the response afresh (the first attempt has __init__'s)
            self.response = ResponseTracker()
        self.recv = None  # made by the first event that costs (on_event)
        body, more = upload.first(worker.window_bytes) if upload.has_body else (b"", False)
        # (``_head``: the nine fields from method to server, request_head.RequestHeads.build)
        request = ev.Request(stream_id, *self._head, body, more, upload.expect_continue, self._ext)  # type: ignore[call-arg]
        self.request_half = RequestTracker(request)
        self.phase = Phase.DISPATCHED
        self._first = first
        dispatcher.post(request, worker)
        if more:  # (the rest of the body, as the window allows)
            upload.flush()

    def cancel(self) -> None:
        """The client went away while the request path awaited the first event (no task to cancel)."""
        self._first = False
        self._requests.lost(self)

    def responding(self) -> None:
        """The status line went to the client."""
        self._to(Phase.RESPONDING)

    def done(self) -> None:
        """The whole response went to the client."""
        phase = self.phase
        # TRANSITIONS, inline (hot-path rule 7)
        if phase is not Phase.DISPATCHED and phase is not Phase.RESPONDING:
            self._illegal(Phase.DONE)
        self.phase = Phase.DONE

    def fail(self) -> None:
        """The client will get no (more) response: gone, refused, or cut short."""
        if self.phase is not Phase.FAILED:
            self._to(Phase.FAILED)

    def _to(self, phase: Phase) -> None:
        if phase not in TRANSITIONS[self.phase]:
            self._illegal(phase)
        self.phase = phase

    def _illegal(self, phase: Phase) -> None:
        raise IllegalTransition(f"stream {self.stream_id}: {self.phase.name} -> {phase.name}")

    def start_pump(self, write_continue: Any) -> None:
        if self.upload.needs_pump and self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run_pump(write_continue))

    async def next(self) -> Any:
        """The next worker event or ``Local`` marker for the handler."""
        if not self._inbox:
            self._return_credit()  # the consumer is idle: give back what it took
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()  # type: ignore[union-attr]  # (queue made it)

    def can_replay(self, item: Any) -> bool:
        if self.phase is not Phase.DISPATCHED or self.replays >= MAX_REPLAYS:
            return False
        if item is Local.WORKER_LOST:
            if not may_replay(len(self.lost_on)):
                return False
            held = self.upload.replayable or self.upload.whole is not None
            return held and (self._idempotent or self.undelivered)
        return type(item) is ev.Reset and item.code == ResetCode.REFUSED and self.upload.replayable

    def replay(self, worker: WorkerRecord) -> None:
        self.replays += 1
        self.dispatch(worker, False)

    def consumed(self, n: int) -> None:
        """``n`` response bytes reached the client socket (its write returned): credit them."""
        if self.recv is not None and self.worker is not None:
            credit = self.recv.consumed(n)
            if credit:
                self._dispatcher.post(ev.Credit(self.stream_id, credit), self.worker)

    def reset(self, code: ResetCode, reason: str) -> None:
        """Give up on the stream on the wire (we are the side that found the problem)."""
        if self.worker is not None:
            self._dispatcher.post(ev.Reset(self.stream_id, code, reason), self.worker)
            self._detach()

    def finish(self) -> None:
        """The handler is done with the stream; close it on the wire once the worker is."""
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        upload = self.upload
        if upload.has_body:
            upload.stop()
            upload.send = _no_send  # it names us (hot-path rule 4: tests/benchmarks/README.md)
        if self.phase is not Phase.DONE and self.phase is not Phase.FAILED:
            self._to(Phase.FAILED)
        self._first = False
        self.writer = None
        if self.worker is None:
            return
        half = self.request_half
        answered = self.response.state in (ResponseHalf.DONE, ResponseHalf.RESET)
        if half is not None and half.state is not RequestHalf.DISCONNECTED:
            # The body will not be forwarded, or nobody waits for the answer.
            if half.state is RequestHalf.RECEIVING or not answered:
                half.feed(ev.Disconnect(self.stream_id))
                self._dispatcher.post(ev.Disconnect(self.stream_id), self.worker)
        if answered:
            self._detach()

    # --------------------------------------------------- dispatcher side

    def on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is ev.Reset:
            self._on_reset(event)
            return
        self.upload.delivered()
        if kind is ev.Credit:
            self.upload.grant(event.bytes)
            return
        if kind is ev.EarlyHints:
            self._early_hints(event)
            return
        try:
            state = self.response.feed(event)
            n = len(event.body) if kind is ev.Response or kind is ev.Body else cost(event)
            if n:
                recv = self.recv
                if recv is not None:
                    recv.received(n, self.stream_id)
                elif state is not ResponseHalf.DONE:  # a whole response needs no window: one event
                    # cannot overrun a fresh one (the codec caps a payload at its slack)
                    dispatcher = self._dispatcher
                    recv = self.recv = ReceiveWindow(dispatcher.window_bytes, dispatcher.max_payload_bytes)
                    recv.received(n, self.stream_id)
        except ProtocolViolation as exc:
            self.on_violation(str(exc))
            return
        phase = self.phase
        if phase is Phase.DONE or phase is Phase.FAILED:
            self._linger(n, state)
        else:
            self._push(event)

    def _early_hints(self, event: ev.EarlyHints) -> None:
        """Written at once by the response's writer (a 103), outside the inbox: the response path
        awaits RESPONSE, and a hint is advisory. Dropped once the response started (a 103 after the
        status line is not HTTP) or the client is gone."""
        worker = self.worker
        if worker is None or "early-hints" not in worker.features:
            self.on_violation("EarlyHints: feature not agreed at WELCOME")
            return
        writer = self.writer
        started = self.phase is not Phase.DISPATCHED or self.response.state is not ResponseHalf.WAITING
        if writer is None or started:
            log.debug("stream %d: early hints after the response started: dropped", self.stream_id)
            return
        writer.early_hints(event.links)

    def _on_reset(self, event: ev.Reset) -> None:
        if self.response.state is not ResponseHalf.DONE:
            self.response.feed(event)
        self._detach()
        if self.phase not in (Phase.DONE, Phase.FAILED):
            self._push(event)

    def _linger(self, n: int, state: ResponseHalf) -> None:
        """The client is gone; the worker is still answering: discard, but keep it moving."""
        if n and self.worker is not None:
            self._dispatcher.post(ev.Credit(self.stream_id, n), self.worker)
        if state is ResponseHalf.DONE:
            self._detach()

    def on_violation(self, reason: str) -> None:
        self.reset(ResetCode.PROTOCOL_ERROR, reason)
        if self.phase not in (Phase.DONE, Phase.FAILED):
            self._push(Local.VIOLATION)

    def on_worker_lost(self) -> None:
        record = self.worker
        if record is not None:
            self.undelivered = self.stream_id in record.unsent or (record.said_bye and self.upload.replayable)
            if not self.undelivered:  # it may have run there (a REQUEST that never left proves nothing)
                self.lost_on += (record.worker_id,)
                if not may_replay(len(self.lost_on)) and self.phase is Phase.DISPATCHED:
                    path = self._head[3].decode("utf-8", "replace")
                    rid = str(self._ext.get("request_id", "-"))
                    log.warning(poison_message(self._head[0], path, rid, self.lost_on))
        self._detach()
        if self.phase not in (Phase.DONE, Phase.FAILED):
            self._push(Local.WORKER_BLOCKED if self._blocked_by(record) else Local.WORKER_LOST)

    def _blocked_by(self, record: WorkerRecord | None) -> bool:
        """Whether its worker was evicted (Rule 9b) with this request blocking its loop: 504, no replay.
        The others on it were waiting behind it, and are lost as with any lost worker (replayed once).
        With the blocking request unknown, every one of them."""
        if record is None or not record.evicted or self.undelivered:
            return False
        blocking = record.stall[0]
        return not blocking or blocking == self._ext.get("request_id")

    # ------------------------------------------------------------ helpers

    def _send_body(self, chunk: bytes, more: bool) -> None:
        if self.worker is None or self.request_half is None:
            return
        body = ev.Body(self.stream_id, chunk, more)
        self.request_half.feed(body)
        self._dispatcher.post(body, self.worker)

    async def _run_pump(self, write_continue: Any) -> None:
        try:
            await self.upload.pump(write_continue)
        except BodyTooLarge:
            self._fail_upload(Local.BODY_TOO_LARGE)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client left: the handler is cancelled and reports it
        except Exception:  # aiohttp's payload errors: a malformed chunked body etc.
            self._fail_upload(Local.BAD_BODY)

    def _fail_upload(self, marker: Local) -> None:
        self.upload.stop()
        self.reset(ResetCode.CANCELLED, marker.value)
        if self.phase not in (Phase.DONE, Phase.FAILED):
            self._push(marker)

    def _return_credit(self) -> None:
        recv = self.recv
        if recv is not None and recv.unreturned and self.worker is not None:
            self._dispatcher.post(ev.Credit(self.stream_id, recv.flush()), self.worker)

    def _detach(self) -> None:
        if self.worker is not None:
            self._dispatcher.close_stream(self)
            self.worker = None
            if self.upload.has_body:
                self.upload.hold()

    def _push(self, item: Any) -> None:
        if self._first:
            self._first = False  # only the first: the rest queue for whoever takes over
            self._requests.first_event(self, item)
            return
        self.queue(item)

    def queue(self, item: Any) -> None:
        """Put ``item`` in the inbox for ``next()`` (a handler's task taking over from ``on_first``)."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _no_send(chunk: bytes, more: bool) -> None:
    return None  # a finished stream sends no body
