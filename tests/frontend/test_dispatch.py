"""The backend side: handshake, liveness, routing, bad input from workers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgpack
import pytest

from wire import events as ev
from wire.events import ResetCode

from .conftest import TIGHT_HEARTBEAT
from .rawhttp import RawConn, status_of

pytestmark = pytest.mark.timeout(30)


async def test_welcome_negotiates_features(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, features=("http", "websocket", "pathsend", "trailers", "future-thing"))
    assert w.welcome is not None
    assert set(w.welcome.features) == {"http", "websocket", "trailers", "pathsend"}  # ipc: pathsend ok
    heartbeat = fe.config.heartbeat
    assert (w.welcome.heartbeat_ms, w.welcome.liveness) == (heartbeat.interval_ms, heartbeat.liveness)
    assert w.welcome.window_bytes == fe.config.backend.window_bytes


async def test_bad_protocol_is_refused(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, hello=False, protocol=2)
    reply = await w.hello()
    assert type(reply) is ev.Refuse and "protocol 2" in reply.reason


async def test_unknown_peer_is_told_to_hello(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, hello=False)
    w.send(ev.Heartbeat(), ev.Drain())
    await w.expect(ev.UnknownPeer)
    assert type(await w.hello()) is ev.Welcome  # and it may then join


async def test_idle_worker_gets_heartbeats(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    await w.expect(ev.Heartbeat, timeout=2)


async def test_requests_spread_over_least_loaded_workers(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w1, w2 = await worker_for(fe), await worker_for(fe)
    async with httpx.AsyncClient() as client:
        a = asyncio.ensure_future(client.get(fe.url + "/a"))
        b = asyncio.ensure_future(client.get(fe.url + "/b"))
        r1, r2 = await w1.request(), await w2.request()  # one each: neither took both
        w1.respond(r1.stream_id, 200)
        w2.respond(r2.stream_id, 200)
        assert {(await a).status_code, (await b).status_code} == {200}


async def test_draining_worker_gets_no_new_streams(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w1 = await worker_for(fe)
    w1.send(ev.Drain())
    w2 = await worker_for(fe)  # its WELCOME comes after the DRAIN was processed
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            pending = asyncio.ensure_future(client.get(fe.url + "/"))
            req = await w2.request()
            w2.respond(req.stream_id, 200)
            assert (await pending).status_code == 200
    assert not [e for e in w1.received if type(e) is ev.Request]


async def test_silent_worker_is_gone_and_delivered_stream_gets_502(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend(heartbeat=TIGHT_HEARTBEAT)
    w = await worker_for(fe, window_bytes=10)
    conn = await RawConn.open(fe.port)
    await conn.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n" + b"q" * 20 + b"\r\n"
    )
    req = await w.request()
    w.send(ev.Credit(req.stream_id, 10))  # reached the app: no longer replayable (Rule 20)
    w.go_silent()
    head = await conn.read_head()  # within heartbeat x liveness (0.3 s) and the 5 s read bound
    assert status_of(head) == 502 and b"Connection: close" in head
    w.send(ev.Heartbeat())
    await w.expect(ev.UnknownPeer)  # it was forgotten; it would re-HELLO
    conn.close()


async def test_lost_worker_idempotent_request_is_replayed(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w1 = await worker_for(fe)
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/again"))
        first = await w1.request()
        w1.send(ev.Credit(first.stream_id, 1))  # delivered, but GET is whole and idempotent
        w2 = await worker_for(fe)
        w1.send(ev.Bye(0, "going away"))
        second = await w2.request()
        assert second.raw_path == b"/again"
        w2.respond(second.stream_id, 200, body=b"ok")
        assert (await pending).text == "ok"


async def test_event_for_another_workers_stream_is_dropped(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w1 = await worker_for(fe)
    w2 = await worker_for(fe, capacity=0)  # never chosen
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/"))
        req = await w1.request()
        w2.respond(req.stream_id, 299, body=b"hijack")
        w1.respond(req.stream_id, 200, body=b"owner")
        resp = await pending
    assert (resp.status_code, resp.text) == (200, "owner")


async def test_event_for_never_opened_stream_is_reset(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    w.send(ev.Body(999, b"x", False))
    reset = await w.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (999, ResetCode.PROTOCOL_ERROR)


async def test_illegal_event_resets_stream_and_client_gets_502(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/"))
        req = await w.request()
        w.send(ev.Body(req.stream_id, b"body before response", False))
        reset = await w.expect(ev.Reset)
        assert (reset.stream_id, reset.code) == (req.stream_id, ResetCode.PROTOCOL_ERROR)
        assert (await pending).status_code == 502


async def test_invalid_event_on_stream_resets_it(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/"))
        req = await w.request()
        w.send_raw([msgpack.packb([[20, req.stream_id, "not-a-status", [], b"", False, False]])])
        reset = await w.expect(ev.Reset)
        assert reset.stream_id == req.stream_id
        assert (await pending).status_code == 502


@pytest.mark.parametrize(
    "frames",
    [
        [b"\xc1 not msgpack"],
        [msgpack.packb({"a": 1})],
        [msgpack.packb([[999, 0]])],
        [msgpack.packb([[4, 0]]), b"stray frame", b"another"],
        [],
    ],
    ids=["not-msgpack", "not-an-array", "unknown-kind", "stray-frames", "empty"],
)
async def test_garbage_from_a_worker_does_not_crash(
    start_frontend: Any, worker_for: Any, frames: list[bytes]
) -> None:
    fe = await start_frontend()
    bad = await worker_for(fe)
    if frames:
        bad.send_raw(frames)
    good = await worker_for(fe)
    bad.close()
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/"))
        req = await good.request()
        good.respond(req.stream_id, 200, body=b"still up")
        assert (await pending).text == "still up"


async def test_rehello_fails_the_old_connections_streams(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    req = await w.request()
    w.send(ev.Credit(req.stream_id, 3))  # delivered
    assert type(await w.hello()) is ev.Welcome  # the worker restarted its side
    assert status_of(await conn.read_head()) == 502
    conn.close()


async def test_shutdown_finishes_in_flight_then_says_bye(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/slow"))
        req = await w.request()
        fe.shutdown.set()
        await asyncio.sleep(0)  # let serve() start draining (ordering only)
        w.respond(req.stream_id, 200, body=b"finished")
        resp = await pending
        assert (resp.status_code, resp.text) == (200, "finished")
    bye = await w.expect(ev.Bye)
    assert "shutting down" in bye.reason
    await asyncio.wait_for(fe.task, 5)


async def none_within(w: Any, seconds: float = 0.3) -> bool:
    try:
        await w.request(timeout=seconds)
    except TimeoutError:
        return True
    return False


async def test_a_worker_with_feature_limit_gets_streams_only_within_its_limit(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, features=("http", "limit"), capacity=16)
    assert w.welcome is not None and "limit" in w.welcome.features
    async with httpx.AsyncClient() as client:
        a = asyncio.ensure_future(client.get(fe.url + "/a"))
        b = asyncio.ensure_future(client.get(fe.url + "/b"))
        assert await none_within(w)  # nothing until its first LIMIT
        w.send(ev.Limit(0, 1))  # one at a time
        first = await w.request()
        assert await none_within(w)  # the other waits for the slot
        w.send(ev.Limit(0, 100))  # more room (clamped to its capacity): the waiter is served at once
        second = await w.request()
        w.respond(first.stream_id, 200)
        w.respond(second.stream_id, 200)
        assert {(await a).status_code, (await b).status_code} == {200}


async def test_limit_without_the_feature_is_ignored(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, capacity=4)
    w.send(ev.Limit(0, 1))  # not agreed at WELCOME: its capacity still counts
    async with httpx.AsyncClient() as client:
        a = asyncio.ensure_future(client.get(fe.url + "/a"))
        b = asyncio.ensure_future(client.get(fe.url + "/b"))
        first, second = await w.request(), await w.request()
        w.respond(first.stream_id, 200)
        w.respond(second.stream_id, 200)
        assert {(await a).status_code, (await b).status_code} == {200}


async def test_a_lingering_worker_keeps_its_stream_and_gets_nothing_new(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend()
    w1 = await worker_for(fe)
    async with httpx.AsyncClient() as client:
        first = asyncio.ensure_future(client.get(fe.url + "/stream"))
        req = await w1.request()
        w1.send(ev.Response(req.stream_id, 200, (), b"part 1 ", True, False), ev.Drain(), ev.Linger())
        w2 = await worker_for(fe)  # its WELCOME comes after the LINGER was processed (not a bad event)
        second = asyncio.ensure_future(client.get(fe.url + "/new"))
        w2.respond((await w2.request()).stream_id, 200)
        assert (await second).status_code == 200  # new requests go to the new worker
        w1.send(ev.Body(req.stream_id, b"part 2", False))  # the old one finishes its stream
        answer = await first
        assert answer.status_code == 200 and answer.text == "part 1 part 2"
