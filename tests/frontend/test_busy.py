"""Busy is not lost (PROTOCOL Rule 9a): a worker whose loop is stalled, as its PULSE says, keeps its
streams and gets no new ones; one whose pulses stop too is lost as before.

The worker is a ScriptedWorker gone silent (its loop "blocked"); its pulse connection is a second
DEALER that never says HELLO and sends PULSE naming the first one's routing id.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import pytest

from frontend import config as cfg
from wire import events as ev

from .conftest import TIGHT_HEARTBEAT

pytestmark = pytest.mark.timeout(30)

FEATURES = ("http", "trailers", "pulse")


@pytest.fixture
def heartbeat() -> cfg.Heartbeat:
    return TIGHT_HEARTBEAT  # liveness is what this module is about: silent 0.3 s is lost


def routing_id(worker: Any) -> bytes:
    return f"{worker.worker_id}-{os.getpid()}".encode()  # (ScriptedWorker's)


async def pulse_for(worker: Any, pulser: Any, seconds: float, *, every_s: float = 0.05, **kw: Any) -> None:
    """PULSE on ``worker``'s behalf for ``seconds``, its loop stalled for longer each time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (elapsed := loop.time() - start) < seconds:
        stalled_ms = kw.get("stalled_ms", 300 + int(elapsed * 1000))
        pulser.send(ev.Pulse(0, routing_id(worker), stalled_ms, 0, "r-1", "GET", "/block"))
        await asyncio.sleep(every_s)


async def logged(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 5.0) -> None:
    """Until the in-process front end has logged ``text`` (a PULSE crosses a connection of its own:
    nothing else says when it arrived)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not any(text in r.getMessage() for r in caplog.records):
        assert loop.time() < deadline, f"{text!r} never logged"
        await asyncio.sleep(0.01)


async def test_busy_worker_keeps_its_stream_and_gets_no_new_one(
    start_frontend: Any, worker_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fe = await start_frontend()  # heartbeat 100 ms x 3: silent 0.3 s is lost
    busy = await worker_for(fe, features=FEATURES)
    async with httpx.AsyncClient(timeout=10) as client:
        blocked = asyncio.ensure_future(client.get(fe.url + "/block"))
        first = await busy.request()
        pulser = await worker_for(fe, hello=False)
        other = await worker_for(fe, features=FEATURES)
        beats = asyncio.ensure_future(pulse_for(busy, pulser, 1.5))
        await logged(caplog, f"worker {busy.worker_id} is busy")
        busy.go_silent()  # its loop blocks: no HEARTBEAT, nothing
        for _ in range(3):  # every new request goes to the other worker
            pending = asyncio.ensure_future(client.get(fe.url + "/"))
            req = await other.request()
            other.respond(req.stream_id, 200)
            assert (await pending).status_code == 200
        await beats  # 1.5 s of silence on its connection: five times what loses a silent worker
        assert not blocked.done()
        pulser.send(ev.Pulse(0, routing_id(busy), 0, 1600, "", "", ""))  # it runs again
        busy.respond(first.stream_id, 200, body=b"late")
        response = await blocked
        assert (response.status_code, response.text) == (200, "late")
        assert len([e for e in other.received if type(e) is ev.Request]) == 0  # never replayed
    assert not [e for e in pulser.received if type(e) is not ev.Heartbeat]  # no UNKNOWN_PEER for PULSE


async def test_busy_worker_is_ready_again_when_its_loop_runs(
    start_frontend: Any, worker_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, features=FEATURES)
    pulser = await worker_for(fe, hello=False)
    # Pulses keep coming all along, as a real worker's pulse thread sends them; the first one travels a
    # fresh connection of its own, so nothing is asked of the worker before the front end saw it busy.
    beats = asyncio.ensure_future(pulse_for(w, pulser, 30, stalled_ms=900))
    try:
        await logged(caplog, f"worker {w.worker_id} is busy")
        async with httpx.AsyncClient(timeout=10) as client:
            pending = asyncio.ensure_future(client.get(fe.url + "/"))
            with pytest.raises(TimeoutError):
                await w.request(timeout=0.3)  # busy: the request waits in the queue
            beats.cancel()
            pulser.send(ev.Pulse(0, routing_id(w), 0, 950, "", "", ""))  # it runs again
            beats = asyncio.ensure_future(pulse_for(w, pulser, 30, stalled_ms=0))
            req = await w.request()
            w.respond(req.stream_id, 200)
            assert (await pending).status_code == 200
    finally:
        beats.cancel()


async def test_pulse_stopping_too_is_lost(
    start_frontend: Any, worker_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, features=FEATURES)
    async with httpx.AsyncClient(timeout=10) as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/"))
        await w.request()
        pulser = await worker_for(fe, hello=False)
        other = await worker_for(fe, features=FEATURES)
        beats = asyncio.ensure_future(pulse_for(w, pulser, 0.8))
        await logged(caplog, f"worker {w.worker_id} is busy")
        w.go_silent()
        await beats  # then the process dies, pulse and all: silence
        assert not [e for e in other.received if type(e) is ev.Request]  # busy: not replayed
        again = await other.request(timeout=2)  # lost: the GET is replayed
        other.respond(again.stream_id, 200)
        assert (await pending).status_code == 200


async def test_pulse_without_feature_or_for_nobody_is_ignored(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)  # no "pulse"
    pulser = await worker_for(fe, hello=False)
    async with httpx.AsyncClient(timeout=10) as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/"))
        await w.request()
        w.go_silent()
        pulser.send(ev.Pulse(0, b"nobody", 700, 0, "", "", ""))
        await pulse_for(w, pulser, 0.6)  # not agreed: it does not keep the worker
        assert (await pending).status_code in (502, 503)  # lost (the replay found no worker)
    assert not [e for e in pulser.received if type(e) is not ev.Heartbeat]


async def test_worker_blocked_past_the_limit_is_evicted_and_its_request_gets_504(
    start_frontend: Any, worker_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fe = await start_frontend(heartbeat=cfg.Heartbeat(interval_ms=100, liveness=3, blocked_timeout_s=0.6))
    w = await worker_for(fe, features=FEATURES)
    async with httpx.AsyncClient(timeout=10) as client:
        loop = asyncio.get_running_loop()
        pending = asyncio.ensure_future(client.get(fe.url + "/block", headers={"x-request-id": "r-1"}))
        await w.request()
        behind = asyncio.ensure_future(client.get(fe.url + "/queued-behind-it"))
        await w.request()
        pulser = await worker_for(fe, hello=False)
        other = await worker_for(fe, features=FEATURES)
        started = loop.time()
        beats = asyncio.ensure_future(pulse_for(w, pulser, 3.0))  # r-1 GET /block is on its loop
        await logged(caplog, f"worker {w.worker_id} is busy")
        w.go_silent()
        response = await pending
        took = loop.time() - started
        evict = await pulser.expect(ev.Evict, timeout=2)
        beats.cancel()
        replayed = await other.request()  # the request that waited behind the blocking one
        other.respond(replayed.stream_id, 200)
        assert replayed.raw_path == b"/queued-behind-it" and (await behind).status_code == 200
    assert response.status_code == 504
    assert 0.2 < took < 3.0  # 0.6 s of stall, less the 0.3 s it had when the first PULSE came
    assert "blocked for" in evict.reason
    assert not [e for e in other.received if type(e) is ev.Request]  # the blocking one: not replayed


async def test_no_eviction_by_default(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    assert fe.config.heartbeat.blocked_timeout_s is None
    w = await worker_for(fe, features=FEATURES)
    pulser = await worker_for(fe, hello=False)
    w.go_silent()
    await pulse_for(w, pulser, 1.0, stalled_ms=5000)
    assert not [e for e in pulser.received if type(e) is ev.Evict]
