"""Stream state machines (PROTOCOL.md §6), shared by both sides.

Both ends feed every stream event they send or receive through the stream's
tracker; the tracker moves along its transition table or raises
``ProtocolViolation`` and stays where it was (h11: "illegal transitions raise
an error and nothing happens"). The tables are the spec's tables, as data.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from . import events as ev
from .errors import ProtocolViolation


class _State(Enum):
    """An Enum hashed by identity: the transition tables are dicts keyed by state, and Enum's
    own ``__hash__`` is a Python-level call on every lookup (members are singletons)."""

    __hash__ = object.__hash__


class RequestHalf(_State):
    RECEIVING = "receiving"
    DONE = "done"
    DISCONNECTED = "disconnected"


class ResponseHalf(_State):
    WAITING = "waiting"
    SENDING = "sending"
    TRAILERS = "trailers"
    DONE = "done"
    RESET = "reset"


class WsState(_State):
    CONNECTING = "connecting"
    OPEN = "open"
    DENYING = "denying"
    CLOSED = "closed"


class WorkerState(_State):
    """A worker as a front end sees it (PROTOCOL.md §4.3)."""

    JOINING = "joining"
    READY = "ready"
    BUSY = "busy"  # alive (its pulse says so) but its event loop is stalled: nothing new until it runs
    DRAINING = "draining"
    LINGERING = "lingering"  # draining, with only WebSocket sessions and started responses left
    GONE = "gone"


WORKER_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.JOINING: frozenset({WorkerState.READY, WorkerState.GONE}),
    WorkerState.READY: frozenset({WorkerState.BUSY, WorkerState.DRAINING, WorkerState.GONE}),
    WorkerState.BUSY: frozenset({WorkerState.READY, WorkerState.DRAINING, WorkerState.GONE}),
    WorkerState.DRAINING: frozenset({WorkerState.LINGERING, WorkerState.GONE}),
    WorkerState.LINGERING: frozenset({WorkerState.GONE}),
    WorkerState.GONE: frozenset(),
}

# Symbols: event kinds refined by the flags that decide the next state.
BODY_MORE, BODY_LAST = "body-more", "body-last"
RESPONSE_MORE, RESPONSE_LAST, RESPONSE_LAST_TRAILERS = "resp-more", "resp-last", "resp-trailers"
TRAILERS_MORE, TRAILERS_LAST = "trailers-more", "trailers-last"
PATHSEND, RESET = "pathsend", "reset"

_RESPONSE_TABLE: dict[tuple[ResponseHalf, str], ResponseHalf] = {
    (ResponseHalf.WAITING, RESPONSE_MORE): ResponseHalf.SENDING,
    (ResponseHalf.WAITING, RESPONSE_LAST): ResponseHalf.DONE,
    (ResponseHalf.WAITING, RESPONSE_LAST_TRAILERS): ResponseHalf.TRAILERS,
    (ResponseHalf.SENDING, BODY_MORE): ResponseHalf.SENDING,
    (ResponseHalf.SENDING, BODY_LAST): ResponseHalf.DONE,  # or TRAILERS, see below
    (ResponseHalf.SENDING, PATHSEND): ResponseHalf.DONE,  # or TRAILERS
    (ResponseHalf.TRAILERS, TRAILERS_MORE): ResponseHalf.TRAILERS,
    (ResponseHalf.TRAILERS, TRAILERS_LAST): ResponseHalf.DONE,
}

_REQUEST_TABLE: dict[tuple[RequestHalf, str], RequestHalf] = {
    (RequestHalf.RECEIVING, BODY_MORE): RequestHalf.RECEIVING,
    (RequestHalf.RECEIVING, BODY_LAST): RequestHalf.DONE,
}


def _response_symbol(event: Any) -> str:
    kind = type(event)
    if kind is ev.Response:
        if event.more_body:
            return RESPONSE_MORE
        return RESPONSE_LAST_TRAILERS if event.trailers else RESPONSE_LAST
    if kind is ev.Body:
        return BODY_MORE if event.more_body else BODY_LAST
    if kind is ev.Trailers:
        return TRAILERS_MORE if event.more_trailers else TRAILERS_LAST
    if kind is ev.Pathsend:
        return PATHSEND
    raise ProtocolViolation(f"{kind.__name__} is not a response event", stream_id=event.stream_id)


# (hot-path rule 1: tests/benchmarks/README.md)
_WAITING, _SENDING, _TRAILERS, _DONE, _RESET = ResponseHalf
_RECEIVING, _REQUEST_DONE, _DISCONNECTED = RequestHalf


class ResponseTracker:
    """The response half of one HTTP stream (also a WebSocket denial response)."""

    __slots__ = ("state", "trailers")

    def __init__(self) -> None:
        self.state = _WAITING
        self.trailers = False

    def feed(self, event: Any) -> ResponseHalf:
        kind = type(event)
        if kind is ev.Response and self.state is _WAITING:  # the common first event
            self.trailers = event.trailers
            if event.more_body:
                self.state = _SENDING
            else:
                self.state = _TRAILERS if event.trailers else _DONE
            return self.state
        if kind is ev.Reset:
            # After DONE a RESET only closes the request half (the app will not read
            # the rest of the body); the response stays complete.
            if self.state is not _DONE:
                self.state = _RESET
            return self.state
        symbol = _response_symbol(event)
        new = _RESPONSE_TABLE.get((self.state, symbol))
        if new is None:
            raise ProtocolViolation(
                f"{type(event).__name__} not allowed with the response {self.state.value}",
                stream_id=event.stream_id,
            )
        if type(event) is ev.Response:
            self.trailers = event.trailers
        elif new is _DONE and self.trailers and self.state is _SENDING:
            new = _TRAILERS
        self.state = new
        return new


class RequestTracker:
    """The request half of one HTTP stream: REQUEST opened it; BODY* and DISCONNECT follow."""

    __slots__ = ("state",)

    def __init__(self, first: ev.Request) -> None:
        self.state = _RECEIVING if first.more_body else _REQUEST_DONE

    def feed(self, event: Any) -> RequestHalf:
        kind = type(event)
        if kind is ev.Disconnect:
            self.state = _DISCONNECTED
            return self.state
        symbol = (BODY_MORE if event.more_body else BODY_LAST) if kind is ev.Body else kind.__name__
        new = _REQUEST_TABLE.get((self.state, symbol))
        if new is None:
            raise ProtocolViolation(
                f"{kind.__name__} not allowed with the request {self.state.value}",
                stream_id=event.stream_id,
            )
        self.state = new
        return new


_WS_TABLE: dict[tuple[WsState, type], WsState] = {
    (WsState.CONNECTING, ev.WsAccept): WsState.OPEN,
    (WsState.CONNECTING, ev.WsClose): WsState.CLOSED,
    (WsState.CONNECTING, ev.Response): WsState.DENYING,
    (WsState.OPEN, ev.WsMessage): WsState.OPEN,
    (WsState.OPEN, ev.WsClose): WsState.CLOSED,
    (WsState.OPEN, ev.WsHandoff): WsState.CLOSED,
}


class WsTracker:
    """One WebSocket stream; a denial response is delegated to a ResponseTracker.

    ``resumed``: the stream was opened by WS_RESUME (feature "handoff"), so it is
    OPEN at once -- the client's handshake happened on the stream it replaces.
    """

    __slots__ = ("state", "denial")

    def __init__(self, *, resumed: bool = False) -> None:
        self.state = WsState.OPEN if resumed else WsState.CONNECTING
        self.denial: ResponseTracker | None = None

    def feed(self, event: Any) -> WsState:
        kind = type(event)
        if kind is ev.Reset:
            self.state = WsState.CLOSED
            return self.state
        if self.state is WsState.DENYING:
            assert self.denial is not None
            if self.denial.feed(event) is ResponseHalf.DONE:
                self.state = WsState.CLOSED
            return self.state
        new = _WS_TABLE.get((self.state, kind))
        if new is None:
            raise ProtocolViolation(
                f"{kind.__name__} not allowed on a WebSocket {self.state.value}",
                stream_id=event.stream_id,
            )
        if new is WsState.DENYING:
            self.denial = ResponseTracker()
            if self.denial.feed(event) is ResponseHalf.DONE:
                new = WsState.CLOSED
        self.state = new
        return new
