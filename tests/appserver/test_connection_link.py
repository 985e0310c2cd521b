"""FrontendConnection's link watch: a front end that restarts, or comes up late, hears HELLO at once.

The WELCOMEs here announce a 1 s x 3 heartbeat, so a HELLO within about a
second was sent because the connection came back, not because of silence.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from appserver.connection import ConnPhase, FrontendConnection, Link
from wire import events as ev

from .helpers import make_request, until
from .scripted import Factory, ScriptedFrontend, echo_path_app, handshake, request
from .test_connection import Gate

pytestmark = pytest.mark.timeout(30)

REJOIN_S = 1.5  # RECONNECT_IVL_MAX is 0.5 s; the silence fallback would take 3 s


async def test_restarted_front_end_gets_hello_at_once(
    zmq_ctx: zmq.Context[Any], fe: ScriptedFrontend, connect: Factory
) -> None:
    gate = Gate()
    conn = connect(gate)
    await handshake(fe, conn)
    fe.send(make_request(1, more_body=True))  # in flight when the front end dies
    await until(lambda: bool(gate.started))
    fe.close()
    started = time.monotonic()
    successor = ScriptedFrontend(zmq_ctx, fe.endpoint)
    try:
        await until(lambda: conn.phase is ConnPhase.HANDSHAKING)
        await until(lambda: bool(gate.received))
        assert gate.received == [{"type": "http.disconnect"}]  # the dropped link failed the stream
        gate.release.set()
        await successor.expect(ev.Hello, timeout_s=REJOIN_S)
        rejoin_s = time.monotonic() - started
        assert successor.peer == b"host-1-abc/1"  # the same socket: ZeroMQ reconnected it
        successor.welcome()
        await until(lambda: conn.phase is ConnPhase.READY)
        successor.send(request(1))  # a new handshake: stream ids start over
        assert (await successor.expect(ev.Response)).stream_id == 1
        print(f"front end restart -> HELLO after {rejoin_s * 1000:.0f} ms")
    finally:
        successor.close()


async def test_worker_started_first_says_hello_once_the_front_end_binds(
    zmq_ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    endpoint = f"ipc://{tmp_path}/late.sock"
    conn = FrontendConnection(ctx=zmq_ctx, endpoint=endpoint, worker_id="host-1-abc", app=echo_path_app,
                              capacity=8, ws_capacity=0, window_bytes=65536, reconnect_max_s=0.5)  # fmt: skip
    conn.start()
    frontend = None
    try:
        await asyncio.sleep(0.3)
        assert conn.link is Link.DOWN and conn.phase is ConnPhase.HANDSHAKING
        frontend = ScriptedFrontend(zmq_ctx, endpoint)
        await handshake(frontend, conn)
        assert frontend.peer == b"host-1-abc/1"  # no socket churn while nobody listened
        with pytest.raises(AssertionError):  # exactly one HELLO
            await frontend.next_event(timeout_s=0.3)
    finally:
        conn.close()
        if frontend is not None:
            frontend.close()


async def test_bye_then_restart_on_the_same_endpoint(
    zmq_ctx: zmq.Context[Any], fe: ScriptedFrontend, connect: Factory
) -> None:
    """A graceful front-end restart: BYE, close, successor binds: the worker finds it."""
    conn = connect()
    await handshake(fe, conn)
    fe.send(ev.Bye(0, "front end shutting down"))
    await asyncio.sleep(0.05)
    fe.close()
    successor = ScriptedFrontend(zmq_ctx, fe.endpoint)
    try:
        hello = await successor.expect(ev.Hello, timeout_s=REJOIN_S)
        assert hello.worker_id == "host-1-abc"
        successor.welcome()
        await until(lambda: conn.phase is ConnPhase.READY)
    finally:
        successor.close()
