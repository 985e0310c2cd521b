"""WebSocketCycle driven through its seams: feed() in, a list-collector emit out. No sockets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from appserver.stream import ClientDisconnected
from wire import ProtocolViolation, ResetCode, WsState
from wire import events as ev

from .helpers import WsHarness, make_connect, settle, until

ACCEPT = {"type": "websocket.accept"}


def text(data: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": data}


def binary(data: bytes) -> dict[str, Any]:
    return {"type": "websocket.send", "bytes": data}


def app_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "appserver.websocket" and r.levelno >= logging.ERROR]


async def accept_then(h: WsHarness, body: Any) -> None:
    """Start an app that accepts, then runs ``body(receive, send)``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert await receive() == {"type": "websocket.connect"}
        await send(ACCEPT)
        await body(receive, send)

    h.start(app)
    await until(lambda: bool(h.of(ev.WsAccept)))


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
            await send(ACCEPT)

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
            await send(ACCEPT)
        await send({"type": "websocket.http.response.body", "body": b""})

    assert await h.run(app) == [ev.Response(1, 403, (), b"", False, False)]


# ---------------------------------------------------------------- messages


async def test_text_and_bytes_both_ways() -> None:
    h = WsHarness()
    got: list[Any] = []

    async def body(receive: Any, send: Any) -> None:
        got.extend([await receive(), await receive()])
        await send(text("héllo"))
        await send(binary(b"\x00\xff"))
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
        await send(binary(data))
        await send(text(""))

    await accept_then(h, body)
    h.cycle.feed(ev.WsMessage(1, False, data))
    await h.finish()
    assert got == [{"type": "websocket.receive", "bytes": data}]
    assert h.of(ev.WsMessage) == [ev.WsMessage(1, False, data), ev.WsMessage(1, True, b"")]


async def test_bad_sends_raise_runtime_error() -> None:
    h = WsHarness(max_payload_bytes=100)
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in (text("early"), {"type": "http.response.start", "status": 200}):
            with pytest.raises(RuntimeError) as info:
                await send(message)
            errors.append(str(info.value))
        await send(ACCEPT)
        bad = [ACCEPT, {"type": "websocket.send"}, {"type": "websocket.send", "text": "a", "bytes": b"b"},
               binary(b"x" * 101), {"type": "websocket.close", "code": 999}]  # fmt: skip
        for message in bad:
            with pytest.raises(RuntimeError):
                await send(message)
        await send({"type": "websocket.close", "reason": None})
        for message in (text("late"), ACCEPT, {"type": "websocket.close"}):
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
            await send(binary(b"x" * 60))  # cost 92 each (Rule 15)
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
        await send(binary(b"first"))
        try:
            await send(binary(b"parked"))
        except ClientDisconnected as exc:
            raised.append(exc)
            raise

    await accept_then(h, body)
    await until(lambda: len(h.of(ev.WsMessage)) == 1)
    h.cycle.feed(ev.WsClose(1, 1001, "going away"))
    await h.finish()
    assert len(raised) == 1 and isinstance(raised[0], OSError)
    assert app_errors(caplog) == []  # a client leaving is not an error
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


# ---------------------------------------------------------------- closing


async def test_client_close_code_and_reason_reach_the_app_after_queued_messages() -> None:
    h = WsHarness()
    got: list[Any] = []

    async def body(receive: Any, send: Any) -> None:
        got.extend([await receive(), await receive()])
        with pytest.raises(ClientDisconnected):
            await send(text("too late"))

    await accept_then(h, body)
    h.cycle.feed(ev.WsMessage(1, True, b"last words"))
    h.cycle.feed(ev.WsClose(1, 4001, "done here"))
    assert h.closed == [h.cycle]
    await h.finish()
    assert got == [
        {"type": "websocket.receive", "text": "last words"},
        {"type": "websocket.disconnect", "code": 4001, "reason": "done here"},
    ]
    assert h.emitted == [ev.WsAccept(1, None, ())]  # the stream is closed: nothing more goes out


async def test_app_close_code_and_reason() -> None:
    h = WsHarness()

    async def body(receive: Any, send: Any) -> None:
        await send({"type": "websocket.close", "code": 4000, "reason": "bye now"})
        assert await receive() == {"type": "websocket.disconnect", "code": 4000, "reason": "bye now"}

    await accept_then(h, body)
    await h.finish()
    assert h.emitted[-1] == ev.WsClose(1, 4000, "bye now")


@pytest.mark.parametrize("how", ["reset", "lost"])
async def test_reset_or_lost_front_end_is_disconnect_1006(how: str) -> None:
    h = WsHarness()
    got: list[Any] = []

    async def body(receive: Any, send: Any) -> None:
        got.append(await receive())
        with pytest.raises(ClientDisconnected):
            await send(text("anyone?"))

    await accept_then(h, body)
    if how == "reset":
        h.cycle.feed(ev.Reset(1, ResetCode.CANCELLED, "client vanished"))
    else:
        h.cycle.fail_locally("front end lost")
    await h.finish()
    assert got == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert h.emitted == [ev.WsAccept(1, None, ())]


async def test_going_away_closes_with_1012_and_the_app_sees_it() -> None:
    h = WsHarness()
    got: list[Any] = []
    await accept_then(h, lambda receive, send: _record(receive, got))
    assert h.cycle.going_away() is True
    assert h.cycle.going_away() is False  # once only
    await h.finish()
    assert got[-1] == {"type": "websocket.disconnect", "code": 1012, "reason": "service restart"}
    assert h.emitted[-1] == ev.WsClose(1, 1012, "service restart")


async def _record(receive: Any, got: list[Any]) -> None:
    got.append(await receive())


# ---------------------------------------------------------------- how the app ends


async def test_exception_before_accept_resets_with_app_error(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    h = WsHarness()
    assert await h.run(app) == [ev.Reset(1, ResetCode.APP_ERROR, "app raised ValueError")]
    [record] = app_errors(caplog)
    assert record.exc_info is not None and record.exc_info[0] is ValueError


async def test_exception_after_accept_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def body(receive: Any, send: Any) -> None:
        raise KeyError("boom")

    h = WsHarness()
    await accept_then(h, body)
    await h.finish()
    assert h.emitted == [ev.WsAccept(1, None, ()), ev.WsClose(1, 1011, "internal error")]
    assert len(app_errors(caplog)) == 1


async def test_exception_during_denial_resets(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.http.response.start", "status": 403})
        await asyncio.sleep(0)  # the start leaves alone on the next tick
        raise RuntimeError("half a denial")

    h = WsHarness()
    emitted = await h.run(app)
    assert emitted[-1] == ev.Reset(1, ResetCode.APP_ERROR, "app raised RuntimeError")
    assert len(app_errors(caplog)) == 1


async def test_return_without_accept_rejects(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    h = WsHarness()
    assert await h.run(app) == [ev.WsClose(1, 1000, "")]  # before accept: the front end answers 403
    assert len(app_errors(caplog)) == 1


async def test_return_after_accept_closes_normally(caplog: pytest.LogCaptureFixture) -> None:
    h = WsHarness()
    await accept_then(h, lambda receive, send: asyncio.sleep(0))
    assert await h.finish() == [ev.WsAccept(1, None, ()), ev.WsClose(1, 1000, "")]
    assert app_errors(caplog) == []


async def test_send_after_disconnect_raises_client_disconnected_and_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = WsHarness()

    async def body(receive: Any, send: Any) -> None:
        while (await receive())["type"] != "websocket.disconnect":
            pass
        await send(text("into the void"))  # uncaught, like a careless app

    await accept_then(h, body)
    h.cycle.feed(ev.WsClose(1, 1001, ""))
    await h.finish()
    assert app_errors(caplog) == []
    assert h.emitted == [ev.WsAccept(1, None, ())]


async def test_cancelled_app_closes_an_open_websocket_with_1012() -> None:
    h = WsHarness()
    await accept_then(h, lambda receive, send: asyncio.Event().wait())
    h.task.cancel()  # type: ignore[union-attr]
    with pytest.raises(asyncio.CancelledError):
        await h.finish()
    assert h.emitted[-1] == ev.WsClose(1, 1012, "service restart")


async def test_cancelled_before_accept_resets() -> None:
    h = WsHarness()
    h.start(lambda scope, receive, send: asyncio.Event().wait())
    await settle()
    h.task.cancel()  # type: ignore[union-attr]
    with pytest.raises(asyncio.CancelledError):
        await h.finish()
    assert h.emitted == [ev.Reset(1, ResetCode.CANCELLED, "worker stopped the WebSocket")]
