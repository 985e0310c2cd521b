"""WebSocket in the front end: an in-process front end, a ScriptedWorker, real WebSocket clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import aiohttp
import pytest

from frontend import config as cfg
from frontend.ws_connection import WsConnection
from wire import events as ev
from wire.events import ResetCode

from .conftest import TIGHT_HEARTBEAT
from .rawhttp import RawConn, header, status_of
from .ws_helpers import HANDSHAKE, RECEIVE_TIMEOUT_S, WS_FEATURES, connect, receive, ws_setup, ws_url

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# ------------------------------------------------------------------- handshake


async def test_accept_with_subprotocol(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for, fe_kw={"root_path": "/mnt"})
    ws, conn = await connect(
        session, fe, w, path="/chat%20room?x=1", protocols=("one", "two"), headers={"X-Foo": "Bar"},
        subprotocol="two",
    )  # fmt: skip
    assert (conn.scheme, conn.http_version, conn.root_path) == ("ws", "1.1", "/mnt")
    assert (conn.raw_path, conn.query_string) == (b"/chat%20room", b"x=1")
    assert (b"X-Foo", b"Bar") in conn.headers and conn.subprotocols == ("one", "two")
    assert conn.client is not None and conn.server == ("127.0.0.1", fe.port) and conn.ext["request_id"]
    assert ws.protocol == "two"
    await ws.close()
    await w.expect(ev.WsClose)


async def test_extra_headers_and_a_second_subprotocol_line(start_frontend: Any, worker_for: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    raw = await RawConn.open(fe.port)
    await raw.send(HANDSHAKE + b"Sec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Protocol: c\r\n\r\n")
    conn = await w.ws_connect()
    assert conn.subprotocols == ("a", "b", "c")
    w.send(ev.WsAccept(conn.stream_id, "c", ((b"X-Extra", b"1"), (b"Set-Cookie", b"s=1"))))
    head = await raw.read_head()
    assert status_of(head) == 101
    assert header(head, b"sec-websocket-protocol") == [b"c"]
    assert header(head, b"x-extra") == [b"1"] and header(head, b"set-cookie") == [b"s=1"]
    raw.close()
    assert (await w.expect(ev.WsClose)).code == 1006  # vanished without a close frame


async def test_close_before_accept_is_403(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    pending = asyncio.ensure_future(session.ws_connect(ws_url(fe)))
    conn = await w.ws_connect()
    w.send(ev.WsClose(conn.stream_id, 1000, ""))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await pending
    assert info.value.status == 403


async def test_denial_response(start_frontend: Any, worker_for: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    raw = await RawConn.open(fe.port)
    await raw.send(HANDSHAKE + b"\r\n")
    conn = await w.ws_connect()
    w.respond(conn.stream_id, 401, ((b"X-Why", b"token"), (b"Content-Length", b"5")), b"no", more_body=True)
    w.send(ev.Body(conn.stream_id, b"pe!", False))
    head = await raw.read_head()
    assert status_of(head) == 401 and header(head, b"x-why") == [b"token"]
    assert await raw.read_to_close() == b"nope!"


@pytest.mark.parametrize("where", ["prepare", "write"])
async def test_client_gone_before_the_denial_is_written_is_quiet(
    start_frontend: Any, worker_for: Any, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """The race behind the fix: the client's RST closed the transport but connection_lost has not
    run yet when the handler writes the denial's head ("prepare") or its body ("write")."""
    fe, w = await ws_setup(start_frontend, worker_for)
    original = WsConnection.write_head
    calls = []

    def client_just_left(conn: WsConnection, data: bytes) -> bool:
        calls.append(data)
        if len(calls) == (1 if where == "prepare" else 2) and conn.transport is not None:
            conn.transport.abort()  # is_closing() now; connection_lost comes on the next loop turn
        return original(conn, data)

    raw = await RawConn.open(fe.port)
    await raw.send(HANDSHAKE + b"\r\n")
    conn = await w.ws_connect()
    with mock.patch.object(WsConnection, "write_head", client_just_left):
        w.respond(conn.stream_id, 401, (), b"nope", more_body=True)
        reset = await w.expect(ev.Reset)  # handle()'s finish(): the worker hears the client left
    assert reset.stream_id == conn.stream_id and reset.reason == "client went away"
    await raw.read_to_close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_reset_before_accept_is_500(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    pending = asyncio.ensure_future(session.ws_connect(ws_url(fe)))
    conn = await w.ws_connect()
    w.send(ev.Reset(conn.stream_id, ResetCode.APP_ERROR, "boom"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await pending
    assert info.value.status == 500


async def test_refused_connect_is_replayed_on_another_worker(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, a = await ws_setup(start_frontend, worker_for)
    pending = asyncio.ensure_future(session.ws_connect(ws_url(fe)))
    first = await a.ws_connect()
    b = await worker_for(fe, ws_capacity=4, features=WS_FEATURES)
    a.send(ev.Reset(first.stream_id, ResetCode.REFUSED, "draining"))
    second = await b.ws_open()
    assert second.stream_id > first.stream_id and second.raw_path == first.raw_path
    ws = await asyncio.wait_for(pending, RECEIVE_TIMEOUT_S)
    await ws.close()


async def test_worker_lost_after_answering_is_502(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    pending = asyncio.ensure_future(session.ws_connect(ws_url(fe)))
    conn = await w.ws_connect()
    w.send(ev.Credit(conn.stream_id, 10), ev.Bye(0, "crash"))  # delivered: no replay (Rule 20)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await pending
    assert info.value.status == 502


async def test_no_websocket_worker_is_503(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe = await start_frontend(queue=cfg.Queue(size=10, timeout_s=0.3))
    await worker_for(fe)  # HTTP only: neither the feature nor ws_capacity
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(ws_url(fe))
    assert info.value.status == 503


async def test_malformed_handshake_is_400_without_a_worker(start_frontend: Any, worker_for: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    raw = await RawConn.open(fe.port)
    await raw.send(HANDSHAKE.replace(b"Version: 13", b"Version: 99") + b"\r\n")
    assert status_of(await raw.read_head()) == 400
    raw.close()
    with pytest.raises(TimeoutError):
        await w.ws_connect(timeout=0.2)


# -------------------------------------------------------------------- messages


async def test_text_and_bytes_both_ways(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w)
    sid = conn.stream_id
    await ws.send_str("héllo")
    await ws.send_bytes(b"\x00\xff")
    first, second = await w.ws_message(), await w.ws_message()
    assert (first.text, first.data, second.text, second.data) == (True, "héllo".encode(), False, b"\x00\xff")
    w.ws_send(sid, "wörld")
    w.ws_send(sid, b"\x01\x02")
    text, binary = await receive(ws), await receive(ws)
    assert (text.type, text.data) == (aiohttp.WSMsgType.TEXT, "wörld")
    assert (binary.type, binary.data) == (aiohttp.WSMsgType.BINARY, b"\x01\x02")
    await ws.close()


@pytest.mark.parametrize("size", [0, 1024 * 1024])
async def test_empty_and_1mib_messages(start_frontend: Any, worker_for: Any, session: Any, size: int) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w)
    data = bytes(range(256)) * (size // 256)
    await ws.send_bytes(data)
    await ws.send_str("x" * size)
    got_bytes = await w.ws_message()
    w.send(ev.Credit(conn.stream_id, size + 32))  # a 1 MiB message overdraws the 256 KiB window
    got_text = await w.ws_message()
    w.send(ev.Credit(conn.stream_id, size + 32))  # else the client's close frame waits unread
    assert got_bytes.data == data and not got_bytes.text
    assert got_text.data == b"x" * size and got_text.text
    w.ws_send(conn.stream_id, data)
    w.ws_send(conn.stream_id, "y" * size)
    assert (await receive(ws)).data == data
    assert (await receive(ws)).data == "y" * size
    await ws.close()


# --------------------------------------------------------------------- closing


async def test_client_close_code_and_reason_reach_the_worker(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w)
    await ws.close(code=4001, message=b"bye now")
    close = await w.expect(ev.WsClose)
    assert (close.stream_id, close.code, close.reason) == (conn.stream_id, 4001, "bye now")


async def test_worker_close_code_and_reason_reach_the_client(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w)
    w.ws_send(conn.stream_id, "last words")
    w.send(ev.WsClose(conn.stream_id, 4002, "done"))
    assert (await receive(ws)).data == "last words"
    msg = await receive(ws)
    assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4002, "done")
    with pytest.raises(TimeoutError):  # the worker closed the stream: it hears nothing more
        await w.expect(ev.WsClose, timeout=0.3)


@pytest.mark.parametrize("compress", [0, 15])
async def test_oversize_message_is_1009_both_ways(
    start_frontend: Any, worker_for: Any, session: Any, compress: int
) -> None:
    fe_kw = {"websocket": cfg.WebSocket(max_message_bytes=1000)}
    fe, w = await ws_setup(start_frontend, worker_for, fe_kw=fe_kw)
    ws, _ = await connect(session, fe, w, compress=compress)
    await ws.send_bytes(b"a" * 1000)  # at the limit: fine
    assert len((await w.ws_message()).data) == 1000
    await ws.send_bytes(b"a" * 1001)
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    assert (await w.expect(ev.WsClose)).code == 1009


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (lambda sid: ev.Reset(sid, ResetCode.APP_ERROR, "boom"), 1011),
        (lambda sid: ev.WsAccept(sid), 1011),  # illegal: the stream is already open
        (lambda sid: ev.Bye(0, "crash"), 1011),  # worker lost
    ],
)
async def test_worker_side_failures_close_the_client_with_1011(
    start_frontend: Any, worker_for: Any, session: Any, event: Any, code: int
) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w)
    w.send(event(conn.stream_id))
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, code)
    if type(event(0)) is ev.WsAccept:
        reset = await w.expect(ev.Reset)
        assert (reset.stream_id, reset.code) == (conn.stream_id, ResetCode.PROTOCOL_ERROR)


async def test_draining_worker_lost_is_1012(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for, fe_kw={"heartbeat": TIGHT_HEARTBEAT})
    ws, _ = await connect(session, fe, w)
    w.send(ev.Drain())
    w.go_silent()  # expired after liveness x heartbeat (300 ms here)
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1012)


async def test_shutdown_closes_with_1001(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w)
    fe.shutdown.set()
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    close = await w.expect(ev.WsClose)
    assert (close.stream_id, close.code) == (conn.stream_id, 1001)
    await asyncio.wait_for(fe.task, 5)


async def test_ping_timeout_is_1006_to_the_worker(start_frontend: Any, worker_for: Any) -> None:
    fe_kw = {"websocket": cfg.WebSocket(ping_interval_s=0.1, ping_timeout_s=0.1)}
    fe, w = await ws_setup(start_frontend, worker_for, fe_kw=fe_kw)
    raw = await RawConn.open(fe.port)
    await raw.send(HANDSHAKE + b"\r\n")
    await w.ws_open()
    assert status_of(await raw.read_head()) == 101
    # The raw client never answers the ping: after interval + timeout the front end gives up.
    close = await w.expect(ev.WsClose, timeout=3)
    assert close.code == 1006
    raw.close()


async def test_a_close_frame_with_the_reserved_1006_fails_the_connection_with_1002(
    start_frontend: Any, worker_for: Any
) -> None:
    """RFC 6455 §7.4.1 (Autobahn 7.9.5): 1006 never travels in a close frame; aiohttp lets it through."""
    fe, w = await ws_setup(start_frontend, worker_for)
    raw = await RawConn.open(fe.port)
    await raw.send(HANDSHAKE + b"\r\n")
    conn = await w.ws_connect()
    w.send(ev.WsAccept(conn.stream_id, None, ()))
    assert status_of(await raw.read_head()) == 101
    mask = b"\x01\x02\x03\x04"
    payload = (1006).to_bytes(2, "big")
    await raw.send(b"\x88\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    frame = await raw.read_exactly(4)
    assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 1002, frame
    assert (await w.expect(ev.WsClose)).code == 1002  # the app hears why
    raw.close()
