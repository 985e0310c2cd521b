"""WebSocketCycle: closing from either side, and how the app's end reaches the wire. No sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appserver.stream import ClientDisconnected
from wire import ResetCode
from wire import events as ev

from .helpers import (
    WsHarness,
    accept_then,
    settle,
    ws_errors,
    ws_text,
)

# ---------------------------------------------------------------- closing


async def test_client_close_code_and_reason_reach_the_app_after_queued_messages() -> None:
    h = WsHarness()
    got: list[Any] = []

    async def body(receive: Any, send: Any) -> None:
        got.extend([await receive(), await receive()])
        with pytest.raises(ClientDisconnected):
            await send(ws_text("too late"))

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
            await send(ws_text("anyone?"))

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
    [record] = ws_errors(caplog)
    assert record.exc_info is not None and record.exc_info[0] is ValueError


async def test_exception_after_accept_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def body(receive: Any, send: Any) -> None:
        raise KeyError("boom")

    h = WsHarness()
    await accept_then(h, body)
    await h.finish()
    assert h.emitted == [ev.WsAccept(1, None, ()), ev.WsClose(1, 1011, "internal error")]
    assert len(ws_errors(caplog)) == 1


async def test_exception_during_denial_resets(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.http.response.start", "status": 403})
        await asyncio.sleep(0)  # the start leaves alone on the next tick
        raise RuntimeError("half a denial")

    h = WsHarness()
    emitted = await h.run(app)
    assert emitted[-1] == ev.Reset(1, ResetCode.APP_ERROR, "app raised RuntimeError")
    assert len(ws_errors(caplog)) == 1


async def test_return_without_accept_rejects(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    h = WsHarness()
    assert await h.run(app) == [ev.WsClose(1, 1000, "")]  # before accept: the front end answers 403
    assert len(ws_errors(caplog)) == 1


async def test_return_after_accept_closes_normally(caplog: pytest.LogCaptureFixture) -> None:
    h = WsHarness()
    await accept_then(h, lambda receive, send: asyncio.sleep(0))
    assert await h.finish() == [ev.WsAccept(1, None, ()), ev.WsClose(1, 1000, "")]
    assert ws_errors(caplog) == []


async def test_send_after_disconnect_raises_client_disconnected_and_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = WsHarness()

    async def body(receive: Any, send: Any) -> None:
        while (await receive())["type"] != "websocket.disconnect":
            pass
        await send(ws_text("into the void"))  # uncaught, like a careless app

    await accept_then(h, body)
    h.cycle.feed(ev.WsClose(1, 1001, ""))
    await h.finish()
    assert ws_errors(caplog) == []
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
