"""A scripted front end: a real ROUTER speaking the wire codec directly, driven by the test."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from appserver.connection import FrontendConnection
from wire import codec
from wire import events as ev

WAIT_S = 5.0
WS_FEATURES = ("http", "trailers", "websocket", "ws-denial")

Factory = Callable[..., FrontendConnection]  # the ``connect`` fixture (conftest.py)


class ScriptedFrontend:
    """Receives whole messages from workers and lets the test send events back.

    ``peer`` is the routing id of the last worker connection heard from;
    ``send`` goes there unless told otherwise.
    """

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.sock.bind(endpoint)
        self.peer: bytes | None = None
        self._pending: deque[tuple[bytes, Any]] = deque()

    def close(self) -> None:
        self.sock.close(linger=0)

    # ------------------------------------------------------------ sending

    def send(self, *events: Any, peer: bytes | None = None) -> None:
        self.send_frames(codec.encode(list(events)), peer=peer)

    def send_frames(self, frames: list[Any], *, peer: bytes | None = None) -> None:
        target = peer if peer is not None else self.peer
        assert target is not None, "no worker has spoken yet"
        self.sock.send_multipart([target, *frames])

    def welcome(self, *, heartbeat_ms: int = 1000, liveness: int = 3, window_bytes: int = 1 << 20,
                features: tuple[str, ...] = ("http", "trailers")) -> None:  # fmt: skip
        self.send(ev.Welcome(0, "fe-test", heartbeat_ms, liveness, window_bytes, 1 << 20, features))

    # ------------------------------------------------------------ receiving

    async def next_event(self, *, timeout_s: float = WAIT_S, skip_heartbeats: bool = True) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            while not self._pending:
                await self._fill(deadline)
            peer, event = self._pending.popleft()
            self.peer = peer
            if not (skip_heartbeats and type(event) is ev.Heartbeat):
                return event

    async def expect(self, kind: type, *, timeout_s: float = WAIT_S, skip_heartbeats: bool = True) -> Any:
        event = await self.next_event(timeout_s=timeout_s, skip_heartbeats=skip_heartbeats)
        assert type(event) is kind, f"expected {kind.__name__}, got {event!r}"
        return event

    async def until(self, kind: type, *, limit: int = 50) -> list[Any]:
        """Events up to and including the next ``kind`` (heartbeats skipped); at most ``limit``."""
        events: list[Any] = []
        while len(events) < limit:
            events.append(await self.next_event())
            if type(events[-1]) is kind:
                return events
        raise AssertionError(f"no {kind.__name__} in {limit} events: {events!r:.500}")

    async def _fill(self, deadline: float) -> None:
        frames = await self._recv_frames(deadline)
        peer, body = frames[0], frames[1:]
        for event in codec.decode(body):
            self._pending.append((peer, event))

    async def _recv_frames(self, deadline: float) -> list[bytes]:
        loop = asyncio.get_running_loop()
        fd = self.sock.getsockopt(zmq.FD)
        while True:
            try:
                return self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("the worker sent nothing in time")
            readable = loop.create_future()
            loop.add_reader(fd, _resolve, readable)
            try:
                if not self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    # The FD is edge-triggered; re-check now and then rather than trust one edge.
                    await asyncio.wait({readable}, timeout=min(remaining, 0.05))
            finally:
                loop.remove_reader(fd)


async def echo_path_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"x-path", scope["path"].encode())]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


def request(stream_id: int, path: bytes = b"/path") -> ev.Request:
    return ev.Request(stream_id, "GET", "http", "1.1", path, b"", "", (), None, None, b"", False, False, {})


def ws_connect(stream_id: int, path: bytes = b"/ws", subprotocols: tuple[str, ...] = ()) -> ev.WsConnect:
    return ev.WsConnect(stream_id, "ws", "1.1", path, b"", "", (), None, None, subprotocols, {})


async def handshake(fe: ScriptedFrontend, conn: FrontendConnection, **welcome: Any) -> ev.Hello:
    hello = await fe.expect(ev.Hello)
    fe.welcome(**welcome)
    await asyncio.wait_for(conn.welcomed.wait(), WAIT_S)
    return hello


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
