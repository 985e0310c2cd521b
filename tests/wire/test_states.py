"""Stream state machines: the spec's tables, legal and illegal moves."""

from __future__ import annotations

import pytest

from wire import events as ev
from wire.errors import ProtocolViolation
from wire.states import (
    WORKER_TRANSITIONS,
    RequestHalf,
    RequestTracker,
    ResponseHalf,
    ResponseTracker,
    WorkerState,
    WsState,
    WsTracker,
)  # fmt: skip

S = 5
START_MORE = ev.Response(S, 200, (), b"", True, False)
START_LAST = ev.Response(S, 200, (), b"x", False, False)
START_TRAILERS_MORE = ev.Response(S, 200, (), b"", True, True)
START_TRAILERS_LAST = ev.Response(S, 200, (), b"", False, True)
BODY_MORE = ev.Body(S, b"x", True)
BODY_LAST = ev.Body(S, b"", False)
TRAILERS_LAST = ev.Trailers(S, ((b"a", b"b"),), False)
TRAILERS_MORE = ev.Trailers(S, (), True)
PATHSEND = ev.Pathsend(S, "/f")
RESET = ev.Reset(S, 2, "")


def _run(events: list[ev.Event]) -> ResponseTracker:
    tracker = ResponseTracker()
    for event in events:
        tracker.feed(event)
    return tracker


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([START_LAST], ResponseHalf.DONE),
        ([START_MORE, BODY_MORE, BODY_MORE, BODY_LAST], ResponseHalf.DONE),
        ([START_MORE, PATHSEND], ResponseHalf.DONE),
        ([START_TRAILERS_MORE, BODY_LAST, TRAILERS_MORE, TRAILERS_LAST], ResponseHalf.DONE),
        ([START_TRAILERS_MORE, BODY_LAST], ResponseHalf.TRAILERS),
        ([START_TRAILERS_MORE, PATHSEND, TRAILERS_LAST], ResponseHalf.DONE),
        ([START_TRAILERS_LAST, TRAILERS_LAST], ResponseHalf.DONE),
        ([RESET], ResponseHalf.RESET),
        ([START_MORE, BODY_MORE, RESET], ResponseHalf.RESET),
        ([START_LAST, RESET], ResponseHalf.DONE),  # closes only the request half
    ],
)
def test_legal_response_sequences(events: list[ev.Event], final: ResponseHalf) -> None:
    assert _run(events).state is final


@pytest.mark.parametrize(
    ("before", "illegal"),
    [
        ([], BODY_MORE),
        ([], TRAILERS_LAST),
        ([], PATHSEND),
        ([START_MORE], START_MORE),
        ([START_LAST], BODY_LAST),
        ([START_MORE, BODY_LAST], BODY_MORE),
        ([START_MORE], TRAILERS_LAST),  # trailers not announced
        ([START_TRAILERS_LAST], BODY_MORE),
        ([], ev.Credit(S, 1)),
    ],
)
def test_illegal_response_event_raises_and_changes_nothing(before: list[ev.Event], illegal: ev.Event) -> None:
    tracker = _run(before)
    state = tracker.state
    with pytest.raises(ProtocolViolation) as info:
        tracker.feed(illegal)
    assert tracker.state is state
    assert info.value.stream_id == S


def test_request_half() -> None:
    tracker = RequestTracker(ev.Request(S, "POST", "http", "1.1", b"/", b"", "", (), None, None, b"a", True))
    assert tracker.state is RequestHalf.RECEIVING
    assert tracker.feed(ev.Body(S, b"b", True)) is RequestHalf.RECEIVING
    assert tracker.feed(ev.Body(S, b"", False)) is RequestHalf.DONE
    with pytest.raises(ProtocolViolation):
        tracker.feed(ev.Body(S, b"late", False))
    assert tracker.state is RequestHalf.DONE
    assert tracker.feed(ev.Disconnect(S)) is RequestHalf.DISCONNECTED


def test_request_without_body_is_done_at_once() -> None:
    tracker = RequestTracker(ev.Request(S, "GET", "http", "1.1", b"/", b"", "", (), None, None))
    assert tracker.state is RequestHalf.DONE


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([ev.WsAccept(S)], WsState.OPEN),
        ([ev.WsAccept(S), ev.WsMessage(S, True, b"x"), ev.WsClose(S, 1000, "")], WsState.CLOSED),
        ([ev.WsClose(S, 1000, "")], WsState.CLOSED),
        ([ev.Response(S, 403, (), b"no", True, False)], WsState.DENYING),
        ([ev.Response(S, 403, (), b"no", True, False), ev.Body(S, b"", False)], WsState.CLOSED),
        ([ev.Response(S, 403, (), b"no", False, False)], WsState.CLOSED),
        ([ev.WsAccept(S), ev.WsHandoff(S, {"a": 1})], WsState.CLOSED),
        ([ev.WsAccept(S), RESET], WsState.CLOSED),
    ],
)
def test_websocket_sequences(events: list[ev.Event], final: WsState) -> None:
    tracker = WsTracker()
    for event in events:
        tracker.feed(event)
    assert tracker.state is final


@pytest.mark.parametrize(
    ("before", "illegal"),
    [
        ([], ev.WsMessage(S, True, b"x")),
        ([ev.WsAccept(S)], ev.WsAccept(S)),
        ([ev.WsAccept(S)], ev.Response(S, 200, (), b"", False, False)),
        ([], ev.WsHandoff(S)),
        ([ev.Response(S, 403, (), b"", True, False)], ev.WsAccept(S)),
    ],
)
def test_illegal_websocket_events(before: list[ev.Event], illegal: ev.Event) -> None:
    tracker = WsTracker()
    for event in before:
        tracker.feed(event)
    state = tracker.state
    with pytest.raises(ProtocolViolation):
        tracker.feed(illegal)
    assert tracker.state is state


def test_resumed_websocket_starts_open() -> None:
    assert WsTracker(resumed=True).state is WsState.OPEN


def test_worker_transitions_end_in_gone() -> None:
    assert WORKER_TRANSITIONS[WorkerState.GONE] == frozenset()
    for state, nexts in WORKER_TRANSITIONS.items():
        assert state is WorkerState.GONE or WorkerState.GONE in nexts
