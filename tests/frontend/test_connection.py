"""connection.Connection, the front end's own HTTP/1 protocol: pipelining in order, keep-alive
across response kinds, WebSocket upgrades handed to aiohttp mid-connection, client loss."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from frontend.dispatch import Dispatcher
from frontend.services import Services
from frontend.stream import HttpStream, Phase
from frontend.upload import NoBody
from wire import events as ev

from .conftest import make_config
from .rawhttp import RawConn, header, status_of
from .ws_helpers import HANDSHAKE, WS_FEATURES

pytestmark = pytest.mark.timeout(30)

LENGTH_2 = ((b"content-length", b"2"),)


async def _request(w: Any) -> ev.Request:
    """The next REQUEST (CREDIT for earlier streamed responses skipped)."""
    event: ev.Request = await w.expect_past(ev.Request, ev.Credit)
    return event


async def test_pipelined_requests_in_one_packet_are_answered_in_order(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"HEAD /3 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /5 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    bodies = {b"/2": b"abc", b"/4": b"de"}
    for n in range(1, 6):
        req = await _request(w)
        path = b"/%d" % n
        assert req.raw_path == path  # the next one reaches the worker once this one is answered
        body = req.body
        more = req.more_body
        while more:
            event = await w.expect(ev.Body)
            body, more = body + event.body, event.more_body
        assert body == bodies.get(path, b"")
        w.respond(req.stream_id, 200, LENGTH_2, b"r%d" % n)
        head = await conn.read_head()
        assert status_of(head) == 200 and header(head, b"content-length") == [b"2"]
        if path != b"/3":  # HEAD: no body
            assert await conn.read_exactly(2) == b"r%d" % n
    conn.close()


async def test_a_parse_error_after_good_requests_is_answered_after_them(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    # (In one packet with the good request the error would take it too: llhttp raises for the
    # whole buffer, as aiohttp's server did.) Sent while /1 is in progress, it waits its turn.
    await conn.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    assert req.raw_path == b"/1"
    await conn.send(b"GET /2 HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
    await asyncio.sleep(0.1)
    w.respond(req.stream_id, 200, LENGTH_2, b"ok")
    assert status_of(await conn.read_head()) == 200 and await conn.read_exactly(2) == b"ok"
    head = await conn.read_head()
    assert status_of(head) == 400 and header(head, b"connection") == [b"close"]
    await conn.read_to_close()
    with pytest.raises(TimeoutError):  # the bad request never reached the worker
        await w.expect(ev.Request, timeout=0.3)


async def test_streamed_and_empty_responses_keep_the_connection(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    w.respond(req.stream_id, 200, (), b"ab", more_body=True)
    head = await conn.read_head()
    assert header(head, b"transfer-encoding") == [b"chunked"]
    w.send(ev.Body(req.stream_id, b"cd", False))
    assert (await conn.read_chunked_body())[0] == b"abcd"
    await conn.send(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    w.respond(req.stream_id, 204, ((b"content-length", b"9"),))
    head = await conn.read_head()
    assert status_of(head) == 204 and not header(head, b"content-length")
    await conn.send(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    w.respond(req.stream_id, 200, LENGTH_2, b"ok")
    assert status_of(await conn.read_head()) == 200 and await conn.read_exactly(2) == b"ok"
    conn.close()


async def test_websocket_upgrade_after_a_keep_alive_request(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, ws_capacity=4, features=WS_FEATURES)
    conn = await RawConn.open(fe.port)
    # A plain request, then (in the same packet) the upgrade: answered in that order.
    await conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + HANDSHAKE + b"\r\n")
    req = await _request(w)
    assert req.raw_path == b"/first"
    w.respond(req.stream_id, 200, LENGTH_2, b"ok")
    assert status_of(await conn.read_head()) == 200 and await conn.read_exactly(2) == b"ok"
    connect = await w.ws_open()
    assert connect.raw_path == b"/ws" and connect.client is not None
    head = await conn.read_head()
    assert status_of(head) == 101 and header(head, b"upgrade") == [b"websocket"]
    w.ws_send(connect.stream_id, "hi")
    assert await conn.read_exactly(4) == b"\x81\x02hi"  # an unmasked text frame from the server
    mask = b"\x01\x02\x03\x04"
    await conn.send(b"\x81\x83" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(b"yo!")))
    message = await w.ws_message()
    assert message.data in ("yo!", b"yo!")
    conn.close()
    assert (await w.expect(ev.WsClose)).code == 1006


async def test_client_gone_mid_request_disconnects_the_stream(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    conn.close()
    event = await w.expect(ev.Disconnect)
    assert event.stream_id == req.stream_id
    # The front end serves on: a new connection works.
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    w.respond(req.stream_id, 200, LENGTH_2, b"ok")
    assert status_of(await conn.read_head()) == 200
    conn.close()


async def test_many_pipelined_requests_pause_reading_and_all_are_answered(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    count = 100  # over the connection's queue of 32 parsed requests
    await conn.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(count)))

    async def answer() -> None:
        for n in range(count):
            req = await _request(w)
            assert req.raw_path == b"/%d" % n
            w.respond(req.stream_id, 200, LENGTH_2, b"%02d" % (n % 100))

    answering = asyncio.ensure_future(answer())
    for n in range(count):
        assert status_of(await conn.read_head()) == 200
        assert await conn.read_exactly(2) == b"%02d" % (n % 100)
    await answering
    conn.close()


async def test_an_unread_body_is_dropped_before_the_close(start_frontend: Any, worker_for: Any) -> None:
    """An early answer to a large upload: the client still reads it (no reset), then the close."""
    fe = await start_frontend()
    w = await worker_for(fe, window_bytes=64 * 1024)
    conn = await RawConn.open(fe.port)
    size = 8 * 1024 * 1024
    await conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    req = await _request(w)
    w.respond(req.stream_id, 401, LENGTH_2, b"no")
    head = await conn.read_head()
    assert status_of(head) == 401
    block = b"x" * (1024 * 1024)
    for _ in range(size // len(block)):  # the front end keeps reading (and dropping) it
        await asyncio.wait_for(conn.send(block), 5)
    assert await conn.read_exactly(2) == b"no"
    assert await conn.read_to_close() == b""  # closed once the body is all read


async def test_shutdown_order_idle_closed_in_flight_finished_then_websockets_1001(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend(shutdown_timeout_s=5.0)
    w = await worker_for(fe, ws_capacity=4, features=WS_FEATURES)
    ws = await RawConn.open(fe.port)
    await ws.send(HANDSHAKE + b"\r\n")
    connect = await w.ws_open()
    assert status_of(await ws.read_head()) == 101
    idle = await RawConn.open(fe.port)
    await idle.send(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    w.respond(req.stream_id, 200, LENGTH_2, b"ok")
    assert status_of(await idle.read_head()) == 200 and await idle.read_exactly(2) == b"ok"
    busy = await RawConn.open(fe.port)
    await busy.send(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    fe.shutdown.set()
    assert await idle.read_to_close() == b""  # the idle keep-alive connection: closed at once
    with pytest.raises(TimeoutError):  # the WebSocket waits for HTTP to drain
        await asyncio.wait_for(ws.reader.read(1), 0.3)
    w.respond(req.stream_id, 200, LENGTH_2, b"ok")  # the in-flight request still finishes
    head = await busy.read_head()
    assert status_of(head) == 200 and header(head, b"connection") == [b"close"]
    assert await busy.read_exactly(2) == b"ok"
    frame = await ws.read_exactly(4)  # then the WebSocket: a close frame with 1001
    assert frame[0] == 0x88 and frame[2:4] == (1001).to_bytes(2, "big")
    close = await w.expect(ev.WsClose)
    assert (close.stream_id, close.code) == (connect.stream_id, 1001)


@pytest.mark.parametrize("more_body", [False, True])
async def test_a_bad_worker_header_is_502_and_reset(
    start_frontend: Any, worker_for: Any, more_body: bool
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await _request(w)
    w.respond(req.stream_id, 200, ((b"x-bad", b"a\r\nInjected: yes"),), b"body", more_body=more_body)
    head = await conn.read_head()
    assert status_of(head) == 502 and header(head, b"connection") == [b"close"]
    assert not header(head, b"injected")
    reset = await w.expect(ev.Reset)
    assert reset.stream_id == req.stream_id
    conn.close()


async def test_http_10_streamed_body_ends_at_close(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    req = await _request(w)
    w.respond(req.stream_id, 200, ((b"transfer-encoding", b"chunked"),), b"ab", more_body=True)
    head = await conn.read_head()
    assert head.startswith(b"HTTP/1.0 200") and not header(head, b"transfer-encoding")
    assert not header(head, b"content-length") and header(head, b"connection") != [b"keep-alive"]
    w.send(ev.Body(req.stream_id, b"cd", False))
    assert await conn.read_to_close() == b"abcd"  # unframed: the close ends it


class _Writer:
    pending: Any = None
    finished = 0

    def finish(self) -> None:
        self.finished += 1


async def test_a_task_cancelled_before_its_first_step_still_ends_its_stream(
    tmp_path: Any, zmq_ctx: Any
) -> None:
    """A client gone in the same loop iteration its request got a task: the task never runs,
    so its ``finally`` does not either; the stream must end anyway (else its slot leaks)."""
    requests = Services(make_config(tmp_path), Dispatcher(make_config(tmp_path), zmq_ctx)).requests
    w = _Writer()
    head = ("GET", "http", "1.1", b"/", b"", "", (), None, None)
    stream = HttpStream(requests, head, {"request_id": "r"}, NoBody(), w)  # type: ignore[arg-type]

    async def work() -> None:
        raise AssertionError("never runs")

    requests._active += 1
    requests._spawn(w, stream, work())  # type: ignore[arg-type]
    w.pending.cancel()  # what Connection.connection_lost does (ResponseWriter.lost)
    for _ in range(3):
        await asyncio.sleep(0)
    assert stream.phase is Phase.FAILED and stream.writer is None  # failed, then finished
    assert requests._active == 0 and w.pending is None
    assert w.finished == 0  # a vanished client's request is not logged
