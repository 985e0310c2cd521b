"""ScriptedWorker: a real ZeroMQ DEALER speaking wire, driven step by step by a test.

It plays an app-server worker against an in-process front end: it says HELLO
(unless told not to), heartbeats on its own while ``heartbeats`` is on, and
otherwise does only what the test tells it. Received events are kept in
order; ``expect`` waits (bounded) for the next one of a kind. For WebSocket
tests give it ``ws_capacity`` and the "websocket" feature; ``ws_open`` accepts
the next WS_CONNECT.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Any

import zmq

import wire
from wire import events as ev
from wire.channel import Channel, configure_dealer

DEFAULT_TIMEOUT_S = 5.0
_ids = iter(range(1, 1_000_000))


class ScriptedWorker:
    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        *,
        worker_id: str | None = None,
        capacity: int = 16,
        ws_capacity: int = 0,
        window_bytes: int = 256 * 1024,
        features: tuple[str, ...] = ("http", "trailers", "pathsend"),
        protocol: int = wire.PROTOCOL_VERSION,
    ) -> None:
        self.worker_id = worker_id or f"scripted-{next(_ids)}"
        self.capacity = capacity
        self.ws_capacity = ws_capacity
        self.window_bytes = window_bytes
        self.features = features
        self.protocol = protocol
        self.received: deque[Any] = deque()
        self.welcome: ev.Welcome | None = None
        self.heartbeats = True
        self.sock = ctx.socket(zmq.DEALER)
        configure_dealer(self.sock, routing_id=f"{self.worker_id}-{os.getpid()}".encode())
        self.sock.connect(endpoint)
        self.channel = Channel(
            self.sock, routed=False, on_events=self._on_events, on_bad_message=self._on_bad_message
        )
        self._changed: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ script

    async def hello(self) -> ev.Welcome | ev.Refuse:
        self.send(ev.Hello(0, self.protocol, self.worker_id, os.getpid(), self.capacity, self.ws_capacity,
                           self.window_bytes, self.features, {"app": "scripted"}))  # fmt: skip
        reply = await self.expect(ev.Welcome, ev.Refuse)
        if type(reply) is ev.Welcome:
            self.welcome = reply
            self._schedule_heartbeat()
        return reply

    def send(self, *events: Any) -> None:
        for event in events:
            self.channel.post(event)

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    async def expect(self, *kinds: type, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """The next received event of one of ``kinds``; heartbeats are skipped unless asked for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self.received:
                event = self.received.popleft()
                if type(event) in kinds:
                    return event
                if type(event) is not ev.Heartbeat:
                    raise AssertionError(f"expected {[k.__name__ for k in kinds]}, got {event!r}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {[k.__name__ for k in kinds]} within {timeout}s")
            self._changed = loop.create_future()
            try:
                await asyncio.wait_for(self._changed, remaining)
            except TimeoutError:
                pass
            finally:
                self._changed = None

    async def request(self, timeout: float = DEFAULT_TIMEOUT_S) -> ev.Request:
        return await self.expect(ev.Request, timeout=timeout)

    async def expect_past(self, kind: type, *passed: type, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """The next ``kind`` event, events of the ``passed`` kinds on the way skipped; all within
        ``timeout`` (however many are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(100_000):
            event = await self.expect(kind, *passed, timeout=deadline - loop.time())
            if type(event) is kind:
                return event
        raise AssertionError(f"no {kind.__name__} among 100000 events")

    def respond(self, stream_id: int, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = (),
                body: bytes = b"", *, more_body: bool = False, trailers: bool = False) -> None:  # fmt: skip
        self.send(ev.Response(stream_id, status, headers, body, more_body, trailers))

    # ------------------------------------------------------- WebSocket

    async def ws_connect(self, timeout: float = DEFAULT_TIMEOUT_S) -> ev.WsConnect:
        return await self.expect(ev.WsConnect, timeout=timeout)

    async def ws_open(self, *, subprotocol: str | None = None,
                      headers: tuple[tuple[bytes, bytes], ...] = ()) -> ev.WsConnect:  # fmt: skip
        """The next WS_CONNECT, accepted."""
        connect = await self.ws_connect()
        self.send(ev.WsAccept(connect.stream_id, subprotocol, headers))
        return connect

    def ws_send(self, stream_id: int, data: str | bytes) -> None:
        text = isinstance(data, str)
        self.send(ev.WsMessage(stream_id, text, data.encode() if isinstance(data, str) else data))

    async def ws_message(self, timeout: float = DEFAULT_TIMEOUT_S) -> ev.WsMessage:
        """The next WS_MESSAGE (CREDIT events on the way are skipped)."""
        event: ev.WsMessage = await self.expect_past(ev.WsMessage, ev.Credit, timeout=timeout)
        return event

    def go_silent(self) -> None:
        self.heartbeats = False

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.channel.close()

    # ---------------------------------------------------------- plumbing

    def _on_events(self, peer: Any, events: list[Any]) -> None:
        self.received.extend(events)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def _on_bad_message(self, peer: Any, reason: str) -> None:
        raise AssertionError(f"front end sent an undecodable message: {reason}")

    def _schedule_heartbeat(self) -> None:
        assert self.welcome is not None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.welcome.heartbeat_ms / 1000 / 2, self._heartbeat)

    def _heartbeat(self) -> None:
        if self.heartbeats:
            self.channel.post(ev.Heartbeat())
            self._schedule_heartbeat()
