"""Shared helpers for the appserver tests: request factories, bounded waits, a cycle harness."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from appserver.cycle import HttpCycle, StreamSettings
from appserver.websocket import IdleCredit, WebSocketCycle
from wire import events as ev

WAIT_S = 5.0


def make_request(
    stream_id: int = 1,
    *,
    method: str = "GET",
    body: bytes = b"",
    more_body: bool = False,
    expect_continue: bool = False,
    request_id: str | None = "req-1",
) -> ev.Request:
    ext = {"request_id": request_id} if request_id is not None else {}
    return ev.Request(
        stream_id, method, "http", "1.1", b"/path", b"q=1", "", ((b"Host", b"example.test"),),
        ("127.0.0.1", 5555), ("127.0.0.1", 8000), body, more_body, expect_continue, ext,
    )  # fmt: skip


async def until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached in {timeout_s}s")
        await asyncio.sleep(0)


async def settle(turns: int = 20) -> None:
    """Let every ready callback run: no I/O is involved, so a few turns suffice."""
    for _ in range(turns):
        await asyncio.sleep(0)


class CycleHarness:
    """An HttpCycle whose emitted events land in a list."""

    def __init__(
        self,
        request: ev.Request | None = None,
        *,
        request_window_bytes: int = 1000,
        response_window_bytes: int = 1 << 20,
        chunk_bytes: int = 64 * 1024,  # the tests' sizes (the default is RESPONSE_CHUNK_BYTES)
        trailers: bool = True,
        pathsend: bool = False,
        early_hints: bool = False,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.emitted: list[Any] = []
        self.closed: list[HttpCycle] = []
        settings = StreamSettings(
            request_window_bytes=request_window_bytes,
            response_window_bytes=response_window_bytes,
            chunk_bytes=chunk_bytes,
            request_slack_bytes=64 * 1024,
            trailers=trailers,
            pathsend=pathsend,
            early_hints=early_hints,
            state=state,
        )
        self.cycle = HttpCycle(
            request or make_request(),
            emit=self.emitted.append,
            settings=settings,
            on_closed=self.closed.append,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self, app: Callable[..., Any]) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(self.cycle.run(app))
        return self.task

    async def run(self, app: Callable[..., Any]) -> list[Any]:
        await asyncio.wait_for(self.start(app), WAIT_S)
        return self.emitted

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.emitted if type(e) is kind]


def make_connect(
    stream_id: int = 1, *, subprotocols: tuple[str, ...] = (), path: bytes = b"/ws"
) -> ev.WsConnect:
    return ev.WsConnect(
        stream_id, "ws", "1.1", path, b"room=1", "", ((b"Host", b"example.test"), (b"Origin", b"x")),
        ("127.0.0.1", 5555), ("127.0.0.1", 8000), subprotocols, {},
    )  # fmt: skip


class WsHarness:
    """A WebSocketCycle whose emitted events land in a list."""

    def __init__(
        self,
        connect: ev.WsConnect | None = None,
        *,
        request_window_bytes: int = 1000,
        response_window_bytes: int = 1 << 20,
        max_payload_bytes: int = 1 << 20,
        ws_denial: bool = True,
        state: dict[str, Any] | None = None,
        idle_credit: IdleCredit | None = None,
    ) -> None:
        self.emitted: list[Any] = []
        self.closed: list[WebSocketCycle] = []
        settings = StreamSettings(
            request_window_bytes=request_window_bytes,
            response_window_bytes=response_window_bytes,
            request_slack_bytes=max_payload_bytes,
            max_payload_bytes=max_payload_bytes,
            ws_denial=ws_denial,
            state=state,
        )
        self.cycle = WebSocketCycle(
            connect or make_connect(),
            emit=self.emitted.append,
            settings=settings,
            on_closed=self.closed.append,
            idle_credit=idle_credit,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self, app: Callable[..., Any]) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(self.cycle.run(app))
        return self.task

    async def run(self, app: Callable[..., Any]) -> list[Any]:
        await asyncio.wait_for(self.start(app), WAIT_S)
        return self.emitted

    async def finish(self) -> list[Any]:
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT_S)
        return self.emitted

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.emitted if type(e) is kind]


WS_ACCEPT = {"type": "websocket.accept"}


def ws_text(data: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": data}


def ws_bytes(data: bytes) -> dict[str, Any]:
    return {"type": "websocket.send", "bytes": data}


def ws_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "appserver.websocket" and r.levelno >= logging.ERROR]


async def accept_then(h: WsHarness, body: Callable[[Any, Any], Awaitable[Any]]) -> None:
    """Start an app that takes websocket.connect and accepts, then runs ``body(receive, send)``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert await receive() == {"type": "websocket.connect"}
        await send(WS_ACCEPT)
        await body(receive, send)

    h.start(app)
    await until(lambda: bool(h.of(ev.WsAccept)))
