"""The app server's per-request hot path: what keeps it cheap must keep it correct.

* A request leaves no cyclic garbage (a reference cycle per request cost ~3.5 µs
  of garbage collection per request before the send side was folded into HttpCycle).
* The response's usual state moves skip the tracker's table and must land where it would.
* The REQUEST decode fast path (wire/codec.py ``_request``) decodes exactly what the
  schema-driven path does, and anything unusual goes the general way, errors included.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import msgpack
import pytest

from appserver.response import ResponseSender
from appserver.routing import StreamRouter
from appserver.stream import CreditGate, EndOfTick, StreamSettings
from wire import ResponseTracker, codec
from wire import events as ev
from wire.scope import http_scope, websocket_scope

from .helpers import until

HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
SETTINGS = StreamSettings(request_window_bytes=1 << 16, response_window_bytes=1 << 16)


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"hi"})


def request(sid: int, **fields: Any) -> ev.Request:
    base: dict[str, Any] = dict(
        method="GET", scheme="http", http_version="1.1", raw_path=b"/", query_string=b"", root_path="",
        headers=((b"Host", b"x"),), client=("127.0.0.1", 5555), server=("127.0.0.1", 8000),
        ext={"request_id": f"r{sid}"},
    )  # fmt: skip
    base.update(fields)
    return ev.Request(sid, **base)


async def test_a_request_leaves_no_cyclic_garbage() -> None:
    emitted: list[Any] = []
    router = StreamRouter(app=hello, post=emitted.append, endpoint="test", capacity=100, ws_capacity=0)
    router.welcomed(
        StreamSettings(request_window_bytes=1 << 16, response_window_bytes=1 << 16), websocket=False
    )
    for sid in (1, 2):  # warm up: first-call caches are not per-request garbage
        router.on_event(request(sid))
    await until(lambda: not router.http_tasks and router.open_streams == 0)
    gc.collect()
    gc.disable()
    try:
        for sid in range(3, 53):
            router.on_event(request(sid))
        await until(lambda: not router.http_tasks and router.open_streams == 0)
        assert len(emitted) == 52 and all(type(e) is ev.Response for e in emitted)
        assert gc.collect() == 0
    finally:
        gc.enable()


def _decoded(raw: list[Any], *frames: bytes) -> Any:
    (event,) = codec.decode([msgpack.packb([raw], use_bin_type=True), *frames])
    return event


@pytest.mark.parametrize(
    "event",
    [
        request(1),
        request(2, method="POST", body=b"abc", more_body=True, expect_continue=True),
        request(3, client=None, server=None, headers=(), ext={}),
        request(
            4, raw_path=b"/a%20b", query_string=b"q=1", root_path="/api", ext={"tls": {"tls_version": 772}}
        ),
    ],
    ids=["get", "post", "bare", "tls"],
)
def test_fast_path_decodes_what_was_encoded(event: ev.Request) -> None:
    assert codec.decode(codec.encode([event])) == [event]


@pytest.mark.parametrize(
    "change",
    [
        {11: 1},  # a body by frame reference goes the general way (and frame 1 is missing here)
        {8: ((b"a", "b"),)},  # a str header value
        {8: ((b"a",),)},  # a header that is not a pair
        {9: ("h", "80")},  # a port that is not an int
        {12: 0},  # more_body not a bool
        {14: []},  # ext not a map
        {3: None},  # scheme missing
    ],
)
def test_anything_unusual_takes_the_general_path_and_its_error(change: dict[int, Any]) -> None:
    raw = codec._packable(request(7), [], codec.INLINE_MAX_BYTES)
    for index, value in change.items():
        raw[index] = value
    event = _decoded(raw)
    assert type(event) is ev.Invalid and event.stream_id == 7
    assert event.reason.startswith("Request: ")


def test_extra_trailing_fields_still_decode_through_the_general_path() -> None:
    raw = [*codec._packable(request(8), [], codec.INLINE_MAX_BYTES), "a field from a later minor version"]
    assert _decoded(raw) == request(8)


def test_a_large_body_in_its_own_frame_still_decodes() -> None:
    event = request(9, method="PUT", body=b"x" * (codec.INLINE_MAX_BYTES + 1))
    assert codec.decode(codec.encode([event])) == [event]


async def test_end_of_tick_runs_every_deferred_callback_once_in_order() -> None:
    tick = EndOfTick(asyncio.get_running_loop())
    ran: list[int] = []

    def boom() -> None:
        raise ValueError("logged, and the others still run")

    tick.defer(lambda: ran.append(1))
    tick.defer(boom)
    tick.defer(lambda: ran.append(2))
    assert ran == []  # nothing runs before the current callback yields
    await until(lambda: len(ran) == 2)
    assert ran == [1, 2]
    tick.defer(lambda: ran.append(3))  # a new tick schedules anew
    await until(lambda: len(ran) == 3)


@pytest.mark.parametrize("more", [False, True], ids=["last", "more"])
@pytest.mark.parametrize("trailers", [False, True], ids=["", "trailers"])
@pytest.mark.parametrize("body_more", [None, False, True], ids=["", "body-last", "body-more"])
async def test_out_moves_the_response_as_its_tracker_would(
    more: bool, trailers: bool, body_more: bool | None
) -> None:
    """``ResponseSide._out`` sets the state of RESPONSE-from-WAITING and BODY-while-SENDING itself."""
    emitted: list[Any] = []
    sender = ResponseSender(1, emit=emitted.append, gate=CreditGate(1 << 20), settings=SETTINGS,
                            live=lambda: True, on_done=lambda: None)  # fmt: skip
    tracker = ResponseTracker()
    sender._pending_start = (200, (), trailers)
    sender._out(b"x", more)
    if more and body_more is not None:
        sender._out(b"y", body_more)
    for event in emitted:
        tracker.feed(event)
    assert (sender._tracker.state, sender._tracker.trailers) == (tracker.state, tracker.trailers)


def test_http_scope_spells_out_the_fields_websocket_scope_shares() -> None:
    """``http_scope`` writes ``_common``'s fields out in one literal: they must stay the same."""
    for fields in ({}, {"raw_path": b"/a%20b", "root_path": "/api", "client": None, "server": None}):
        req = request(1, **fields, ext={"tls": {"tls_version": 772}})
        ws = ev.WsConnect(1, req.scheme, req.http_version, req.raw_path, req.query_string, req.root_path,
                          req.headers, req.client, req.server, (), req.ext)  # fmt: skip
        state = {"db": object()}
        http, common = http_scope(req, state=state), websocket_scope(ws, state=state)
        for key in ("type", "method", "subprotocols"):
            http.pop(key, None), common.pop(key, None)
        http["extensions"].pop("http.response.trailers"), http["extensions"].pop("http.response.pathsend")
        common["extensions"].pop("websocket.http.response")
        assert http == common
