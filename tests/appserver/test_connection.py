"""FrontendConnection against a scripted front end: a real ROUTER over ipc, wire codec only."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from appserver.connection import ConnPhase
from wire import ResetCode, codec
from wire import events as ev

from .helpers import make_request, until
from .scripted import Factory, ScriptedFrontend, handshake, request


class Gate:
    """An app that parks each request until released, recording what receive() said."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[int] = []
        self.received: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.started.append(1)
        self.received.append(await receive())
        await self.release.wait()
        if self.received[-1]["type"] == "http.disconnect":
            return
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"done"})


# ---------------------------------------------------------------- handshake and streams


async def test_hello_welcome_request_response(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    hello = await handshake(fe, conn)
    assert (hello.protocol, hello.worker_id, hello.pid, hello.capacity) == (1, "host-1-abc", os.getpid(), 8)
    assert hello.window_bytes == 65536
    assert hello.features == ("http", "trailers", "pathsend", "linger", "pulse", "early-hints")
    assert hello.info["app"] == "test:app"
    assert fe.peer == b"host-1-abc/1"
    assert conn.phase is ConnPhase.READY
    fe.send(request(1))
    response = await fe.expect(ev.Response)
    assert response == ev.Response(1, 200, ((b"x-path", b"/path"),), b"hello", False, False)


async def test_nothing_but_hello_before_welcome(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    await fe.expect(ev.Hello)
    fe.send(request(1, b"/early"))  # not welcomed yet: must be ignored
    fe.welcome()
    await asyncio.wait_for(conn.welcomed.wait(), 5)
    fe.send(request(1, b"/after"))  # ids start over with the handshake
    response = await fe.expect(ev.Response)
    assert response.headers == ((b"x-path", b"/after"),)


async def test_heartbeats_when_idle(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    await handshake(fe, conn, heartbeat_ms=40, liveness=50)
    for _ in range(3):
        await fe.expect(ev.Heartbeat, skip_heartbeats=False, timeout_s=2)


async def test_silent_front_end_gets_a_new_hello_on_a_new_socket(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    conn = connect()
    await handshake(fe, conn, heartbeat_ms=20, liveness=3)
    hello = await fe.expect(ev.Hello, timeout_s=3)  # silent for 60 ms: reconnect
    assert hello.worker_id == "host-1-abc"
    assert fe.peer == b"host-1-abc/2"
    assert conn.phase is ConnPhase.HANDSHAKING


async def test_no_welcome_retries_hello_with_back_off(fe: ScriptedFrontend, connect: Factory) -> None:
    connect()
    await fe.expect(ev.Hello)
    await fe.expect(ev.Hello, timeout_s=3)
    assert fe.peer == b"host-1-abc/2"


async def test_bye_from_the_front_end_is_like_silence(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    await handshake(fe, conn)
    fe.send(ev.Bye(0, "front end restarting"))
    await fe.expect(ev.Hello)
    assert fe.peer == b"host-1-abc/2"


async def test_unknown_peer_fails_streams_and_says_hello_again(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    gate = Gate()
    conn = connect(gate)
    await handshake(fe, conn)
    fe.send(make_request(1, more_body=True))  # the app waits for body that will never come
    await until(lambda: bool(gate.started))
    fe.send(ev.UnknownPeer())
    await fe.expect(ev.Hello)
    assert fe.peer == b"host-1-abc/1"  # same socket: the front end just forgot us
    await until(lambda: bool(gate.received))
    assert gate.received == [{"type": "http.disconnect"}]
    gate.release.set()
    fe.welcome()
    fe.send(request(1))  # a new handshake: ids start over, and the failed stream says nothing
    event = await fe.expect(ev.Response)
    assert event.stream_id == 1


async def test_refuse_is_final(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    await fe.expect(ev.Hello)
    fe.send(ev.Refuse(0, "protocol 1 is not supported"))
    await asyncio.wait_for(conn.refused.wait(), 5)
    assert conn.refuse_reason == "protocol 1 is not supported"
    assert conn.phase is ConnPhase.REFUSED


async def test_requests_beyond_capacity_are_refused(fe: ScriptedFrontend, connect: Factory) -> None:
    gate = Gate()
    conn = connect(gate, capacity=1)
    await handshake(fe, conn)
    fe.send(request(1), request(2))
    refused = await fe.expect(ev.Reset)
    assert (refused.stream_id, refused.code) == (2, ResetCode.REFUSED)
    assert len(gate.started) == 1  # the app never saw stream 2
    gate.release.set()
    assert (await fe.expect(ev.Response)).stream_id == 1
    await until(lambda: not conn.tasks)
    fe.send(request(3))
    assert (await fe.expect(ev.Response)).stream_id == 3


async def test_a_slot_is_free_once_the_response_ended_even_if_the_app_runs_on(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    """Rule 19 as the front end counts: it may open a new stream as soon as the last response
    event arrived; an app still running after that (background work) must not get it refused."""
    finish = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"done"})
        await finish.wait()  # background work after the response

    conn = connect(app, capacity=1)
    await handshake(fe, conn)
    fe.send(request(1))
    assert (await fe.expect(ev.Response)).stream_id == 1
    fe.send(request(3))
    assert (await fe.expect(ev.Response)).stream_id == 3  # not RESET(REFUSED)
    finish.set()
    await until(lambda: not conn.tasks)


async def test_reset_from_the_front_end_reaches_the_app(fe: ScriptedFrontend, connect: Factory) -> None:
    gate = Gate()
    conn = connect(gate)
    await handshake(fe, conn)
    fe.send(make_request(1, more_body=True))
    await until(lambda: bool(gate.started))
    fe.send(ev.Reset(1, ResetCode.CANCELLED, "client gone"))
    await until(lambda: bool(gate.received))
    assert gate.received == [{"type": "http.disconnect"}]
    await until(lambda: conn.open_streams == 0)


# ---------------------------------------------------------------- bad input


async def test_garbage_does_not_crash_the_worker(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    await handshake(fe, conn)
    fe.send_frames([b"\xc1 not msgpack at all"])
    fe.send_frames([codec.encode([ev.Heartbeat()])[0][:-1] + b"\x99"])
    bad_kind = codec.msgpack.packb([[99, 5, "x"]])
    fe.send_frames([bad_kind])
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (5, ResetCode.PROTOCOL_ERROR)
    fe.send(ev.Credit(9, 100))  # a stream never opened
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (9, ResetCode.PROTOCOL_ERROR)
    fe.send(ev.Credit(3, 100), ev.Disconnect(4))  # ids below the highest: closed, dropped silently
    fe.send(request(10))
    response = await fe.expect(ev.Response)
    assert response.stream_id == 10
    assert conn.phase is ConnPhase.READY


async def test_protocol_violation_resets_only_that_stream(fe: ScriptedFrontend, connect: Factory) -> None:
    gate = Gate()
    conn = connect(gate)
    await handshake(fe, conn)
    fe.send(request(1), request(2))  # both complete requests
    await until(lambda: len(gate.started) == 2)
    fe.send(ev.Body(1, b"more?", False))  # BODY after the request ended
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (1, ResetCode.PROTOCOL_ERROR)
    gate.release.set()
    assert (await fe.expect(ev.Response)).stream_id == 2


async def test_reused_stream_id_is_a_protocol_error(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    await handshake(fe, conn)
    fe.send(request(2))
    assert (await fe.expect(ev.Response)).stream_id == 2
    fe.send(request(1))
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (1, ResetCode.PROTOCOL_ERROR)


# ---------------------------------------------------------------- drain


async def test_drain_then_bye_after_streams_finish(fe: ScriptedFrontend, connect: Factory) -> None:
    gate = Gate()
    conn = connect(gate)
    await handshake(fe, conn)
    fe.send(request(1))
    await until(lambda: bool(gate.started))
    conn.drain()
    await fe.expect(ev.Drain)
    fe.send(request(2))  # crossed the DRAIN: refused, for replay elsewhere
    refused = await fe.expect(ev.Reset)
    assert (refused.stream_id, refused.code) == (2, ResetCode.REFUSED)
    gate.release.set()
    assert (await fe.expect(ev.Response)).stream_id == 1
    await asyncio.wait_for(conn.finish_streams(5), 6)
    conn.close("drained")
    bye = await fe.expect(ev.Bye)
    assert bye.reason == "drained"
    assert conn.phase is ConnPhase.CLOSED


async def test_finish_streams_cancels_what_outlives_the_grace(fe: ScriptedFrontend, connect: Factory) -> None:
    gate = Gate()
    conn = connect(gate)
    await handshake(fe, conn)
    fe.send(request(1))
    await until(lambda: bool(gate.started))
    conn.drain()
    await asyncio.wait_for(conn.finish_streams(0.01), 5)
    assert not conn.tasks
    await fe.expect(ev.Drain)
    event = await fe.expect(ev.Reset)
    assert (event.stream_id, event.code) == (1, ResetCode.CANCELLED)


async def test_websocket_is_not_accepted_until_announced(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect()
    await handshake(fe, conn)
    fe.send(ev.WsConnect(1, "ws", "1.1", b"/ws", b"", "", (), None, None, (), {}))
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (1, ResetCode.PROTOCOL_ERROR)


# ---------------------------------------------------------------- found by the rogue-front-end fuzz


async def test_a_tls_extension_that_is_not_a_map_resets_the_stream(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    """It used to raise TypeError out of the socket callback: the batch's other events were lost with it
    and the stream never answered."""
    conn = connect()
    await handshake(fe, conn, features=("http", "websocket"))
    bad = ev.Request(1, "GET", "https", "1.1", b"/", b"", "", (), None, None, b"", False, False, {"tls": 5})
    bad_ws = ev.WsConnect(2, "wss", "1.1", b"/ws", b"", "", (), None, None, (), {"tls": "x"})
    fe.send(bad, bad_ws, request(3))
    first, second = await fe.expect(ev.Reset), await fe.expect(ev.Reset)
    assert (first.stream_id, first.code) == (1, ResetCode.PROTOCOL_ERROR) and "tls" in first.reason
    assert (second.stream_id, second.code) == (2, ResetCode.PROTOCOL_ERROR)
    assert (await fe.expect(ev.Response)).stream_id == 3  # the rest of the batch goes on


async def test_a_stray_refuse_is_ignored(fe: ScriptedFrontend, connect: Factory) -> None:
    """REFUSE answers HELLO (Rule 6); one while welcomed used to make the worker exit."""
    conn = connect()
    await handshake(fe, conn)
    fe.send(ev.Refuse(0, "changed my mind"), request(1))
    assert (await fe.expect(ev.Response)).stream_id == 1
    assert conn.phase is ConnPhase.READY and not conn.refused.is_set()
