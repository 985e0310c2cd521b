"""A worker lost under a request (PROTOCOL §9): fast detection, replay or 502, the slot queue.

The heartbeat here is slow (5 s x 3), so anything detected within a second
was detected by the ROUTER's monitor and the probe, not by silence.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from frontend import config as cfg
from wire import events as ev

from .rawhttp import RawConn, status_of

pytestmark = pytest.mark.timeout(30)

SLOW_HEARTBEAT = cfg.Heartbeat(interval_ms=5000, liveness=3)
FAST_DETECTION_S = 2.0  # generous for a loaded machine, far below the 15 s heartbeat fallback


async def test_closed_connection_is_noticed_and_get_replayed(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(heartbeat=SLOW_HEARTBEAT)
    w1 = await worker_for(fe)
    async with httpx.AsyncClient(timeout=10) as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/again"))
        first = await w1.request()
        w1.send(ev.Credit(first.stream_id, 1))  # it reached the app: a GET is replayed anyway
        w2 = await worker_for(fe)
        started = time.monotonic()
        w1.close()  # the process died: its connection closes, no BYE
        second = await w2.request(timeout=FAST_DETECTION_S)
        detected_s = time.monotonic() - started
        assert second.raw_path == b"/again" and second.stream_id != first.stream_id
        w2.respond(second.stream_id, 200, body=b"ok")
        assert (await pending).text == "ok"
    print(f"closed worker connection -> replayed in {detected_s * 1000:.1f} ms")


async def test_post_sent_to_a_dead_worker_is_502_not_run_twice(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(heartbeat=SLOW_HEARTBEAT)
    w1 = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    await w1.request()  # no event back: the app may or may not have run it
    w2 = await worker_for(fe)
    w1.close()
    head = await conn.read_head()
    assert status_of(head) == 502 and b"Connection: close" in head
    await asyncio.sleep(0.1)
    assert not [e for e in w2.received if type(e) is ev.Request]
    conn.close()


async def test_post_that_crossed_a_bye_is_replayed(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(heartbeat=SLOW_HEARTBEAT)
    w1 = await worker_for(fe)
    async with httpx.AsyncClient(timeout=10) as client:
        pending = asyncio.ensure_future(client.post(fe.url + "/pay", content=b"abc"))
        await w1.request()
        w2 = await worker_for(fe)
        w1.send(ev.Bye(0, "stopping"))  # BYE: it runs nothing more, so the unanswered POST never ran
        again = await w2.request()
        assert (again.method, again.body, again.more_body) == ("POST", b"abc", False)
        w2.respond(again.stream_id, 201)
        assert (await pending).status_code == 201


async def test_acknowledged_post_crossing_a_bye_is_502(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(heartbeat=SLOW_HEARTBEAT)
    w1 = await worker_for(fe)
    async with httpx.AsyncClient(timeout=10) as client:
        pending = asyncio.ensure_future(client.post(fe.url + "/pay", content=b"abcd"))
        req = await w1.request()
        w1.send(ev.Credit(req.stream_id, 4), ev.Bye(0, "stopping"))  # the app read it, then BYE
        assert (await pending).status_code == 502


async def test_replay_waits_for_a_slot_ahead_of_new_requests(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(heartbeat=SLOW_HEARTBEAT)
    w1 = await worker_for(fe, capacity=1)
    async with httpx.AsyncClient(timeout=10) as client:
        a = asyncio.ensure_future(client.get(fe.url + "/a"))
        req_a = await w1.request()
        w2 = await worker_for(fe, capacity=1)
        b = asyncio.ensure_future(client.get(fe.url + "/b"))
        req_b = await w2.request()
        c = asyncio.ensure_future(client.get(fe.url + "/c"))  # no slot anywhere: queued
        await asyncio.sleep(0.1)
        assert req_a.raw_path == b"/a" and req_b.raw_path == b"/b"
        w1.close()  # /a must wait for a slot, not fail, and go before /c
        await asyncio.sleep(0.3)
        assert not a.done()
        w2.respond(req_b.stream_id, 200, body=b"b")
        replayed = await w2.request()
        assert replayed.raw_path == b"/a"
        w2.respond(replayed.stream_id, 200, body=b"a")
        last = await w2.request()
        assert last.raw_path == b"/c"
        w2.respond(last.stream_id, 200, body=b"c")
        assert [(await f).text for f in (a, b, c)] == ["a", "b", "c"]


async def test_worker_lost_mid_response_aborts_the_client(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(heartbeat=SLOW_HEARTBEAT)
    w1 = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await w1.request()
    await worker_for(fe)  # somewhere to replay to: it must not be used
    w1.respond(req.stream_id, 200, body=b"first", more_body=True)
    head = await conn.read_head()
    assert status_of(head) == 200 and b"Transfer-Encoding: chunked" in head
    w1.close()
    rest = await conn.read_to_close()  # closed without the terminating 0-length chunk
    assert b"first" in rest and not rest.endswith(b"0\r\n\r\n")
    conn.close()
