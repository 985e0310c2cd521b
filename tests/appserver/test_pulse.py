"""The worker's pulse thread (PROTOCOL Rule 9a, 9b): PULSE while the loop is blocked, the request on it,
one warning naming the blocking line, the stall's length once the loop runs, EVICT -> exit 5.

A real ROUTER plays the front end; the loop is blocked with time.sleep, the mistake itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import zmq

import wire
from appserver.loopclock import LoopClock
from appserver.pulse import EXIT_EVICTED, Pulse, PulseTarget, format_blocking_stack
from wire import events as ev

pytestmark = pytest.mark.timeout(30)

INTERVAL_S = 0.2  # heartbeat interval: busy from 0.1 s stalled


class FakeCycle:
    def __init__(self) -> None:
        self.scope = {"method": "GET", "path": "/report"}
        self.request_id = "r9"
        self.task: Any = None


class FakeConnection:
    def __init__(self, endpoint: str) -> None:
        self.pulse_target: PulseTarget | None = PulseTarget(endpoint, b"w/1", INTERVAL_S)
        self.cycle = FakeCycle()

    def cycle_of(self, task: Any) -> Any:
        return self.cycle if task is self.cycle.task else None


def drain(router: zmq.Socket[Any]) -> list[tuple[bytes, Any]]:
    got = []
    while True:
        try:
            peer, *frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return got
        got += [(peer, e) for e in wire.decode(frames)]


@pytest.fixture
async def rig(zmq_ctx: Any) -> Any:
    router = zmq_ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    connection = FakeConnection(f"tcp://127.0.0.1:{port}")
    clock = LoopClock()
    clock.start()
    exits: list[int] = []
    pulse = Pulse(zmq_ctx, clock, [connection], worker_id="w", warn_s=0.3, exit=exits.append)
    pulse.start()
    yield router, connection, exits
    pulse.stop()
    clock.stop()
    router.close(linger=0)


def blocking_handler(seconds: float) -> None:
    time.sleep(seconds)  # the line the warning must name


async def test_pulses_say_the_loop_is_stalled_and_by_what(rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    router, connection, _ = rig
    await asyncio.sleep(0.5)
    idle = drain(router)
    assert len(idle) >= 2 and all(type(e) is ev.Pulse and e.peer == b"w/1" for _, e in idle)
    assert all(e.stalled_ms == 0 and e.blocked_ms == 0 for _, e in idle)

    async def request() -> None:
        connection.cycle.task = asyncio.current_task()
        blocking_handler(1.2)

    with caplog.at_level(logging.INFO, logger="appserver.pulse"):
        await asyncio.ensure_future(request())
        await asyncio.sleep(0.3)
    pulses = [e for _, e in drain(router)]
    stalled = [p for p in pulses if p.stalled_ms]
    assert stalled, pulses
    assert max(p.stalled_ms for p in stalled) >= 900
    assert {(p.request_id, p.method, p.path) for p in stalled} == {("r9", "GET", "/report")}
    ended = [p.blocked_ms for p in pulses if p.blocked_ms]
    assert len(ended) == 1 and 1000 <= ended[0] <= 2500, pulses
    warnings = [r.getMessage() for r in caplog.records if "blocked for" in r.getMessage()]
    assert len(warnings) == 1, warnings  # one warning per stall
    assert "request r9 GET /report" in warnings[0]
    assert "test_pulse.py" in warnings[0]
    assert "time.sleep(seconds)  # the line the warning must name" in warnings[0]
    assert any("ran again after 1." in r.getMessage() for r in caplog.records)


async def test_evict_exits_with_code_5(rig: Any) -> None:
    router, _, exits = rig
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not (got := drain(router)):
        assert loop.time() < deadline, "no PULSE"
        await asyncio.sleep(0.05)
    pulse_peer = got[0][0]
    router.send_multipart([pulse_peer, *wire.encode([ev.Evict(0, "event loop blocked for 10.0s")])])
    while not exits:
        assert loop.time() < deadline, "EVICT did not end the worker"
        await asyncio.sleep(0.05)
    assert exits == [EXIT_EVICTED]


async def test_no_pulse_for_a_connection_without_the_feature(rig: Any) -> None:
    router, connection, _ = rig
    connection.pulse_target = None
    # A pulse the thread read its target for just before may still arrive (a busy box delays the
    # thread): what must hold is that none follow, i.e. three intervals of quiet come, and soon.
    loop = asyncio.get_running_loop()
    deadline = quiet_since = loop.time()
    deadline += 5
    while loop.time() - quiet_since < 3 * INTERVAL_S:
        assert loop.time() < deadline, "PULSEs kept coming to a connection without the feature"
        if drain(router):
            quiet_since = loop.time()
        await asyncio.sleep(0.05)


def test_stack_starts_at_the_app() -> None:
    import sys

    frame = sys._getframe()
    lines = "".join(format_blocking_stack(frame))
    assert "test_stack_starts_at_the_app" in lines


async def test_the_thread_sleeps_until_something_can_be_due(zmq_ctx: Any) -> None:
    """wake_in: while the loop ticks, the thread wakes for the next PULSE or for the moment a stall
    would reach its threshold, not every POLL_S: each wake takes the GIL from the app's thread."""
    from appserver.pulse import MAX_SLEEP_S, POLL_S

    clock = LoopClock()
    clock.last_tick = 100.0
    pulse = Pulse(zmq_ctx, clock, [], worker_id="w", warn_s=0.0)
    target = PulseTarget("tcp://127.0.0.1:1", b"w/1", 2.0)  # PULSE every 1 s, busy at 1 s stalled
    targets = {target.endpoint: target}
    pulse._last_sent[target.endpoint] = 100.0
    # Due: the PULSE at 101.0; a stall from 100.05 matters at 101.05; capped at MAX_SLEEP_S.
    assert pulse.wake_in(targets, 100.0) == pytest.approx(MAX_SLEEP_S)
    assert pulse.wake_in(targets, 100.7) == pytest.approx(0.3)  # the PULSE
    pulse._last_sent[target.endpoint] = 101.0
    assert pulse.wake_in(targets, 101.0) == pytest.approx(0.05)  # the stall threshold
    pulse._warn_s = 0.3  # --warn-blocked-loop under the busy threshold: that is when to look
    assert pulse.wake_in(targets, 100.2) == pytest.approx(0.15)
    assert pulse.wake_in(targets, 200.0) == 0.0  # overdue: at once
    pulse._stall = object()  # type: ignore[assignment]  # a stall: watch for its end
    assert pulse.wake_in(targets, 200.0) == POLL_S
