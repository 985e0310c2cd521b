"""WebSocketCycle driven through its seams: handshake, messages, flow control. No sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appserver.stream import ClientDisconnected
from appserver.websocket import IDLE_CREDIT_DELAY_S, IdleCredit
from wire import ProtocolViolation, ResetCode, WsState
from wire import events as ev

from .helpers import (
    WS_ACCEPT,
    WsHarness,
    accept_then,
    make_connect,
    settle,
    until,
    ws_bytes,
    ws_errors,
    ws_text,
)

# ---------------------------------------------------------------- handshake


async def test_scope_and_accept_with_subprotocol_and_headers() -> None:
    h = WsHarness(make_connect(subprotocols=("chat", "superchat")), state={"db": 1})
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-room", b"1")]})
        await send({"type": "websocket.close"})

    await h.run(app)
    scope = seen[0]
    assert (scope["type"], scope["scheme"], scope["path"], scope["raw_path"]) == (
        "websocket",
        "ws",
        "/ws",
        b"/ws",
    )
    assert scope["query_string"] == b"room=1" and scope["root_path"] == ""
    assert scope["headers"] == [(b"host", b"example.test"), (b"origin", b"x")]
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["client"] == ["127.0.0.1", 5555] and scope["server"] == ["127.0.0.1", 8000]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["state"] == {"db": 1} and scope["asgi"]["spec_version"] == "2.5"
    assert h.emitted == [ev.WsAccept(1, "chat", ((b"x-room", b"1"),)), ev.WsClose(1, 1000, "")]
    assert h.closed == [h.cycle]


async def test_no_denial_extension_unless_negotiated() -> None:
    h = WsHarness(ws_denial=False)
    assert "websocket.http.response" not in h.cycle.scope["extensions"]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with pytest.raises(RuntimeError, match="unexpected ASGI message type"):
            await send({"type": "websocket.http.response.start", "status": 403})
        await send({"type": "websocket.close"})

    assert await h.run(app) == [ev.WsClose(1, 1000, "")]


async def test_close_before_accept_is_a_rejection() -> None:
    h = WsHarness()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4003, "reason": "no"})
        assert await receive() == {"type": "websocket.disconnect", "code": 4003, "reason": "no"}

    assert await h.run(app) == [ev.WsClose(1, 4003, "no")]  # no WS_ACCEPT: the front end answers 403
    assert h.cycle.state is WsState.CLOSED


async def test_denial_response_is_coalesced_like_http() -> None:
    h = WsHarness()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"x-why", b"auth")]})
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})
        with pytest.raises(RuntimeError):
            await send(WS_ACCEPT)

    assert await h.run(app) == [
        ev.Response(1, 401, ((b"x-why", b"auth"),), b"who ", True, False),
        ev.Body(1, b"are you?", False),
    ]
    assert h.closed == [h.cycle]


async def test_denial_body_before_start_and_accept_during_denial_are_errors() -> None:
    h = WsHarness()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with pytest.raises(RuntimeError, match="before websocket.http.response.start"):
            await send({"type": "websocket.http.response.body", "body": b"x"})
        await send({"type": "websocket.http.response.start", "status": 403})
        with pytest.raises(RuntimeError, match="denied"):
            await send(WS_ACCEPT)
        await send({"type": "websocket.http.response.body", "body": b""})

    assert await h.run(app) == [ev.Response(1, 403, (), b"", False, False)]


# ---------------------------------------------------------------- messages


async def test_text_and_bytes_both_ways() -> None:
    h = WsHarness()
    got: list[Any] = []

    async def body(receive: Any, send: Any) -> None:
        got.extend([await receive(), await receive()])
        await send(ws_text("héllo"))
        await send(ws_bytes(b"\x00\xff"))
        await send({"type": "websocket.send", "bytes": None, "text": "both keys"})

    await accept_then(h, body)
    h.cycle.feed(ev.WsMessage(1, True, "ünïcode".encode()))
    h.cycle.feed(ev.WsMessage(1, False, b"\x01\x02"))
    await h.finish()
    assert got == [
        {"type": "websocket.receive", "text": "ünïcode"},
        {"type": "websocket.receive", "bytes": b"\x01\x02"},
    ]
    assert h.of(ev.WsMessage) == [
        ev.WsMessage(1, True, "héllo".encode()),
        ev.WsMessage(1, False, b"\x00\xff"),
        ev.WsMessage(1, True, b"both keys"),
    ]
    assert h.emitted[-1] == ev.WsClose(1, 1000, "")  # returned after accept: a normal close


@pytest.mark.parametrize("size", [0, 1 << 20], ids=["empty", "1MiB"])
async def test_empty_and_one_mebibyte_messages(size: int) -> None:
    h = WsHarness(request_window_bytes=2 << 20, response_window_bytes=2 << 20)
    data = bytes(range(256)) * (size // 256)
    got: list[Any] = []

    async def body(receive: Any, send: Any) -> None:
        got.append(await receive())
        await send(ws_bytes(data))
        await send(ws_text(""))

    await accept_then(h, body)
    h.cycle.feed(ev.WsMessage(1, False, data))
    await h.finish()
    assert got == [{"type": "websocket.receive", "bytes": data}]
    assert h.of(ev.WsMessage) == [ev.WsMessage(1, False, data), ev.WsMessage(1, True, b"")]


async def test_bad_sends_raise_runtime_error() -> None:
    h = WsHarness(max_payload_bytes=100)
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in (ws_text("early"), {"type": "http.response.start", "status": 200}):
            with pytest.raises(RuntimeError) as info:
                await send(message)
            errors.append(str(info.value))
        await send(WS_ACCEPT)
        bad = [WS_ACCEPT, {"type": "websocket.send"}, {"type": "websocket.send", "text": "a", "bytes": b"b"},
               ws_bytes(b"x" * 101), {"type": "websocket.close", "code": 999}]  # fmt: skip
        for message in bad:
            with pytest.raises(RuntimeError):
                await send(message)
        await send({"type": "websocket.close", "reason": None})
        for message in (ws_text("late"), WS_ACCEPT, {"type": "websocket.close"}):
            with pytest.raises(RuntimeError, match="after the WebSocket closed"):
                await send(message)

    await h.run(app)
    assert "not accepted yet" in errors[0] and "unexpected ASGI message type" in errors[1]
    assert h.emitted == [ev.WsAccept(1, None, ()), ev.WsClose(1, 1000, "")]


async def test_text_that_is_not_utf8_is_a_protocol_violation() -> None:
    h = WsHarness()
    await accept_then(h, lambda receive, send: receive())
    with pytest.raises(ProtocolViolation):
        h.cycle.feed(ev.WsMessage(1, True, b"\xff\xfe"))
    h.cycle.abort(ResetCode.PROTOCOL_ERROR, "bad text")
    await h.finish()
    assert h.emitted[-1] == ev.Reset(1, ResetCode.PROTOCOL_ERROR, "bad text")


async def test_message_before_accept_is_a_protocol_violation() -> None:
    h = WsHarness()
    with pytest.raises(ProtocolViolation):
        h.cycle.feed(ev.WsMessage(1, False, b"too soon"))


# ---------------------------------------------------------------- flow control


async def test_send_waits_for_credit() -> None:
    h = WsHarness(response_window_bytes=100)
    sent: list[int] = []

    async def body(receive: Any, send: Any) -> None:
        for i in range(3):
            await send(ws_bytes(b"x" * 60))  # cost 92 each (Rule 15)
            sent.append(i)

    await accept_then(h, body)
    await settle()
    assert sent == [0, 1]  # 100 -> 8 (still open) -> -84 (Rule 16: one event over), then it waits
    h.cycle.feed(ev.Credit(1, 50))  # -34: still closed
    await settle()
    assert sent == [0, 1] and len(h.of(ev.WsMessage)) == 2
    h.cycle.feed(ev.Credit(1, 1000))
    await h.finish()
    assert sent == [0, 1, 2]


async def test_waiting_send_raises_client_disconnected_when_the_client_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = WsHarness(response_window_bytes=1)
    raised: list[BaseException] = []

    async def body(receive: Any, send: Any) -> None:
        await send(ws_bytes(b"first"))
        try:
            await send(ws_bytes(b"parked"))
        except ClientDisconnected as exc:
            raised.append(exc)
            raise

    await accept_then(h, body)
    await until(lambda: len(h.of(ev.WsMessage)) == 1)
    h.cycle.feed(ev.WsClose(1, 1001, "going away"))
    await h.finish()
    assert len(raised) == 1 and isinstance(raised[0], OSError)
    assert ws_errors(caplog) == []  # a client leaving is not an error
    assert h.emitted[-1] == ev.WsMessage(1, False, b"first")  # nothing after the client's close


async def test_credit_goes_back_as_the_app_receives_batched_then_flushed_when_idle() -> None:
    h = WsHarness(request_window_bytes=1000)
    release = asyncio.Event()
    got: list[Any] = []

    async def body(receive: Any, send: Any) -> None:
        await release.wait()
        for _ in range(4):
            got.append(await receive())
        await receive()  # idle now: the rest of the credit goes back

    await accept_then(h, body)
    for _ in range(4):
        h.cycle.feed(ev.WsMessage(1, False, b"x" * 168))  # cost 200 each
    release.set()
    await until(lambda: sum(c.bytes for c in h.of(ev.Credit)) == 800)
    assert [c.bytes for c in h.of(ev.Credit)] == [600, 200]  # half the window, then the idle flush
    h.cycle.feed(ev.WsClose(1, 1000, ""))
    await h.finish()


async def test_an_echoing_app_credits_its_idle_leftovers_in_one_sweep_not_per_message() -> None:
    h = WsHarness(request_window_bytes=1000, idle_credit=IdleCredit(asyncio.get_running_loop()))

    async def body(receive: Any, send: Any) -> None:
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "bytes": message["bytes"]})

    await accept_then(h, body)
    for i in range(1, 6):  # each one received and echoed before the next: the app goes idle 5 times
        h.cycle.feed(ev.WsMessage(1, False, b"x" * 8))  # cost 40
        await until(lambda: len(h.of(ev.WsMessage)) == i)
        await settle()
    assert len(h.of(ev.WsMessage)) == 5 and h.of(ev.Credit) == []  # not one CREDIT per message
    await asyncio.sleep(IDLE_CREDIT_DELAY_S * 2)
    assert h.of(ev.Credit) == [ev.Credit(1, 5 * 40)]  # everything consumed, in one sweep
    h.cycle.feed(ev.WsClose(1, 1000, ""))
    await h.finish()


async def test_a_peer_overrunning_the_window_is_a_protocol_violation() -> None:
    h = WsHarness(request_window_bytes=100, max_payload_bytes=10)
    await accept_then(h, lambda receive, send: asyncio.Event().wait())
    h.cycle.feed(ev.WsMessage(1, False, b"x" * 60))  # 92
    with pytest.raises(ProtocolViolation):
        h.cycle.feed(ev.WsMessage(1, False, b"x" * 60))  # 184 > 100 + 10
    h.cycle.abort(ResetCode.PROTOCOL_ERROR, "overrun")
    h.task.cancel()  # type: ignore[union-attr]
    with pytest.raises(asyncio.CancelledError):
        await h.finish()
