"""WebSocket flow control in the front end (PROTOCOL §7): both directions stay bounded."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from wire import events as ev

from .ws_helpers import connect, receive, ws_setup

pytestmark = pytest.mark.timeout(60)
OVERHEAD = 32  # Rule 15: a WS_MESSAGE costs len(data) + 32


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def count_messages(w: Any, *, quiet_s: float = 0.3, limit: int = 1000) -> list[ev.WsMessage]:
    """WS_MESSAGEs until none comes for ``quiet_s``."""
    got: list[ev.WsMessage] = []
    while len(got) < limit:
        try:
            got.append(await w.ws_message(timeout=quiet_s))
        except TimeoutError:
            break
    return got


async def test_withheld_credit_stops_reading(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for, window_bytes=1000)
    ws, conn = await connect(session, fe, w)
    for i in range(20):
        await ws.send_bytes(bytes([i]) * 300)
    first = await count_messages(w)
    # 3 messages cost 996 < 1000, so a 4th may go (Rule 16: one event past the window), no 5th.
    assert len(first) == 4
    w.send(ev.Credit(conn.stream_id, 2000))  # window -328 + 2000 = 1672: 6 more (5 x 332 = 1660)
    second = await count_messages(w)
    assert len(second) == 6
    assert [m.data[0] for m in first + second] == list(range(10))  # in order, none lost
    w.send(ev.Credit(conn.stream_id, 1_000_000))  # plenty: the client's close frame must be read too
    assert len(await count_messages(w)) == 10
    await ws.close()


async def test_a_flooding_client_is_held_back(start_frontend: Any, worker_for: Any, session: Any) -> None:
    """With no credit the front end stops reading: the client's sends block long before 64 MiB."""
    fe, w = await ws_setup(start_frontend, worker_for, window_bytes=1000)
    ws, _ = await connect(session, fe, w, compress=0)
    chunk = os.urandom(1024 * 1024)
    stalled_at = None
    for i in range(64):
        try:
            await asyncio.wait_for(ws.send_bytes(chunk), 0.5)
        except TimeoutError:
            stalled_at = i
            break
    assert stalled_at is not None, "64 MiB went in: the front end kept reading"
    assert len(await count_messages(w)) == 1  # the window let one message through


async def test_credit_is_returned_once_the_client_took_half_the_window(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w)
    window = fe.config.backend.window_bytes
    size = 64 * 1024
    half = -(-window // 2 // (size + OVERHEAD))  # messages that make up half the window
    for _ in range(half + 1):
        w.ws_send(conn.stream_id, b"m" * size)
    for _ in range(half + 1):
        assert len((await receive(ws)).data) == size
    credit = await w.expect(ev.Credit)
    assert credit.stream_id == conn.stream_id
    assert credit.bytes == half * (size + OVERHEAD) and credit.bytes * 2 >= window  # batched (Rule 17)
    await ws.close()


async def test_a_slow_client_stops_the_credit(start_frontend: Any, worker_for: Any, session: Any) -> None:
    """The worker sends only on credit; a client that does not read stops the credit coming."""
    fe, w = await ws_setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w, compress=0)
    size, window = 64 * 1024, fe.config.backend.window_bytes
    available, sent = window, 0
    payload = os.urandom(size)
    while sent < 256:  # 16 MiB: far beyond what the socket buffers hold
        while available > 0:
            w.ws_send(conn.stream_id, payload)
            available -= size + OVERHEAD
            sent += 1
        try:
            available += (await w.expect(ev.Credit, timeout=0.5)).bytes
        except TimeoutError:
            break
    assert sent < 256, "the front end credited messages the client never read"
    for _ in range(sent):  # the client reads at last: everything arrives, in order
        assert (await receive(ws)).data == payload
    await ws.close()


async def test_http_served_among_websockets(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)
    sockets = [(await connect(session, fe, w))[0] for _ in range(4)]
    for ws in sockets:
        for _ in range(50):
            await ws.send_str("chatter")
    pending = asyncio.ensure_future(session.get(fe.url + "/plain"))
    event = await w.expect_past(ev.Request, ev.WsMessage, ev.Credit)  # among the WS_MESSAGEs
    w.respond(event.stream_id, 200, (), b"ok")
    resp = await asyncio.wait_for(pending, 5)
    assert resp.status == 200 and await resp.read() == b"ok"
    resp.release()
    for ws in sockets:
        await ws.close()
    assert all(ws.close_code == 1000 for ws in sockets)
    assert isinstance(sockets[0], aiohttp.ClientWebSocketResponse)
