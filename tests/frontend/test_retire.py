"""A retiring front end (retire.py; a successor serves the port): it stops accepting, answers what
is in flight, lets keep-alive connections end after their next response (``connection: close``)
or at their keep-alive timeout, and closes WebSockets with 1012 at the end of its grace."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zmq

from frontend import config as cfg
from frontend.retire import TRANSITIONS, FrontendLifecycle, FrontendPhase, IllegalTransition
from frontend.server import RETIRED_BYE, serve
from tests.frontend.scripted_worker import ScriptedWorker
from wire import events as ev

from .conftest import make_config
from .rawhttp import RawConn, header, status_of
from .ws_helpers import WS_FEATURES, connect, receive

pytestmark = pytest.mark.timeout(60)

LENGTH_2 = ((b"content-length", b"2"),)


# ------------------------------------------------------------------ the table


def test_phases_only_move_forward() -> None:
    for old, news in TRANSITIONS.items():
        assert all(new.value > old.value for new in news)
    assert TRANSITIONS[FrontendPhase.STOPPED] == frozenset()


async def test_lifecycle_refuses_a_step_back_and_wakes_waiters() -> None:
    life = FrontendLifecycle("fe")
    waiter = asyncio.ensure_future(life.reached(FrontendPhase.STOPPING))
    life.to(FrontendPhase.RETIRING)
    with pytest.raises(IllegalTransition):
        life.to(FrontendPhase.SERVING)
    assert life.phase is FrontendPhase.RETIRING and not waiter.done()
    life.to(FrontendPhase.STOPPED)  # straight on: STOPPING counts as reached
    await asyncio.wait_for(waiter, 1)
    assert life.has_reached(FrontendPhase.RETIRING)


# ------------------------------------------------------------------ in-process front ends


@dataclass
class Running:
    port: int
    endpoint: str
    retire: asyncio.Event
    shutdown: asyncio.Event
    life: FrontendLifecycle
    task: asyncio.Task[None]
    reports: list[str]


@pytest.fixture
async def fleet(tmp_path: Path, zmq_ctx: zmq.Context[Any]) -> AsyncIterator[Any]:
    """``await fleet(sock, name, **config)``: a front end listening on (a copy of) ``sock``."""
    running: list[Running] = []
    workers: list[ScriptedWorker] = []

    async def start(sock: socket.socket, name: str, **overrides: Any) -> Running:
        config = make_config(tmp_path, **overrides)
        endpoint = config.backend.endpoint.rsplit("/", 1)[0] + f"/{name}.sock"
        config = replace(config, backend=replace(config.backend, endpoint=endpoint))
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        shutdown, retire, life = asyncio.Event(), asyncio.Event(), FrontendLifecycle(name)
        reports: list[str] = []
        task = asyncio.ensure_future(
            serve(config, ready=ready.set_result, shutdown=shutdown, retire=retire, zmq_context=zmq_ctx,
                  sock=sock.dup(), frontend_id=name, lifecycle=life, report=reports.append)
        )  # fmt: skip
        await asyncio.wait({task, ready}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        fe = Running(sock.getsockname()[1], config.backend.endpoint, retire, shutdown, life, task, reports)
        running.append(fe)
        return fe

    async def worker(fe: Running, **kwargs: Any) -> ScriptedWorker:
        w = ScriptedWorker(zmq_ctx, fe.endpoint, **kwargs)
        workers.append(w)
        await w.hello()
        return w

    start.worker = worker  # type: ignore[attr-defined]
    yield start
    for w in workers:
        w.close()
    for fe in running:
        fe.shutdown.set()
    for fe in running:
        await asyncio.wait_for(fe.task, 15)


@pytest.fixture
def listener() -> Any:
    """The port, bound once (as ``zasgi run`` does): every front end gets a copy of this socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


async def _answer(w: ScriptedWorker, body: bytes = b"ok") -> ev.Request:
    event: ev.Request = await w.expect_past(ev.Request, ev.Credit)
    w.respond(event.stream_id, 200, ((b"content-length", b"%d" % len(body)),), body)
    return event


async def test_keep_alive_connection_gets_connection_close_on_its_next_response(
    fleet: Any, listener: socket.socket
) -> None:
    old = await fleet(listener, "old", http=cfg.HttpLimits(keepalive_timeout_s=30))
    w = await fleet.worker(old)
    conn = await RawConn.open(old.port)
    await conn.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await _answer(w)
    head = await conn.read_head()
    assert status_of(head) == 200 and header(head, b"connection") != [b"close"]
    assert await conn.read_exactly(2) == b"ok"
    old.retire.set()
    await asyncio.wait_for(old.life.reached(FrontendPhase.RETIRING), 5)
    await asyncio.sleep(0.3)  # an idle connection is not closed early: the client may be sending
    await conn.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    await _answer(w)
    head = await conn.read_head()
    assert status_of(head) == 200 and header(head, b"connection") == [b"close"]
    assert await conn.read_to_close() == b"ok"
    await asyncio.wait_for(old.task, 10)  # nothing left: it stops well before the grace ends
    assert old.life.phase is FrontendPhase.STOPPED


async def test_idle_keep_alive_connection_closes_at_its_timeout_and_in_flight_is_answered(
    fleet: Any, listener: socket.socket
) -> None:
    old = await fleet(listener, "old", http=cfg.HttpLimits(keepalive_timeout_s=1.0), shutdown_timeout_s=20)
    w = await fleet.worker(old)
    idle = await RawConn.open(old.port)
    await idle.send(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
    await _answer(w)
    assert status_of(await idle.read_head()) == 200 and await idle.read_exactly(2) == b"ok"
    busy = await RawConn.open(old.port)
    await busy.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await w.request()  # in flight as the retirement begins
    loop = asyncio.get_running_loop()
    began = loop.time()
    old.retire.set()
    await asyncio.wait_for(old.life.reached(FrontendPhase.RETIRING), 5)
    assert await asyncio.wait_for(idle.read_to_close(), 10) == b""  # closed at the keep-alive timeout
    assert loop.time() - began >= 0.5
    w.respond(req.stream_id, 200, LENGTH_2, b"hi")
    head = await busy.read_head()
    assert status_of(head) == 200 and header(head, b"connection") == [b"close"]
    assert await busy.read_to_close() == b"hi"
    await asyncio.wait_for(old.task, 10)
    assert loop.time() - began < 10  # well before the 20 s grace: nothing was left


async def test_the_successor_takes_new_connections_on_the_same_socket(
    fleet: Any, listener: socket.socket
) -> None:
    old = await fleet(listener, "old")
    new = await fleet(listener, "new")
    w_old, w_new = await fleet.worker(old), await fleet.worker(new)
    old.retire.set()
    await asyncio.wait_for(old.task, 10)
    for i in range(5):  # every one answered by the successor: the port never stopped accepting
        conn = await RawConn.open(new.port)
        await conn.send(b"GET /%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
        await _answer(w_new)
        assert status_of(await conn.read_head()) == 200
        conn.close()
    assert not [e for e in w_old.received if type(e) is ev.Request]
    bye = await w_old.expect(ev.Bye)
    assert bye.reason == RETIRED_BYE  # its workers learn why it left


async def test_websocket_closed_1012_at_the_end_of_the_grace(fleet: Any, listener: socket.socket) -> None:
    old = await fleet(listener, "old", shutdown_timeout_s=1.5)
    w = await fleet.worker(old, ws_capacity=4, features=WS_FEATURES)

    class Fe:  # what ws_helpers.connect needs
        url = f"http://127.0.0.1:{old.port}"

    async with aiohttp.ClientSession() as session:
        ws, connect_event = await connect(session, Fe, w)
        loop = asyncio.get_running_loop()
        began = loop.time()
        old.retire.set()
        w.ws_send(connect_event.stream_id, "still here")  # the session goes on during the grace
        assert (await receive(ws)).data == "still here"
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1012
        assert loop.time() - began >= 1.0
        close = await w.expect(ev.WsClose)
        assert close.code == 1012
    await asyncio.wait_for(old.task, 10)


async def test_ready_workers_are_reported_as_they_change(fleet: Any, listener: socket.socket) -> None:
    fe = await fleet(listener, "fe")
    await asyncio.sleep(0.3)
    assert fe.reports == ["zasgi-workers "]
    w = await fleet.worker(fe)
    pid = os.getpid()  # a ScriptedWorker says HELLO with its process's pid
    for _ in range(50):
        if fe.reports[-1] == f"zasgi-workers {pid}":
            break
        await asyncio.sleep(0.1)
    assert fe.reports[-1] == f"zasgi-workers {pid}"
    w.close()


# ------------------------------------------------------------------ hand-off (handoff.py)


async def test_idle_keep_alive_connection_is_handed_to_the_successor(
    fleet: Any, listener: socket.socket, tmp_path: Path
) -> None:
    path = str(tmp_path / "slot.handoff")
    old = await fleet(listener, "old", handoff_path=path, http=cfg.HttpLimits(keepalive_timeout_s=30))
    w_old = await fleet.worker(old)
    conn = await RawConn.open(old.port)  # accepted by old: new does not listen yet
    await conn.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await _answer(w_old)
    head = await conn.read_head()
    assert status_of(head) == 200 and await conn.read_exactly(2) == b"ok"
    new = await fleet(listener, "new", handoff_path=path, http=cfg.HttpLimits(keepalive_timeout_s=30))
    w_new = await fleet.worker(new)
    old.retire.set()
    await asyncio.wait_for(old.task, 10)  # its only connection went to new: nothing to wait for
    await conn.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")  # the same TCP connection, now new's
    req = await _answer(w_new)
    assert req.raw_path == b"/2"
    head = await conn.read_head()
    assert status_of(head) == 200 and header(head, b"connection") != [b"close"]  # kept alive
    assert await conn.read_exactly(2) == b"ok"
    assert not [e for e in w_old.received if type(e) is ev.Request and e.raw_path == b"/2"]


async def test_a_busy_connection_is_handed_over_once_its_response_is_done(
    fleet: Any, listener: socket.socket, tmp_path: Path
) -> None:
    path = str(tmp_path / "slot.handoff")
    old = await fleet(listener, "old", handoff_path=path)
    w_old = await fleet.worker(old)
    conn = await RawConn.open(old.port)
    await conn.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await w_old.request()
    new = await fleet(listener, "new", handoff_path=path)
    w_new = await fleet.worker(new)
    old.retire.set()
    await asyncio.wait_for(old.life.reached(FrontendPhase.RETIRING), 5)
    await asyncio.sleep(0.2)
    w_old.respond(req.stream_id, 200, LENGTH_2, b"hi")  # within the hand-off window
    head = await conn.read_head()
    assert status_of(head) == 200 and header(head, b"connection") != [b"close"]
    assert await conn.read_exactly(2) == b"hi"
    await asyncio.wait_for(old.task, 10)
    await conn.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _answer(w_new)).raw_path == b"/next"
    assert status_of(await conn.read_head()) == 200


async def test_without_a_successor_on_the_path_connections_end_as_before(
    fleet: Any, listener: socket.socket, tmp_path: Path
) -> None:
    old = await fleet(listener, "old", handoff_path=str(tmp_path / "slot.handoff"),
                      http=cfg.HttpLimits(keepalive_timeout_s=30))  # fmt: skip
    w = await fleet.worker(old)
    conn = await RawConn.open(old.port)
    await conn.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    await _answer(w)
    assert status_of(await conn.read_head()) == 200 and await conn.read_exactly(2) == b"ok"
    old.retire.set()  # the path is still its own: nobody to hand to
    await asyncio.wait_for(old.life.reached(FrontendPhase.RETIRING), 5)
    await conn.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    await _answer(w)
    head = await conn.read_head()
    assert header(head, b"connection") == [b"close"]
    assert await conn.read_to_close() == b"ok"
