"""Adaptive admission on a worker connection (admission.py + connection.py) against a scripted front end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appserver.admission import HOLD_MAX_S, LAGGING_S, Admission, Hold, hold
from appserver.connection import FrontendConnection
from appserver.limiter import LimiterSettings
from wire import events as ev
from wire.channel import BATCH_MAX_EVENTS, STALE_BATCH_S

from .scripted import Factory, ScriptedFrontend, echo_path_app, handshake, request

FEATURES = ("http", "trailers", "limit")


@pytest.fixture
async def admission() -> AsyncIterator[Admission]:
    """Adaptive admission starting at a limit of 10 (floor 4), ticking on the test's loop."""
    running = Admission(LimiterSettings(floor=4, ceiling=100, initial=10))
    running.start()
    yield running
    running.stop()


async def welcomed(fe: ScriptedFrontend, conn: FrontendConnection) -> ev.Hello:
    """The handshake with feature "limit"; the first LIMIT (10) comes before any stream."""
    hello = await handshake(fe, conn, features=FEATURES)
    assert await fe.expect(ev.Limit) == ev.Limit(0, 10)  # before any stream: the front end waits for it
    return hello


async def slow_body_app(scope: Any, receive: Any, send: Any) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_limit_goes_out_with_the_welcome_and_bodies_still_arriving_add_to_it(
    fe: ScriptedFrontend, connect: Factory, admission: Admission
) -> None:
    conn = connect(slow_body_app, capacity=100, admission=admission)
    assert "limit" in (await welcomed(fe, conn)).features
    upload = replace(request(1), method="POST", body=b"x", more_body=True)
    fe.send(upload)
    assert (await fe.until(ev.Limit))[-1] == ev.Limit(0, 11)  # a body still arriving does not count
    fe.send(ev.Body(1, b"y", False))
    assert (await fe.until(ev.Limit))[-1] == ev.Limit(0, 10)


async def test_no_limit_feature_without_admission_or_without_the_front_end_s_agreement(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    conn = connect()
    assert "limit" not in (await handshake(fe, conn, features=FEATURES)).features
    admission = Admission(LimiterSettings())
    try:
        other = connect(admission=admission)
        admission.start()
        await fe.expect(ev.Hello)
        fe.welcome(features=("http",))  # the front end does not agree: no LIMIT, ever
        await asyncio.wait_for(other.welcomed.wait(), 5)
        fe.send(request(1))
        events = await fe.until(ev.Response)
        assert not any(type(e) is ev.Limit for e in events)
        assert not other.reports_limit
    finally:
        admission.stop()


def test_answers_are_held_for_a_front_end_s_part_up_to_half_the_limit() -> None:
    assert hold(16, 16, 0.0) == (8, HOLD_MAX_S, False)  # one front end: half its part
    assert hold(8, 16, 0.0) == (8, HOLD_MAX_S, False)  # one of two: all of it (the other's run meanwhile)
    assert hold(12, 16, 0.0).events == 8 and hold(5, 16, 0.0).events == 5
    assert hold(3, 3, 0.0).events == 1 and hold(1, 1, 0.0).events == 1  # never zero: every answer leaves
    assert hold(10_000, 10_000, 0.0).events == BATCH_MAX_EVENTS
    # past the end of the loop's iteration only while the loop lags (the app keeps it busy)
    assert hold(8, 16, LAGGING_S).across and not hold(8, 16, LAGGING_S * 0.9).across


async def test_a_front_end_s_part_counts_the_requests_another_ran_within_one_iteration(
    fe: ScriptedFrontend, connect: Factory, admission: Admission, zmq_ctx: Any, tmp_path: Path
) -> None:
    """Requests that start and end in one loop iteration (a CPU-bound app) are never running when the
    limit is split: they still take their front end's part, or every front end gets the whole limit."""
    other_fe = ScriptedFrontend(zmq_ctx, f"ipc://{tmp_path}/fe2.sock")
    other = FrontendConnection(ctx=zmq_ctx, endpoint=other_fe.endpoint, worker_id="host-1-abc",
                               app=echo_path_app, state={}, info={"app": "test:app"}, capacity=100,
                               ws_capacity=0, window_bytes=65536, reconnect_max_s=0.5,
                               admission=admission)  # fmt: skip
    try:
        conn = connect(capacity=100, admission=admission)
        await welcomed(fe, conn)
        other.start()
        await welcomed(other_fe, other)  # nothing runs on the first: all of it
        fe.send(*(request(2 * i + 1) for i in range(6)))  # one message: all six open, run and end at once
        events = await fe.until(ev.Response)
        assert (await other_fe.until(ev.Limit))[-1] == ev.Limit(0, 5)  # an even part, not 10 - 0
        assert not any(type(e) is ev.Limit and e.limit != 10 for e in events)
    finally:
        other.close()
        other_fe.close()


async def test_the_reported_limit_sets_how_long_answers_are_held(
    fe: ScriptedFrontend, connect: Factory, admission: Admission
) -> None:
    """The channel to a front end holds answers by the limit it was told (admission.hold); without
    adaptive admission it keeps the channel's defaults."""
    conn = connect(capacity=100, admission=admission)
    await welcomed(fe, conn)
    assert (conn._channel.hold_events, conn._channel.hold_s) == (5, HOLD_MAX_S)
    plain = connect()
    await handshake(fe, plain, features=FEATURES)
    assert (plain._channel.hold_events, plain._channel.hold_s) == (BATCH_MAX_EVENTS, STALE_BATCH_S)
    assert plain._channel.hold_while is None


async def test_answers_wait_past_the_iteration_only_while_the_loop_lags_and_requests_run(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    conn = connect(slow_body_app, capacity=100)
    await handshake(fe, conn, features=FEATURES)
    conn.report_limit(10, Hold(5, HOLD_MAX_S, True))
    hold_while = conn._channel.hold_while
    assert hold_while is not None and not hold_while()  # nothing runs: an answer leaves at once
    fe.send(replace(request(1), method="POST", body=b"x", more_body=True))
    for _ in range(500):  # its stream opens as the worker reads the request (bounded: 5 s)
        if hold_while():
            break
        await asyncio.sleep(0.01)
    assert hold_while()
    conn.report_limit(10, Hold(5, HOLD_MAX_S, False))  # the loop no longer lags
    assert conn._channel.hold_while is None


async def test_bodies_still_arriving_raise_the_limit_but_not_the_hold(
    fe: ScriptedFrontend, connect: Factory, admission: Admission
) -> None:
    """Slow uploads answer nothing soon: answers are held by what runs, not by the raised LIMIT."""
    conn = connect(slow_body_app, capacity=100, admission=admission)
    await welcomed(fe, conn)
    for stream in (1, 3):
        fe.send(replace(request(stream), method="POST", body=b"x", more_body=True))
    assert (await fe.until(ev.Limit))[-1] in (ev.Limit(0, 11), ev.Limit(0, 12))
    if conn._reported != 12:
        assert (await fe.until(ev.Limit))[-1] == ev.Limit(0, 12)
    assert conn._channel.hold_events == 5  # by its LIMIT of 12, 6
