"""Helpers for the WebSocket tests: a front end with a WebSocket-capable ScriptedWorker, clients."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from wire import events as ev

RECEIVE_TIMEOUT_S = 5.0
WS_FEATURES = ("http", "websocket", "ws-denial")
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


async def ws_setup(start_frontend: Any, worker_for: Any, *, fe_kw: Any = None, **worker_kw: Any) -> Any:
    fe = await start_frontend(**(fe_kw or {}))
    worker_kw.setdefault("ws_capacity", 4)
    worker_kw.setdefault("features", WS_FEATURES)
    return fe, await worker_for(fe, **worker_kw)


def ws_url(fe: Any, path: str = "/ws") -> str:
    return fe.url.replace("http://", "ws://") + path


async def connect(session: aiohttp.ClientSession, fe: Any, w: Any, **kw: Any) -> tuple[Any, ev.WsConnect]:
    """A client WebSocket the worker accepted (with ``subprotocol``); ``kw`` go to ``ws_connect``."""
    subprotocol = kw.pop("subprotocol", None)
    pending = asyncio.ensure_future(session.ws_connect(ws_url(fe, kw.pop("path", "/ws")), **kw))
    connect_event = await w.ws_open(subprotocol=subprotocol)
    return await asyncio.wait_for(pending, RECEIVE_TIMEOUT_S), connect_event


async def receive(ws: Any) -> aiohttp.WSMessage:
    return await ws.receive(timeout=RECEIVE_TIMEOUT_S)
