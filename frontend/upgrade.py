"""WebSocket upgrades: a connection whose next request is an upgrade is handed over to ``WsConnection``.

``connection.Connection`` serves plain HTTP itself. When an upgrade request's
turn comes it gives its transport, the parsed request head and whatever
followed it to ``Upgrades.hand_over``, which puts a ``ws_connection.WsConnection``
on the transport and starts the bridge's handler for it (``WsBridge.handle_upgrade``:
the handshake with the worker, then the session). The connection ends with
the WebSocket (every answer to an upgrade closes it). The ``--limit-concurrency``
slot moves with the transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs

from .gate import Gate
from .ws_connection import WsConnection

log = logging.getLogger(__name__)


class Upgrades:
    """The connections handed over for WebSocket upgrades, until each is lost."""

    def __init__(
        self,
        handler: Callable[[WsConnection], Awaitable[None]],
        *,
        ended: Callable[[WsConnection], None],
        gate: Gate,
    ) -> None:
        self._handler = handler
        self._ended = ended  # an open session's end (the bridge's bookkeeping)
        self._gate = gate
        self.connections: set[WsConnection] = set()
        self._emptied: asyncio.Event | None = None  # (only while shutdown waits)

    def hand_over(self, transport: Any, message: Any, tail: bytes, admitted: bool) -> None:
        conn = WsConnection(self, message, tail, admitted)
        self.connections.add(conn)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        conn.handler = asyncio.get_running_loop().create_task(self._run(conn))

    async def _run(self, conn: WsConnection) -> None:
        try:
            await self._handler(conn)
        except asyncio.CancelledError:
            pass  # the client left during the handshake (WsConnection.connection_lost)
        except Exception:  # a bug of ours: the connection must still end
            log.exception("WebSocket upgrade handler failed")
            conn.abort()
        finally:
            conn.handler = None

    def lost(self, conn: WsConnection) -> None:
        """``conn``'s transport is closed."""
        self.connections.discard(conn)
        if conn.stream is not None:
            self._ended(conn)
        if conn.admitted:
            conn.admitted = False
            self._gate.release()
        if not self.connections and self._emptied is not None:
            self._emptied.set()

    async def shutdown(self, timeout_s: float) -> None:
        """Until every handed-over connection has ended (their closes under way), at most ``timeout_s``."""
        if not self.connections:
            return
        self._emptied = asyncio.Event()
        try:
            await asyncio.wait_for(self._emptied.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            self._emptied = None

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()


def is_websocket(message: Any) -> bool:
    return (
        message.method == "GET"
        and message.version >= (1, 1)
        and message.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"
    )
