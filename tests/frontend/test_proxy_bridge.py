"""Proxy headers through the in-process front end: REQUEST and WS_CONNECT carry what they say,
only when the peer is trusted (the test client is 127.0.0.1)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import pytest

from frontend import config as cfg

from .ws_helpers import ws_setup

pytestmark = pytest.mark.timeout(30)

FORWARDED = {
    "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example",
}


async def _request(fe: Any, w: Any, headers: dict[str, str]) -> Any:
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/p", headers=headers))
        req = await w.request()
        w.respond(req.stream_id, 204)
        assert (await pending).status_code == 204
    return req


async def test_trusted_peer_sets_client_scheme_server(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()  # defaults: proxy headers on, 127.0.0.1 trusted
    w = await worker_for(fe)
    req = await _request(fe, w, FORWARDED)
    assert (req.scheme, req.client, req.server) == ("https", ("203.0.113.9", 0), ("shop.example", 443))
    assert (b"X-Forwarded-For", b"203.0.113.9, 127.0.0.1") in req.headers  # headers untouched
    req = await _request(fe, w, {"Forwarded": 'for="[2001:db8::1]:443";proto=https;host=a.example:8443'})
    assert (req.scheme, req.client, req.server) == ("https", ("2001:db8::1", 443), ("a.example", 8443))


@pytest.mark.parametrize(
    "proxy", [cfg.Proxy(enabled=False), cfg.Proxy(trusted="10.0.0.0/8")], ids=["disabled", "untrusted-peer"]
)
async def test_headers_ignored_unless_enabled_and_trusted(
    start_frontend: Any, worker_for: Any, proxy: cfg.Proxy
) -> None:
    fe = await start_frontend(proxy=proxy)
    w = await worker_for(fe)
    req = await _request(fe, w, FORWARDED)
    assert req.scheme == "http" and req.client[0] == "127.0.0.1" and req.server == ("127.0.0.1", fe.port)


async def test_websocket_scheme_follows_the_proxy(start_frontend: Any, worker_for: Any) -> None:
    fe, w = await ws_setup(start_frontend, worker_for, fe_kw={"proxy": cfg.Proxy(trusted="*")})
    async with aiohttp.ClientSession() as session:
        opening = asyncio.ensure_future(session.ws_connect(fe.url + "/ws", headers=FORWARDED))
        connect = await w.ws_open()
        ws = await opening
        assert (connect.scheme, connect.client, connect.server) == (
            "wss",
            ("203.0.113.9", 0),
            ("shop.example", 443),
        )
        await ws.close()
