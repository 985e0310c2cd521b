"""One WebSocket stream: the ASGI app's ``websocket.*`` receive/send over wire events.

Like ``HttpCycle``: the connection ``feed``s the front end's events
(WS_MESSAGE, WS_CLOSE, CREDIT, RESET) by direct calls -- no task or queue
hop per message -- and the cycle ``emit``s WS_ACCEPT / WS_MESSAGE / WS_CLOSE /
CREDIT / RESET (or RESPONSE / BODY for a denial) through an injected
callable. One task per connection runs the app; no zmq here.

State: the wire's ``WsTracker`` (CONNECTING -> OPEN | DENYING -> CLOSED) for
both directions, plus what the wire cannot know: whether the app has had its
``websocket.connect`` yet, and how the stream ended (``_ending``: who closed
it, with what code), which decides what ``receive()`` and ``send()`` do next.

* ``receive()``: ``websocket.connect`` first; then queued messages in order;
  then ``websocket.disconnect`` with the close code (1006 for a RESET or a
  lost front end). Credit for a message (len + 32, Rule 15) goes back as the
  app takes it, batched (half the window), and the rest once the app waits
  with nothing queued: at once without an ``IdleCredit``, else in its next
  sweep (``IDLE_CREDIT_DELAY_S``), so an echo does not cost a CREDIT per
  message each way.
* ``send()``: ``websocket.send`` waits while the send window is spent, so a
  slow client pauses the app. Once the connection went away under the app
  (client close, RESET, drain) sends raise ``ClientDisconnected``; sends the
  ASGI state machine forbids (accept twice, send before accept, anything
  after the app's close) raise ``RuntimeError``.
* The app's outcome: exception before accept -> RESET(APP_ERROR) (the front
  end answers 500); after accept -> WS_CLOSE(1011); returning before accept
  -> WS_CLOSE (the front end answers 403, as uvicorn does); returning after
  accept without a close -> WS_CLOSE(1000).
* Handoff (feature "handoff", ASGI extension ``zasgi.websocket.handoff``,
  PROTOCOL.md §8.1, Rules 21 and 23), tracked by ``Handoff``: the app opts in with
  ``"zasgi.websocket.handoff": True`` in its ``websocket.accept``. On drain
  (``offer_handoff``) ``receive()`` returns ``{"type": "zasgi.websocket.handoff"}``
  after the messages already queued; the app answers
  ``send({"type": "zasgi.websocket.handoff", "state": ...})``. Credit for what
  it consumed goes out first, then WS_HANDOFF(state); messages it never took
  are dropped here (the front end kept them and re-delivers them). A stream
  opened by WS_RESUME is OPEN on the wire at once: the app still gets
  ``websocket.connect``, its ``websocket.accept`` is swallowed (the client is
  connected), and the scope carries ``{"state": state}`` in the extension.
* Memory: a worker may hold 10,000 idle WebSockets, so nothing here
  preallocates -- the inbox deque and the denial sender exist only while
  needed, and the waits are ``Wakeup``s, not ``asyncio.Event``s.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Any

from wire import ProtocolViolation, ReceiveWindow, ResetCode, WsState, WsTracker, codec, cost
from wire import events as ev
from wire.scope import HANDOFF_EXTENSION, websocket_scope

from .response import ResponseSender
from .stream import ClientDisconnected, CreditGate, Emit, StreamSettings, Wakeup, checked_headers

log = logging.getLogger(__name__)

DENIAL_EXTENSION = "websocket.http.response"
ABNORMAL_CLOSURE = 1006  # RFC 6455: never sent, reported when the connection just went away
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
MAX_HANDOFF_STATE_BYTES = 64 * 1024  # encoded: it crosses the front end twice, in a header frame
# How long an idle app's leftover credit waits (IdleCredit). The front end is never blocked by it:
# credit goes back at once past half the window, so an idle app leaves the sender over half of it.
# Only the front end's copies of unconsumed messages (Rule 22) wait that long longer.
IDLE_CREDIT_DELAY_S = 0.05


class ClosedBy(Enum):
    APP = "app"  # websocket.close, a denial, or the app's return: further sends are a RuntimeError
    CONNECTION = "connection"  # client close, RESET, lost front end, drain: sends raise ClientDisconnected


class Handoff(Enum):
    """One WebSocket's part in the handoff extension."""

    OFF = "off"  # not agreed with the front end, or the app did not opt in
    RESUMED = "resumed"  # opened by WS_RESUME: the app's websocket.accept is still to come
    ARMED = "armed"  # the app opted in: a drain offers it the handoff
    OFFERED = "offered"  # draining: the handoff event is queued for (or taken by) the app
    HANDED_OFF = "handed off"  # WS_HANDOFF sent: the session goes on on another worker


class IdleCredit:
    """The credit idle WebSocket apps owe, sent for all of them in one sweep ``IDLE_CREDIT_DELAY_S`` later.

    Flushing at once whenever the app waits with nothing queued (Rule 17's
    "idle") made an echo cost a CREDIT per message: encoded here, decoded and
    routed by the front end. One per connection (StreamRouter); one timer for all
    its WebSockets, and only while one of them owes credit.
    """

    __slots__ = ("_loop", "_owing", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._owing: dict[WebSocketCycle, None] = {}  # (ordered: credit leaves in idle order)
        self._timer: asyncio.TimerHandle | None = None

    def owe(self, cycle: WebSocketCycle) -> None:
        self._owing[cycle] = None
        if self._timer is None:
            self._timer = self._loop.call_later(IDLE_CREDIT_DELAY_S, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        owing, self._owing = self._owing, {}
        for cycle in owing:
            cycle.flush_credit()


class WebSocketCycle:
    __slots__ = ("stream_id", "scope", "task", "_emit", "_settings", "_on_closed", "_draining", "_ws",
                 "_gate", "_recv", "_inbox", "_readable", "_greeted", "_ending", "_denial",
                 "_handoff", "_idle_credit")  # fmt: skip

    def __init__(
        self,
        opener: ev.WsConnect | ev.WsResume,
        *,
        emit: Emit,
        settings: StreamSettings,
        on_closed: Callable[[WebSocketCycle], None] | None = None,
        draining: Callable[[], bool] | None = None,
        idle_credit: IdleCredit | None = None,
    ) -> None:
        """``draining()`` says the worker drains: an app opting in then is offered the handoff at once.
        ``idle_credit``: where an idle app's leftover credit waits (None: it goes at once)."""
        resumed = type(opener) is ev.WsResume
        if isinstance(opener, ev.WsResume):
            connect = replace(opener.connect, stream_id=opener.stream_id)
        else:
            connect = opener
        self.stream_id = connect.stream_id
        self.scope = websocket_scope(connect, state=settings.state, handoff=settings.handoff)
        if not settings.ws_denial:
            del self.scope["extensions"][DENIAL_EXTENSION]
        if resumed:
            self.scope["extensions"][HANDOFF_EXTENSION] = {"state": _with_lists(opener.state)}  # type: ignore[union-attr]
        self.task: asyncio.Task[None] | None = None  # the task running the app (set by its owner)
        self._emit = emit
        self._settings = settings
        self._on_closed = on_closed
        self._draining = draining
        self._idle_credit = idle_credit
        self._handoff = Handoff.RESUMED if resumed else Handoff.OFF
        self._ws = WsTracker(resumed=resumed)
        self._gate = CreditGate(settings.response_window_bytes)
        self._recv = ReceiveWindow(settings.request_window_bytes, slack_bytes=settings.request_slack_bytes)
        self._inbox: deque[tuple[dict[str, Any], int]] | None = None  # only while messages wait
        self._readable = Wakeup()
        self._greeted = False  # websocket.connect handed to the app
        self._ending: tuple[ClosedBy, int, str] | None = None
        self._denial: ResponseSender | None = None  # only once the app starts a denial response

    @property
    def state(self) -> WsState:
        return self._ws.state

    @property
    def closed(self) -> bool:
        return self._ws.state is WsState.CLOSED

    @property
    def handoff(self) -> Handoff:
        return self._handoff

    # ------------------------------------------------------------ running the app

    async def run(self, app: Callable[..., Any]) -> None:
        """Run ``app`` for this stream; never raises except CancelledError."""
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.going_away():
                self.abort(ResetCode.CANCELLED, "worker stopped the WebSocket")
            raise
        except BaseException as exc:  # the app's failure is reported on the wire, not raised
            self._app_ended(exc)
        else:
            self._app_ended(None)

    def _app_ended(self, error: BaseException | None) -> None:
        if error is not None:
            gone = self._ending is not None and self._ending[0] is ClosedBy.CONNECTION
            if isinstance(error, ClientDisconnected) or (gone and isinstance(error, OSError)):
                log.debug("WebSocket %d: client went away: %s", self.stream_id, error)
            else:
                log.error("exception in ASGI application (WebSocket %s)", self.scope["path"], exc_info=error)
        state = self._ws.state
        if state is WsState.CLOSED:
            return
        if self._denial is not None:  # a denial response begun and not finished: 500 or abort
            self._denial.drop_pending()
            self._fail_app(error, "ASGI app returned without completing the denial response")
        elif state is WsState.OPEN:
            code, reason = 1000, ""
            if error is not None:
                code, reason = INTERNAL_ERROR, "internal error"
            elif self._handoff is Handoff.OFFERED:  # declined the handoff: the standard drain close
                code, reason = SERVICE_RESTART, "service restart"
            elif self._handoff is Handoff.RESUMED:
                log.error("ASGI app returned without accepting the resumed WebSocket; closing it")
            self._close(ClosedBy.APP, code, reason)
        elif error is not None:
            self._fail_app(error, "")
        else:
            log.error("ASGI app returned without accepting or closing the WebSocket; rejecting it")
            self._close(ClosedBy.APP, 1000, "")  # before accept: the front end answers 403

    def _fail_app(self, error: BaseException | None, why: str) -> None:
        if error is None:
            log.error(why)
        self.abort(ResetCode.APP_ERROR, why if error is None else f"app raised {type(error).__name__}")

    # ------------------------------------------------------------ from the front end

    def feed(self, event: Any) -> None:
        """Deliver one front-end event. Raises ProtocolViolation if it is illegal here."""
        kind = type(event)
        if kind is ev.WsMessage:
            self._on_message(event)
        elif kind is ev.Credit:
            self._gate.grant(event.bytes)
        elif kind is ev.WsClose:
            self._ws.feed(event)
            self._ended(ClosedBy.CONNECTION, event.code, event.reason)
        elif kind is ev.Reset:
            self.fail_locally(event.reason or "reset by the front end")
        else:
            raise ProtocolViolation(
                f"{kind.__name__} is not allowed on a WebSocket stream", stream_id=self.stream_id
            )

    def _on_message(self, event: ev.WsMessage) -> None:
        self._ws.feed(event)  # raises unless OPEN
        n = cost(event)
        self._recv.received(n, stream_id=self.stream_id)
        message: dict[str, Any]
        if event.text:
            try:
                message = {"type": "websocket.receive", "text": bytes(event.data).decode("utf-8")}
            except UnicodeDecodeError:
                raise ProtocolViolation("WS_MESSAGE text is not UTF-8", stream_id=self.stream_id) from None
        else:
            message = {"type": "websocket.receive", "bytes": bytes(event.data)}
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append((message, n))
        self._readable.set()

    def fail_locally(self, reason: str) -> None:
        """The stream is gone without a word to send (peer RESET, UNKNOWN_PEER, lost link)."""
        if self._denial is not None:
            self._denial.reset(ResetCode.CANCELLED, reason)
        self._ws.feed(ev.Reset(self.stream_id, ResetCode.CANCELLED, reason))
        self._ended(ClosedBy.CONNECTION, ABNORMAL_CLOSURE, "")

    def abort(self, code: int, reason: str) -> None:
        """Reset the stream from our side (app error, protocol error, shutdown)."""
        if self.closed:
            return
        if self._denial is not None:
            self._denial.reset(code, reason)
        self._ws.feed(ev.Reset(self.stream_id, code, reason))
        self._emit(ev.Reset(self.stream_id, code, reason))
        self._ended(ClosedBy.CONNECTION, ABNORMAL_CLOSURE, "")

    def going_away(self, code: int = SERVICE_RESTART, reason: str = "service restart") -> bool:
        """Close an open WebSocket from the worker's side (drain); the app sees a disconnect.

        Returns False (and does nothing) unless the WebSocket is OPEN.
        """
        if self._ws.state is not WsState.OPEN:
            return False
        self._close(ClosedBy.CONNECTION, code, reason)
        return True

    def offer_handoff(self) -> bool:
        """Drain: queue the handoff event for an app that opted in; False if it did not (or is gone)."""
        if self._handoff is not Handoff.ARMED or self._ws.state is not WsState.OPEN:
            return False
        self._handoff = Handoff.OFFERED
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(({"type": HANDOFF_EXTENSION}, 0))  # after the messages already queued
        self._readable.set()
        return True

    def _close(self, by: ClosedBy, code: int, reason: str) -> None:
        self._put(ev.WsClose(self.stream_id, code, reason))
        self._ended(by, code, reason)

    def _ended(self, by: ClosedBy, code: int, reason: str) -> None:
        if self._ending is None:
            self._ending = (by, code, reason)
        self._readable.set()
        self._gate.release()
        if self._on_closed is not None and self.closed:
            callback, self._on_closed = self._on_closed, None
            callback(self)

    # ------------------------------------------------------------ ASGI receive

    async def receive(self) -> dict[str, Any]:
        if not self._greeted:
            self._greeted = True
            return {"type": "websocket.connect"}
        while True:
            inbox = self._inbox
            if inbox:
                message, n = inbox.popleft()
                if not inbox:
                    self._inbox = None  # an idle WebSocket holds no deque
                self._credit(self._recv.consumed(n))
                return message
            ending = self._ending
            if ending is not None:
                return {"type": "websocket.disconnect", "code": ending[1], "reason": ending[2]}
            if self._recv.unreturned:  # idle: return everything consumed, now or in the next sweep
                if self._idle_credit is None:
                    self._credit(self._recv.flush())
                else:
                    self._idle_credit.owe(self)
            await self._readable.wait()

    def flush_credit(self) -> None:
        """Credit everything the app consumed (IdleCredit's sweep)."""
        self._credit(self._recv.flush())

    def _credit(self, n: int) -> None:
        if n > 0 and self._ws.state is WsState.OPEN:
            self._emit(ev.Credit(self.stream_id, n))

    # ------------------------------------------------------------ ASGI send

    async def send(self, message: dict[str, Any]) -> None:
        if not self._live():
            raise ClientDisconnected(f"WebSocket {self.stream_id}: the client went away")
        kind = message.get("type")
        if kind == "websocket.send":  # the one that repeats: no table, no extension check
            await self._send_message(message)
            return
        handler = _SENDERS.get(kind)  # type: ignore[arg-type]
        if handler is None or not self._agreed(str(kind)):  # (a key of _SENDERS: a str)
            raise RuntimeError(f"unexpected ASGI message type {kind!r} on a websocket connection")
        await handler(self, message)

    def _agreed(self, kind: str) -> bool:
        """Extensions' messages only when the front end agreed to their feature."""
        if kind.startswith(DENIAL_EXTENSION):
            return self._settings.ws_denial
        return kind != HANDOFF_EXTENSION or self._settings.handoff

    def _live(self) -> bool:
        ending = self._ending
        return ending is None or ending[0] is ClosedBy.APP

    def _expect(self, state: WsState, kind: str) -> None:
        if self._ws.state is not state or self._denial is not None:
            where = "after the WebSocket closed" if self.closed else f"with the WebSocket {self._phase()}"
            raise RuntimeError(f"{kind} sent {where}")

    def _phase(self) -> str:
        if self._denial is not None:
            return "denied (websocket.http.response started)"
        if self._handoff is Handoff.RESUMED:
            return "not accepted yet"
        return {WsState.CONNECTING: "not accepted yet", WsState.OPEN: "already accepted"}.get(
            self._ws.state, self._ws.state.value
        )

    async def _send_accept(self, message: dict[str, Any]) -> None:
        resumed = self._handoff is Handoff.RESUMED and self._ws.state is WsState.OPEN
        if not resumed:
            self._expect(WsState.CONNECTING, "websocket.accept")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and type(subprotocol) is not str:
            raise RuntimeError(f"websocket.accept: subprotocol must be a str or None, got {subprotocol!r}")
        headers = checked_headers(message.get("headers", ()))
        if not resumed:  # a resumed session's client is connected already: the accept is swallowed
            self._put(ev.WsAccept(self.stream_id, subprotocol, headers))
        opted_in = self._settings.handoff and message.get(HANDOFF_EXTENSION) is True
        self._handoff = Handoff.ARMED if opted_in else Handoff.OFF
        if opted_in and self._draining is not None and self._draining():
            self.offer_handoff()  # accepted while the worker drains: hand it off at once

    async def _send_message(self, message: dict[str, Any]) -> None:
        self._expect(WsState.OPEN, "websocket.send")
        if self._handoff is Handoff.RESUMED:
            raise RuntimeError("websocket.send sent with the WebSocket not accepted yet")
        text, data = message.get("text"), message.get("bytes")
        if type(text) is str and data is None:
            event = ev.WsMessage(self.stream_id, True, text.encode("utf-8"))
        elif isinstance(data, (bytes, bytearray, memoryview)) and text is None:
            event = ev.WsMessage(self.stream_id, False, bytes(data))  # ours: the app may reuse its buffer
        else:
            raise RuntimeError("websocket.send needs exactly one of 'bytes' (bytes) or 'text' (str)")
        if len(event.data) > self._settings.max_payload_bytes:
            raise RuntimeError(
                f"websocket.send: {len(event.data)} bytes is over the front end's limit of "
                f"{self._settings.max_payload_bytes} per message"
            )
        if not self._gate.open:
            await self._gate.wait(self._live)
            if not self._live():
                raise ClientDisconnected(f"WebSocket {self.stream_id}: the client went away")
            self._expect(WsState.OPEN, "websocket.send")  # another task may have closed it meanwhile
        self._gate.spend(cost(event))
        self._put(event)

    async def _send_close(self, message: dict[str, Any]) -> None:
        if self._ws.state is not WsState.OPEN:
            self._expect(WsState.CONNECTING, "websocket.close")
        code = message.get("code")
        code = 1000 if code is None else code
        reason = message.get("reason") or ""
        if type(code) is not int or not 1000 <= code <= 4999:
            raise RuntimeError(f"websocket.close: code must be an int 1000..4999, got {code!r}")
        if type(reason) is not str:
            raise RuntimeError(f"websocket.close: reason must be a str, got {reason!r}")
        self._close(ClosedBy.APP, code, reason)

    async def _send_denial_start(self, message: dict[str, Any]) -> None:
        if self._denial is None:
            self._expect(WsState.CONNECTING, "websocket.http.response.start")
            settings = replace(self._settings, trailers=False)  # the extension has no trailers
            self._denial = ResponseSender(
                self.stream_id, emit=self._put, gate=self._gate, settings=settings, live=self._live,
                on_done=self._denied, prefix="websocket.http.response",
            )  # fmt: skip
        await self._denial.start(message)

    async def _send_denial_body(self, message: dict[str, Any]) -> None:
        if self._denial is None:
            raise RuntimeError("websocket.http.response.body sent before websocket.http.response.start")
        await self._denial.body(message)

    def _denied(self) -> None:
        self._ended(ClosedBy.APP, 1000, "")

    async def _send_handoff(self, message: dict[str, Any]) -> None:
        if self._handoff is not Handoff.OFFERED or self._ws.state is not WsState.OPEN:
            where = "after the WebSocket closed" if self.closed else "before receive() gave the handoff event"
            raise RuntimeError(f"{HANDOFF_EXTENSION} sent {where}")
        state = message.get("state")
        problem = _state_problem(state)
        if problem is not None:
            log.error("WebSocket %s: handoff state %s; closing with 1011", self.scope["path"], problem)
            self._close(ClosedBy.APP, INTERNAL_ERROR, "internal error")
            return
        self._handoff = Handoff.HANDED_OFF
        # Rule 21: credit for every message the app took, then WS_HANDOFF, in one batch. The ones
        # it never took are dropped here: the front end holds them and re-delivers them.
        if self._inbox:
            log.debug("WebSocket %d: handed off with %d message(s) unread: the front end re-delivers them",
                      self.stream_id, len(self._inbox))  # fmt: skip
        self._inbox = None
        self._credit(self._recv.flush())
        self._put(ev.WsHandoff(self.stream_id, state))
        self._ended(ClosedBy.CONNECTION, SERVICE_RESTART, "handed off")

    def _put(self, event: Any) -> None:
        try:
            self._ws.feed(event)
        except ProtocolViolation as exc:  # the checks above should make this unreachable
            raise RuntimeError(f"illegal WebSocket event: {exc}") from None
        self._emit(event)


_SENDERS: dict[str, Callable[[WebSocketCycle, dict[str, Any]], Any]] = {
    "websocket.accept": WebSocketCycle._send_accept,
    "websocket.send": WebSocketCycle._send_message,
    "websocket.close": WebSocketCycle._send_close,
    "websocket.http.response.start": WebSocketCycle._send_denial_start,
    "websocket.http.response.body": WebSocketCycle._send_denial_body,
    HANDOFF_EXTENSION: WebSocketCycle._send_handoff,
}


def _state_problem(state: Any) -> str | None:
    """Why ``state`` cannot travel in WS_HANDOFF (PROTOCOL Rule 4 types, the size limit), or None."""
    try:
        packed = codec.pack_value(state)
        codec.unpack_value(packed)  # as the codec reads it
    except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError...
        return f"is not msgpack-able ({type(exc).__name__}: {exc})"
    if len(packed) > MAX_HANDOFF_STATE_BYTES:
        return f"is {len(packed)} bytes encoded, over the limit of {MAX_HANDOFF_STATE_BYTES}"
    return None


def _with_lists(state: Any) -> Any:
    """The resumed state as the app gave it: msgpack arrays as lists (the codec decodes tuples)."""
    return codec.unpack_value(codec.pack_value(state), lists=True)
