"""WebSocket upgrades on aiohttp: a connection whose next request is an upgrade is handed over.

``connection.Connection`` serves plain HTTP itself; aiohttp's WebSocket
implementation (handshake, permessage-deflate, pings, fragments) is kept, so
when an upgrade request's turn comes the connection gives its transport to an
aiohttp ``RequestHandler`` created as ``web.Server.__call__`` does, and feeds
it the request head (rebuilt from the parsed message: ``request_bytes``)
plus whatever followed it. aiohttp then runs ``WsBridge.handle_upgrade``
(ws_bridge) for it, and the connection ends with the WebSocket (every answer
to an upgrade closes it). The ``--limit-concurrency`` slot moves with the transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from . import http1
from .gate import Gate


class _Request(web.BaseRequest):
    """aiohttp's request, whose response gets the front end's Server, Date and --header policy
    (http1.configure) as our own HTTP/1 responses do, once aiohttp has set its fields."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        http1.fill_fields(response.headers)


class UpgradeHandler(RequestHandler):
    __slots__ = ("_gate", "_admitted")

    def __init__(self, manager: web.Server, *, gate: Gate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._admitted = False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.release()
        super().connection_lost(exc)


class Upgrades(web.Server):
    """aiohttp's low-level server, fed connections by ``hand_over`` rather than by a listener."""

    def __init__(self, handler: Any, *, gate: Gate, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._request, **kwargs)
        self._gate = gate

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return _Request(message, payload, protocol, writer, task, self._loop)

    def __call__(self) -> UpgradeHandler:
        return UpgradeHandler(self, loop=self._loop, gate=self._gate, **self._kwargs)

    def hand_over(self, transport: asyncio.Transport, data: bytes, admitted: bool) -> None:
        handler = self()
        handler._admitted = admitted
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    def close_all(self) -> None:
        for conn in self.connections:
            conn.force_close()


def is_websocket(message: Any) -> bool:
    return (
        message.method == "GET"
        and message.version >= (1, 1)
        and message.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"
    )


def request_bytes(message: Any) -> bytes:
    """The request's head as the client sent it (raw target, raw header bytes), for aiohttp to parse."""
    version = message.version
    lines = [
        b"%s %s HTTP/%d.%d\r\n"
        % (message.method.encode(), message.path.encode("utf-8", "surrogateescape"), version[0], version[1])
    ]
    lines.extend(b"%s: %s\r\n" % pair for pair in message.raw_headers)
    lines.append(b"\r\n")
    return b"".join(lines)
