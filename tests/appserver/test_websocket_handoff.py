"""The handoff extension on the worker: WebSocketCycle units, then through FrontendConnection."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from appserver.stream import ClientDisconnected, StreamSettings
from appserver.websocket import MAX_HANDOFF_STATE_BYTES, Handoff, WebSocketCycle
from wire import ResetCode
from wire import events as ev

from .helpers import WS_ACCEPT, make_connect, settle, until, ws_errors, ws_text
from .scripted import WS_FEATURES, Factory, ScriptedFrontend, handshake, ws_connect

EXT = "zasgi.websocket.handoff"
OPT_IN = {"type": "websocket.accept", EXT: True}
HANDOFF = {"type": EXT}
COST = 32  # Rule 15: a WS_MESSAGE costs len(data) + 32


class Harness:
    """A WebSocketCycle with feature "handoff" agreed; emitted events land in a list."""

    def __init__(self, opener: Any = None, *, handoff: bool = True, window: int = 10_000) -> None:
        self.emitted: list[Any] = []
        self.draining = False
        settings = StreamSettings(request_window_bytes=window, response_window_bytes=1 << 20,
                                  request_slack_bytes=1 << 20, handoff=handoff)  # fmt: skip
        self.cycle = WebSocketCycle(opener or make_connect(), emit=self.emitted.append, settings=settings,
                                    draining=lambda: self.draining)  # fmt: skip
        self.task: asyncio.Task[None] | None = None

    def start(self, app: Any) -> None:
        self.task = asyncio.get_running_loop().create_task(self.cycle.run(app))

    async def finish(self) -> list[Any]:
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
        return self.emitted

    def message(self, text: str) -> None:
        self.cycle.feed(ev.WsMessage(self.cycle.stream_id, True, text.encode()))


class Counter:
    """The probe's /ws/handoff in miniature: counts texts, hands off {"n": count}."""

    def __init__(self, *, opt_in: bool = True) -> None:
        self.opt_in = opt_in
        self.scope: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []
        self.after: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        assert (await receive())["type"] == "websocket.connect"
        n = ((scope["extensions"].get(EXT) or {}).get("state") or {}).get("n", 0)
        await send(OPT_IN if self.opt_in else WS_ACCEPT)
        while True:
            message = await receive()
            self.seen.append(message)
            if message["type"] == EXT:
                await send({"type": EXT, "state": {"n": n, "list": [1, 2]}})
                self.after.append(await receive())
                with pytest.raises(ClientDisconnected):
                    await send(ws_text("too late"))
                return
            if message["type"] == "websocket.disconnect":
                return
            n += 1
            await send(ws_text(f"{n}:{message['text']}"))


# ---------------------------------------------------------------- the extension in the scope


@pytest.mark.parametrize("agreed", [True, False])
async def test_scope_has_the_extension_only_when_agreed(agreed: bool) -> None:
    h = Harness(handoff=agreed)
    assert (EXT in h.cycle.scope["extensions"]) is agreed
    if agreed:
        assert h.cycle.scope["extensions"][EXT] == {}


# ---------------------------------------------------------------- handing off


async def test_handoff_after_the_queued_messages_credits_exactly_what_was_consumed() -> None:
    h, app = Harness(), Counter()
    h.start(app)
    await until(lambda: h.cycle.handoff is Handoff.ARMED)
    h.message("a")
    h.message("b")
    assert h.cycle.offer_handoff() is True
    assert h.cycle.offer_handoff() is False  # once
    h.message("c")  # after the offer: behind the handoff event, never consumed
    await h.finish()
    assert [m.get("text", m["type"]) for m in app.seen] == ["a", "b", EXT]
    assert app.after == [{"type": "websocket.disconnect", "code": 1012, "reason": "handed off"}]
    out = [e for e in h.emitted if type(e) is not ev.WsAccept]
    assert out == [
        ev.WsMessage(1, True, b"1:a"),
        ev.WsMessage(1, True, b"2:b"),
        ev.Credit(1, 2 * (1 + COST)),  # a and b, not c: the front end re-delivers c
        ev.WsHandoff(1, {"n": 2, "list": [1, 2]}),
    ]
    assert h.cycle.closed and h.cycle.handoff is Handoff.HANDED_OFF


async def test_credit_already_returned_is_not_returned_twice() -> None:
    h, app = Harness(window=100), Counter()  # half the window: every message is credited at once
    h.start(app)
    await until(lambda: h.cycle.handoff is Handoff.ARMED)
    h.message("x" * 60)
    await until(lambda: bool(app.seen))
    h.cycle.offer_handoff()
    await h.finish()
    assert [e for e in h.emitted if type(e) is ev.Credit] == [ev.Credit(1, 60 + COST)]
    assert type(h.emitted[-1]) is ev.WsHandoff


async def test_app_not_opted_in_is_not_offered_and_gets_1012() -> None:
    h, app = Harness(), Counter(opt_in=False)
    h.start(app)
    await until(lambda: bool(h.emitted))
    assert h.cycle.offer_handoff() is False and h.cycle.handoff is Handoff.OFF
    assert h.cycle.going_away() is True
    assert (await h.finish())[-1] == ev.WsClose(1, 1012, "service restart")


async def test_opt_in_ignored_without_the_feature() -> None:
    h = Harness(handoff=False)
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(OPT_IN)
        try:
            await send({"type": EXT, "state": 1})
        except RuntimeError as exc:
            errors.append(exc)

    h.start(app)
    await h.finish()
    assert h.cycle.handoff is Handoff.OFF
    assert "unexpected ASGI message type" in str(errors[0])


async def test_handoff_send_before_the_offer_is_a_runtime_error() -> None:
    h = Harness()
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(OPT_IN)
        try:
            await send({"type": EXT, "state": 1})
        except RuntimeError as exc:
            errors.append(exc)

    h.start(app)
    await h.finish()
    assert "before receive() gave the handoff event" in str(errors[0])


async def test_returning_on_the_handoff_event_without_state_closes_1012() -> None:
    h = Harness()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(OPT_IN)
        assert await receive() == HANDOFF

    h.start(app)
    await until(lambda: h.cycle.handoff is Handoff.ARMED)
    h.cycle.offer_handoff()
    assert (await h.finish())[-1] == ev.WsClose(1, 1012, "service restart")


@pytest.mark.parametrize(
    "state, problem",
    [
        ("x" * MAX_HANDOFF_STATE_BYTES, "over the limit"),
        ({"s": {1, 2}}, "not msgpack-able"),
        ({1: "int key"}, "not msgpack-able"),
        (object(), "not msgpack-able"),
    ],
    ids=["too-big", "set", "int-key", "object"],
)
async def test_bad_state_closes_1011_and_logs(
    state: Any, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(OPT_IN)
        assert await receive() == HANDOFF
        await send({"type": EXT, "state": state})
        assert (await receive())["code"] == 1011

    h.start(app)
    await until(lambda: h.cycle.handoff is Handoff.ARMED)
    h.cycle.offer_handoff()
    assert (await h.finish())[-1] == ev.WsClose(1, 1011, "internal error")
    [record] = ws_errors(caplog)
    assert problem in record.getMessage()


async def test_opting_in_while_draining_is_offered_at_once() -> None:
    h, app = Harness(), Counter()
    h.draining = True
    h.start(app)
    await h.finish()
    assert app.seen == [HANDOFF] and type(h.emitted[-1]) is ev.WsHandoff


# ---------------------------------------------------------------- resuming


def resume(stream_id: int = 7, state: Any = None, subprotocol: str | None = "chat") -> ev.WsResume:
    connect = make_connect(0, subprotocols=("chat",))
    return ev.WsResume(stream_id, connect, subprotocol, state)


async def test_resumed_session_has_the_state_and_its_accept_is_swallowed() -> None:
    h, app = Harness(resume(state={"n": 41, "list": (1, 2)})), Counter()
    assert h.cycle.stream_id == 7
    h.message("held while the app starts")  # OPEN on the wire at once: no violation
    h.start(app)
    await until(lambda: bool(h.emitted))
    assert app.scope["extensions"][EXT] == {"state": {"n": 41, "list": [1, 2]}}  # arrays as lists
    assert app.scope["path"] == "/ws" and app.scope["subprotocols"] == ["chat"]
    assert h.emitted[0] == ev.WsMessage(7, True, b"42:held while the app starts")  # no WS_ACCEPT
    assert h.cycle.handoff is Handoff.ARMED
    h.cycle.feed(ev.WsClose(7, 1000, ""))
    await h.finish()


async def test_resumed_session_before_accept() -> None:
    h = Harness(resume())
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert await receive() == {"type": "websocket.connect"}
        try:
            await send(ws_text("before accept"))
        except RuntimeError as exc:
            errors.append(exc)
        await send({"type": "websocket.close", "code": 4003, "reason": "go away"})

    h.start(app)
    assert await h.finish() == [ev.WsClose(7, 4003, "go away")]  # the client is closed normally
    assert "not accepted yet" in str(errors[0])


async def test_resumed_app_returning_without_accept_closes(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(resume())
    h.start(lambda scope, receive, send: receive())
    assert await h.finish() == [ev.WsClose(7, 1000, "")]
    assert len(ws_errors(caplog)) == 1


# ---------------------------------------------------------------- through FrontendConnection

HANDOFF_FEATURES = (*WS_FEATURES, "handoff")


async def test_drain_hands_off_and_refuses_resumes(
    fe: ScriptedFrontend, connect: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "appserver.routing")
    plain, counter = Counter(opt_in=False), Counter()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await (counter if scope["path"] == "/handoff" else plain)(scope, receive, send)

    conn = connect(app, ws_capacity=4)
    hello = await handshake(fe, conn, features=HANDOFF_FEATURES)
    assert "handoff" in hello.features
    fe.send(ws_connect(1, b"/handoff"), ws_connect(2, b"/plain"))
    assert {(await fe.expect(ev.WsAccept)).stream_id for _ in range(2)} == {1, 2}
    fe.send(ev.WsMessage(1, True, b"one"))
    assert await fe.expect(ev.WsMessage) == ev.WsMessage(1, True, b"1:one")
    assert await fe.expect(ev.Credit) == ev.Credit(1, 3 + COST)  # the app went idle: credit flushed
    conn.drain()
    await fe.expect(ev.Drain)
    finishing = asyncio.ensure_future(conn.finish_streams(0.3))
    assert await fe.expect(ev.WsHandoff) == ev.WsHandoff(1, {"n": 1, "list": (1, 2)})  # at once, no grace
    fe.send(ev.WsMessage(1, True, b"straggler"))  # crossed the WS_HANDOFF: dropped, no RESET
    fe.send(ev.WsResume(3, ws_connect(0), None, {"n": 1}))
    assert await fe.expect(ev.Reset) == ev.Reset(3, ResetCode.REFUSED, "worker draining")
    assert (await fe.until(ev.WsClose))[-1] == ev.WsClose(2, 1012, "service restart")  # after the grace
    await asyncio.wait_for(finishing, 5)
    assert counter.seen[-1] == HANDOFF and not conn.tasks
    assert "offered 1 WebSocket(s)" in caplog.text


async def test_resume_opens_a_session(fe: ScriptedFrontend, connect: Factory) -> None:
    counter = Counter()
    conn = connect(counter, ws_capacity=4)
    await handshake(fe, conn, features=HANDOFF_FEATURES)
    fe.send(ev.WsResume(5, ws_connect(0), None, {"n": 9}), ev.WsMessage(5, True, b"re-delivered"))
    assert await fe.expect(ev.WsMessage) == ev.WsMessage(5, True, b"10:re-delivered")
    fe.send(ev.WsClose(5, 1000, ""))
    await until(lambda: not conn.tasks)
    await settle()


async def test_resume_needs_the_feature(fe: ScriptedFrontend, connect: Factory) -> None:
    conn = connect(Counter(), ws_capacity=4)
    await handshake(fe, conn, features=WS_FEATURES)  # no "handoff"
    fe.send(ev.WsResume(1, ws_connect(0), None, None))
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (1, ResetCode.PROTOCOL_ERROR)
