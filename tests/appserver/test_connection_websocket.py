"""WebSocket streams through FrontendConnection, against the scripted front end (a real ROUTER)."""

from __future__ import annotations

import asyncio
from typing import Any

from wire import ResetCode
from wire import events as ev

from .helpers import until
from .scripted import WS_FEATURES, Factory, ScriptedFrontend, handshake, request, ws_connect


class Echo:
    """Accepts, echoes every message, records what receive() said; closes on "bye"."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.returned = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"http"})
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0]})
        try:
            while True:
                message = await receive()
                self.received.append(message)
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") == "bye":
                    await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
                    return
                await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})
        finally:
            self.returned += 1


async def test_websocket_features_announced_only_with_ws_capacity(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    conn = connect(ws_capacity=3)
    hello = await handshake(fe, conn, features=WS_FEATURES)
    assert hello.ws_capacity == 3
    assert hello.features == (
        "http", "trailers", "pathsend", "linger", "pulse", "early-hints", "websocket", "ws-denial", "handoff"
    )


async def test_accept_echo_and_close(fe: ScriptedFrontend, connect: Factory) -> None:
    app = Echo()
    conn = connect(app, ws_capacity=2)
    await handshake(fe, conn, features=WS_FEATURES)
    fe.send(ws_connect(1, subprotocols=("chat",)))
    assert await fe.expect(ev.WsAccept) == ev.WsAccept(1, "chat", ())
    fe.send(ev.WsMessage(1, True, b"hi"), ev.WsMessage(1, False, b"\x00" * 100_000))
    events = await fe.until(ev.Credit)  # the big one took over half the window: credit at once
    assert events[-1] == ev.Credit(1, 34 + 100_032)
    assert (await fe.until(ev.WsMessage))[-1] == ev.WsMessage(1, False, b"\x00" * 100_000)
    fe.send(ev.WsMessage(1, True, b"bye"))
    assert await fe.expect(ev.WsClose) == ev.WsClose(1, 4000, "bye")
    await until(lambda: conn.open_streams == 0 and not conn.tasks)
    fe.send(ev.WsMessage(1, True, b"raced the close"))  # Rule 14: dropped silently
    fe.send(request(2))
    assert (await fe.expect(ev.Response)).stream_id == 2


async def test_client_close_and_reset_reach_the_app(fe: ScriptedFrontend, connect: Factory) -> None:
    app = Echo()
    conn = connect(app, ws_capacity=2)
    await handshake(fe, conn, features=WS_FEATURES)
    fe.send(ws_connect(1), ws_connect(2))
    assert {(await fe.expect(ev.WsAccept)).stream_id for _ in range(2)} == {1, 2}
    fe.send(ev.WsClose(1, 1001, "tab closed"), ev.Reset(2, ResetCode.CANCELLED, "client vanished"))
    await until(lambda: app.returned == 2)
    assert sorted(m["code"] for m in app.received) == [1001, 1006]
    assert conn.open_streams == 0


async def test_ws_capacity_is_separate_from_http_capacity(fe: ScriptedFrontend, connect: Factory) -> None:
    app = Echo()
    conn = connect(app, capacity=1, ws_capacity=1)
    await handshake(fe, conn, features=WS_FEATURES)
    fe.send(ws_connect(1), ws_connect(2))
    events = [await fe.next_event(), await fe.next_event()]
    assert ev.WsAccept(1, None, ()) in events
    assert ev.Reset(2, ResetCode.REFUSED, "worker at capacity") in events
    fe.send(request(3))  # the WebSocket does not take the HTTP slot
    assert (await fe.expect(ev.Response)).stream_id == 3
    fe.send(ev.WsClose(1, 1000, ""))
    await until(lambda: not conn.tasks)
    fe.send(ws_connect(4))
    assert (await fe.expect(ev.WsAccept)).stream_id == 4


async def test_websocket_needs_the_feature_agreed_at_welcome(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect(Echo(), ws_capacity=2)
    await handshake(fe, conn)  # the front end did not take "websocket"
    fe.send(ws_connect(1))
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (1, ResetCode.PROTOCOL_ERROR)


async def test_illegal_event_resets_only_that_websocket(fe: ScriptedFrontend, connect: Factory) -> None:
    app = Echo()
    conn = connect(app, ws_capacity=2)
    await handshake(fe, conn, features=WS_FEATURES)
    fe.send(ws_connect(1), ws_connect(2))
    assert {(await fe.expect(ev.WsAccept)).stream_id for _ in range(2)} == {1, 2}
    fe.send(ev.Body(1, b"not here", False))
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (1, ResetCode.PROTOCOL_ERROR)
    fe.send(ev.WsMessage(2, True, b"still here"))
    assert await fe.expect(ev.WsMessage) == ev.WsMessage(2, True, b"still here")
    await until(lambda: app.returned == 1)
    assert app.received[0] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


async def test_drain_refuses_new_websockets_then_closes_open_ones_with_1012(
    fe: ScriptedFrontend, connect: Factory
) -> None:
    app = Echo()
    conn = connect(app, ws_capacity=4)
    await handshake(fe, conn, features=WS_FEATURES)
    fe.send(ws_connect(1))
    await fe.expect(ev.WsAccept)
    conn.drain()
    await fe.expect(ev.Drain)
    fe.send(ws_connect(2))  # crossed the DRAIN
    refused = await fe.expect(ev.Reset)
    assert (refused.stream_id, refused.code) == (2, ResetCode.REFUSED)
    fe.send(ev.WsMessage(1, True, b"during the grace"))
    assert await fe.expect(ev.WsMessage) == ev.WsMessage(1, True, b"during the grace")
    await asyncio.wait_for(conn.finish_streams(0.05), 5)
    assert (await fe.until(ev.WsClose))[-1] == ev.WsClose(1, 1012, "service restart")
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1012, "reason": "service restart"}
    assert app.returned == 1  # the app returned on its own: not cancelled
    assert not conn.tasks and conn.open_streams == 0
