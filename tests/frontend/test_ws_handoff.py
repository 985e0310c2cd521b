"""WebSocket handoff in the front end (PROTOCOL §8.1): scripted workers, real WebSocket clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from frontend import config as cfg
from wire import events as ev
from frontend.stream import MAX_REPLAYS
from wire.events import ResetCode

from .conftest import TIGHT_HEARTBEAT
from .ws_helpers import RECEIVE_TIMEOUT_S, WS_FEATURES, connect, receive, ws_setup, ws_url

pytestmark = pytest.mark.timeout(30)
HANDOFF_FEATURES = (*WS_FEATURES, "handoff")
COST = 32  # Rule 15


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def setup(start_frontend: Any, worker_for: Any, **fe_kw: Any) -> tuple[Any, Any]:
    return await ws_setup(start_frontend, worker_for, fe_kw=fe_kw, features=HANDOFF_FEATURES)


async def messages(w: Any, n: int) -> list[bytes]:
    return [bytes((await w.ws_message()).data) for _ in range(n)]


async def test_handoff_resumes_on_another_worker(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w1 = await setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w1, protocols=("chat",), subprotocol="chat")
    for text in ("m1", "m2", "m3"):
        await ws.send_str(text)
    assert await messages(w1, 3) == [b"m1", b"m2", b"m3"]
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    # The app consumed m1 only; its reply and the credit come before WS_HANDOFF (Rule 21).
    sid = conn.stream_id
    w1.send(
        ev.Drain(),
        ev.WsMessage(sid, True, b"reply to m1"),
        ev.Credit(sid, 2 + COST),
        ev.WsHandoff(sid, {"n": 1}),
    )
    resume = await w2.expect(ev.WsResume)
    assert resume.stream_id > conn.stream_id
    assert (resume.subprotocol, resume.state) == ("chat", {"n": 1})
    assert resume.connect.raw_path == conn.raw_path and resume.connect.headers == conn.headers
    assert resume.connect.subprotocols == ("chat",) and resume.connect.ext == conn.ext
    assert await messages(w2, 2) == [b"m2", b"m3"]  # re-delivered: what the first app never took
    assert (await receive(ws)).data == "reply to m1"
    await ws.send_str("m4")
    assert await messages(w2, 1) == [b"m4"]
    w2.ws_send(resume.stream_id, "from w2")
    assert (await receive(ws)).data == "from w2"
    assert not ws.closed
    await ws.close()
    assert (await w2.expect(ev.WsClose)).code == 1000
    assert not w1.received or all(type(e) is ev.Heartbeat for e in w1.received)  # nothing more for w1


async def test_messages_are_held_until_a_worker_is_free(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    pings = cfg.WebSocket(ping_interval_s=0.1, ping_timeout_s=0.3)
    fe, w1 = await setup(
        start_frontend, worker_for, queue=cfg.Queue(size=100, timeout_s=10.0), websocket=pings
    )
    ws, conn = await connect(session, fe, w1)
    await ws.send_str("before")
    await messages(w1, 1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, [1, "two"]))
    for i in range(5):  # no worker yet: the front end holds these
        await ws.send_str(f"held {i}")
    pending = asyncio.ensure_future(ws.receive())  # answers the front end's pings meanwhile
    await asyncio.sleep(1.0)  # many ping intervals and timeouts: the connection stays up
    assert not pending.done()
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    resume = await w2.expect(ev.WsResume)
    assert resume.state == (1, "two")
    assert await messages(w2, 6) == [b"before"] + [f"held {i}".encode() for i in range(5)]
    w2.ws_send(resume.stream_id, "still here")
    assert (await asyncio.wait_for(pending, RECEIVE_TIMEOUT_S)).data == "still here"
    await ws.close()


async def test_resume_stays_within_the_new_window(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w1 = await setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, None))
    for i in range(10):
        await ws.send_bytes(bytes([i]) * 300)
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES, window_bytes=1000)
    resume = await w2.expect(ev.WsResume)
    first = await messages(w2, 4)  # 3 x 332 < 1000, a 4th may overrun once (Rule 16): no 5th
    with pytest.raises(TimeoutError):
        await w2.ws_message(timeout=0.3)
    w2.send(ev.Credit(resume.stream_id, 10_000))
    rest = await messages(w2, 6)
    assert [m[0] for m in first + rest] == list(range(10))
    await ws.close()


async def test_no_worker_in_time_closes_1012(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w1 = await setup(start_frontend, worker_for, queue=cfg.Queue(size=100, timeout_s=0.3))
    ws, conn = await connect(session, fe, w1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, {}))
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1012)


async def test_refused_resume_is_retried(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w1 = await setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w1)
    await ws.send_str("unread")
    await messages(w1, 1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, "s"))
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    resume = await w2.expect(ev.WsResume)
    assert await messages(w2, 1) == [b"unread"]
    w3 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    w2.send(ev.Drain(), ev.Reset(resume.stream_id, ResetCode.REFUSED, "worker draining"))  # crossed the DRAIN
    again = await w3.expect(ev.WsResume)
    assert again.state == "s" and await messages(w3, 1) == [b"unread"]
    w3.ws_send(again.stream_id, "hello from w3")
    assert (await receive(ws)).data == "hello from w3"
    await ws.close()


async def test_client_leaving_during_the_handoff_frees_everything(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w1 = await setup(start_frontend, worker_for, queue=cfg.Queue(size=100, timeout_s=10.0))
    ws, conn = await connect(session, fe, w1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, None))
    await asyncio.sleep(0.2)  # the handler now waits for a worker
    await asyncio.wait_for(ws.close(), RECEIVE_TIMEOUT_S)  # answered by the front end, no worker involved
    w2 = await worker_for(fe, ws_capacity=1, features=HANDOFF_FEATURES)
    with pytest.raises(TimeoutError):  # the wait for a worker was given up: nothing to resume
        await w2.expect(ev.WsResume, timeout=0.3)
    ws2, _ = await connect(session, fe, w2)  # and its only slot is free
    await ws2.close()


async def test_worker_without_the_feature_closes_1012(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w = await ws_setup(start_frontend, worker_for)  # no "handoff" agreed
    ws, conn = await connect(session, fe, w)
    w.send(ev.Drain(), ev.WsHandoff(conn.stream_id, {}))
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1012)


async def test_resume_lost_to_a_bye_is_retried(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w1 = await setup(start_frontend, worker_for)
    ws, conn = await connect(session, fe, w1)
    await ws.send_str("unread")
    await messages(w1, 1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, "s"))
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    await w2.expect(ev.WsResume)
    w3 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    w2.send(ev.Bye(0, "stopping"))  # it ran nothing more: the resume never reached an app
    again = await w3.expect(ev.WsResume)
    assert again.state == "s" and await messages(w3, 1) == [b"unread"]
    await ws.close()


async def test_resume_lost_before_the_client_saw_it_is_retried_with_every_message(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w1 = await setup(start_frontend, worker_for, heartbeat=TIGHT_HEARTBEAT)
    ws, conn = await connect(session, fe, w1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, {"n": 7}))
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    resume = await w2.expect(ev.WsResume)
    await ws.send_str("a")
    await ws.send_str("b")
    assert await messages(w2, 2) == [b"a", b"b"]
    w2.send(ev.Credit(resume.stream_id, 1 + COST))  # its app took "a", then the worker died
    w3 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    w2.go_silent()
    again = await w3.expect(ev.WsResume, timeout=10)
    # The same state and every message since the resume, credited or not: the new app
    # rebuilds what the dead one had, and the client saw nothing of the dead one.
    assert again.state == {"n": 7} and await messages(w3, 2) == [b"a", b"b"]
    w3.ws_send(again.stream_id, "from w3")
    assert (await receive(ws)).data == "from w3"
    await ws.close()


async def test_resume_lost_after_the_client_saw_it_is_not_retried(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w1 = await setup(start_frontend, worker_for, heartbeat=TIGHT_HEARTBEAT)
    ws, conn = await connect(session, fe, w1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, None))
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    resume = await w2.expect(ev.WsResume)
    w2.ws_send(resume.stream_id, "from w2")  # the new app has spoken: the old state is stale
    assert (await receive(ws)).data == "from w2"
    w3 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    w2.go_silent()
    msg = await receive(ws)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
    with pytest.raises(TimeoutError):
        await w3.expect(ev.WsResume, timeout=0.3)


async def test_resumes_lost_again_and_again_close_1012(
    start_frontend: Any, worker_for: Any, session: Any
) -> None:
    fe, w1 = await setup(start_frontend, worker_for, heartbeat=TIGHT_HEARTBEAT)
    ws, conn = await connect(session, fe, w1)
    w1.send(ev.Drain(), ev.WsHandoff(conn.stream_id, "s"))
    dying = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    for _ in range(MAX_REPLAYS):  # each resumed there and lost before it said anything
        await dying.expect(ev.WsResume, timeout=10)
        nxt = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
        dying.go_silent()
        dying = nxt
    await dying.expect(ev.WsResume, timeout=10)
    await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    dying.go_silent()  # the retries are spent
    msg = await receive(ws)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1012)


async def test_handoff_right_after_accept(start_frontend: Any, worker_for: Any, session: Any) -> None:
    fe, w1 = await setup(start_frontend, worker_for)
    w2 = await worker_for(fe, ws_capacity=4, features=HANDOFF_FEATURES)
    pending = asyncio.ensure_future(session.ws_connect(ws_url(fe)))
    connect_event = await first_connect(w1, w2)
    worker, other = (w1, w2) if connect_event[0] is w1 else (w2, w1)
    sid = connect_event[1].stream_id
    # Accepted and handed off in one batch: the client gets its 101 and never sees the switch.
    worker.send(ev.WsAccept(sid, None, ()), ev.Drain(), ev.WsHandoff(sid, {"n": 0}))
    ws = await asyncio.wait_for(pending, RECEIVE_TIMEOUT_S)
    resume = await other.expect(ev.WsResume)
    await ws.send_str("first")
    assert await messages(other, 1) == [b"first"]
    other.ws_send(resume.stream_id, "hi")
    assert (await receive(ws)).data == "hi"
    await ws.close()


async def first_connect(*workers: Any) -> tuple[Any, ev.WsConnect]:
    """The worker that got the next WS_CONNECT, and the event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECEIVE_TIMEOUT_S
    while loop.time() < deadline:
        for w in workers:
            try:
                return w, await w.ws_connect(timeout=0.05)
            except TimeoutError:
                pass
    raise AssertionError("no worker got the WS_CONNECT")
