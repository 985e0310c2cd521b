"""A retired worker lingers for its WebSocket sessions and started responses (issue 20).

In-process, against a scripted front end: SIGUSR1's ``request_retire`` drains
and, once only sessions are left, sends LINGER and keeps serving them past the
graceful timeout until they end, the stream drain limit passes (then 1012),
or a SIGTERM (``request_stop``) ends the lingering at once.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from appserver.config import WorkerConfig
from appserver.lifecycle import WorkerPhase
from appserver.worker import EXIT_OK, Worker
from wire import ResetCode
from wire import events as ev

from .helpers import until
from .scripted import WS_FEATURES, ScriptedFrontend, ws_connect

FEATURES = (*WS_FEATURES, "linger")
GRACE_S = 0.3

APP_SOURCE = """
import asyncio
GATE = asyncio.Event()
LOG = []

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                LOG.append("lifespan.shutdown")
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": message["text"]})
        LOG.append(f"websocket.disconnect {message['code']}")
        return
    await receive()
    if scope["path"] == "/gate":  # answers only once GATE opens
        await GATE.wait()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send({"type": "http.response.start", "status": 200})  # /stream: a chunk a tick until GATE
    while not GATE.is_set():
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        await asyncio.sleep(0.02)
    await send({"type": "http.response.body", "body": b"end"})
"""


@pytest.fixture
def app_module(tmp_path: Path) -> Iterator[str]:
    name = f"zasgi_linger_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP_SOURCE)
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


@pytest.fixture
def fe(zmq_ctx: zmq.Context[Any], tmp_path: Path) -> Iterator[ScriptedFrontend]:
    frontend = ScriptedFrontend(zmq_ctx, f"ipc://{tmp_path}/fe.sock")
    yield frontend
    frontend.close()


async def start(app_module: str, tmp_path: Path, fe: ScriptedFrontend, **options: Any) -> tuple[Worker, Any]:
    config = WorkerConfig(
        app=f"{app_module}:app", app_dir=str(tmp_path), connect=(fe.endpoint,), reconnect_max_s=0.5,
        **({"graceful_timeout_s": GRACE_S, "stream_drain_timeout_s": 60.0} | options),
    )  # fmt: skip
    worker = Worker(config)
    task = asyncio.get_running_loop().create_task(worker.run())
    await fe.expect(ev.Hello)
    fe.welcome(heartbeat_ms=2000, features=FEATURES)
    await asyncio.wait_for(worker.lifecycle.reached(WorkerPhase.READY), 5)
    return worker, task


def request(stream_id: int, path: bytes) -> ev.Request:
    return ev.Request(stream_id, "GET", "http", "1.1", path, b"", "", (), None, None, b"", False, False, {})


async def open_websocket(fe: ScriptedFrontend, stream_id: int) -> None:
    fe.send(ws_connect(stream_id))
    await fe.expect(ev.WsAccept)


async def echo(fe: ScriptedFrontend, stream_id: int, text: str) -> None:
    fe.send(ev.WsMessage(stream_id, True, text.encode()))
    while True:
        event = await fe.next_event()
        if type(event) is ev.WsMessage:
            assert (event.stream_id, event.data) == (stream_id, text.encode())
            return
        assert type(event) is ev.Credit, event


def log_of(app_module: str) -> list[str]:
    return sys.modules[app_module].LOG  # type: ignore[no-any-return]


async def test_a_retired_worker_lingers_for_its_websocket_past_the_grace(
    app_module: str, tmp_path: Path, fe: ScriptedFrontend
) -> None:
    worker, task = await start(app_module, tmp_path, fe)
    await open_websocket(fe, 1)
    worker.request_retire()
    await fe.expect(ev.Drain)
    await fe.expect(ev.Linger)  # nothing but the session was left: at once, not after the grace
    assert worker.lifecycle.phase is WorkerPhase.LINGERING
    began = time.monotonic()
    while time.monotonic() - began < 3 * GRACE_S:  # well past the grace: still served
        await echo(fe, 1, "still here")
    fe.send(ev.WsClose(1, 1000, "bye"))  # the session ends by itself: the worker goes
    await fe.until(ev.Bye)
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    assert log_of(app_module) == ["websocket.disconnect 1000", "lifespan.shutdown"]


async def test_a_started_response_is_kept_and_a_pending_request_gets_the_grace(
    app_module: str, tmp_path: Path, fe: ScriptedFrontend
) -> None:
    worker, task = await start(app_module, tmp_path, fe)
    fe.send(request(1, b"/stream"), request(2, b"/gate"))
    assert (await fe.expect(ev.Response)).stream_id == 1
    worker.request_retire()
    await fe.until(ev.Drain, limit=1000)  # /stream's ticks may come first
    # /gate never answers: the grace is its limit (RESET CANCELLED); then only the stream is left.
    reset = (await fe.until(ev.Reset, limit=1000))[-1]
    assert (reset.stream_id, reset.code) == (2, ResetCode.CANCELLED)
    await fe.until(ev.Linger, limit=1000)
    await asyncio.sleep(2 * GRACE_S)
    assert worker.lifecycle.phase is WorkerPhase.LINGERING
    sys.modules[app_module].GATE.set()  # the stream ends by itself, whole
    events = await fe.until(ev.Bye, limit=1000)
    last = [e for e in events if type(e) is ev.Body and e.stream_id == 1 and not e.more_body]
    assert last and last[-1].body.endswith(b"end")
    assert not [e for e in events if type(e) is ev.Reset]
    assert await asyncio.wait_for(task, 10) == EXIT_OK


async def test_the_stream_drain_limit_closes_what_is_left_with_1012(
    app_module: str, tmp_path: Path, fe: ScriptedFrontend
) -> None:
    worker, task = await start(app_module, tmp_path, fe, stream_drain_timeout_s=1.0)
    await open_websocket(fe, 1)
    began = time.monotonic()
    worker.request_retire()
    await fe.until(ev.Linger)
    close = await fe.expect(ev.WsClose, timeout_s=10)
    assert close == ev.WsClose(1, 1012, "service restart")
    assert 0.9 <= time.monotonic() - began < 5
    await fe.expect(ev.Bye)
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    assert log_of(app_module) == ["websocket.disconnect 1012", "lifespan.shutdown"]


async def test_sigterm_ends_the_lingering_at_once(
    app_module: str, tmp_path: Path, fe: ScriptedFrontend
) -> None:
    worker, task = await start(app_module, tmp_path, fe)
    await open_websocket(fe, 1)
    worker.request_retire()
    await fe.until(ev.Linger)
    began = time.monotonic()
    worker.request_stop()  # the pool stops, or too many workers linger
    assert await fe.expect(ev.WsClose) == ev.WsClose(1, 1012, "service restart")
    await fe.expect(ev.Bye)
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    assert time.monotonic() - began < 3
    assert log_of(app_module) == ["websocket.disconnect 1012", "lifespan.shutdown"]


async def test_sigterm_drain_never_lingers(app_module: str, tmp_path: Path, fe: ScriptedFrontend) -> None:
    worker, task = await start(app_module, tmp_path, fe)
    await open_websocket(fe, 1)
    began = time.monotonic()
    worker.request_stop()  # the whole server stops: everything within the graceful timeout
    await fe.expect(ev.Drain)
    events = await fe.until(ev.WsClose)
    assert ev.Linger not in {type(e) for e in events}
    assert events[-1] == ev.WsClose(1, 1012, "service restart")
    assert GRACE_S * 0.9 <= time.monotonic() - began < GRACE_S + 3
    assert await asyncio.wait_for(task, 10) == EXIT_OK


async def test_zero_stream_drain_keeps_the_old_behaviour(
    app_module: str, tmp_path: Path, fe: ScriptedFrontend
) -> None:
    worker, task = await start(app_module, tmp_path, fe, stream_drain_timeout_s=0.0)
    await open_websocket(fe, 1)
    worker.request_retire()
    events = await fe.until(ev.WsClose)
    assert ev.Linger not in {type(e) for e in events}
    assert events[-1] == ev.WsClose(1, 1012, "service restart")
    await fe.expect(ev.Bye)
    assert await asyncio.wait_for(task, 10) == EXIT_OK


async def test_no_linger_without_the_feature(app_module: str, tmp_path: Path, fe: ScriptedFrontend) -> None:
    """A front end that did not agree to "linger" hears no LINGER; the session is kept all the same."""
    config = WorkerConfig(app=f"{app_module}:app", app_dir=str(tmp_path), connect=(fe.endpoint,),
                          graceful_timeout_s=GRACE_S, stream_drain_timeout_s=60.0)  # fmt: skip
    worker = Worker(config)
    task = asyncio.get_running_loop().create_task(worker.run())
    await fe.expect(ev.Hello)
    fe.welcome(heartbeat_ms=2000, features=WS_FEATURES)
    await open_websocket(fe, 1)
    worker.request_retire()
    await fe.expect(ev.Drain)
    await until(lambda: worker.lifecycle.phase is WorkerPhase.LINGERING)
    await asyncio.sleep(2 * GRACE_S)
    await echo(fe, 1, "kept")
    fe.send(ev.WsClose(1, 1000, ""))
    events = await fe.until(ev.Bye)
    assert ev.Linger not in {type(e) for e in events}
    assert await asyncio.wait_for(task, 10) == EXIT_OK
