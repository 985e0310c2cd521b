"""ASGI scope building from REQUEST / WS_CONNECT."""

from __future__ import annotations

import pytest

from wire import events as ev
from wire.scope import decode_path, http_scope, websocket_scope


def _request(raw_path: bytes, query: bytes = b"", root: str = "", headers: ev.Headers = ()) -> ev.Request:
    return ev.Request(1, "GET", "http", "1.1", raw_path, query, root, headers, ("1.2.3.4", 5), ("127.0.0.1", 80))


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/", "/"),
        (b"/a%20b", "/a b"),
        (b"/%C3%A9t%C3%A9", "/été"),
        ("/été".encode(), "/été"),  # raw UTF-8 on the wire
        (b"/a%2Fb", "/a/b"),
        (b"/bad%FF", "/bad\ufffd"),
        (b"/100%", "/100%"),
    ],
)
def test_path_decoding(raw: bytes, path: str) -> None:
    assert decode_path(raw) == path
    scope = http_scope(_request(raw))
    assert scope["path"] == path and scope["raw_path"] == raw


def test_http_scope_has_every_key() -> None:
    headers = ((b"Host", b"x"), (b"X-Dup", b"1"), (b"x-dup", b"2"))
    scope = http_scope(_request(b"/p", b"a=1&a=2&b", "", headers), state={"db": 1})
    assert scope == {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.5"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/p",
        "raw_path": b"/p",
        "query_string": b"a=1&a=2&b",
        "root_path": "",
        "headers": [(b"host", b"x"), (b"x-dup", b"1"), (b"x-dup", b"2")],
        "client": ["1.2.3.4", 5],
        "server": ["127.0.0.1", 80],
        "state": {"db": 1},
        "extensions": {"http.response.trailers": {}, "http.response.pathsend": {}},
    }


def test_state_is_a_shallow_copy() -> None:
    state = {"counter": [0]}
    scope = http_scope(_request(b"/"), state=state)
    scope["state"]["new"] = 1
    assert "new" not in state and scope["state"]["counter"] is state["counter"]


def test_root_path_is_prefixed() -> None:
    scope = http_scope(_request(b"/items", root="/api"))
    assert scope["root_path"] == "/api" and scope["path"] == "/api/items" and scope["raw_path"] == b"/api/items"


def test_tls_extension_is_carried() -> None:
    event = ev.Request(1, "GET", "https", "1.1", b"/", b"", "", (), None, None, ext={"tls": {"tls_version": 772}})
    assert http_scope(event)["extensions"]["tls"] == {"tls_version": 772}


def test_websocket_scope() -> None:
    event = ev.WsConnect(3, "wss", "1.1", b"/ws", b"x=1", "", ((b"Host", b"h"),), None, None, ("a", "b"))
    scope = websocket_scope(event, handoff=True)
    assert scope["type"] == "websocket" and scope["scheme"] == "wss"
    assert scope["subprotocols"] == ["a", "b"]
    assert set(scope["extensions"]) == {"websocket.http.response", "zasgi.websocket.handoff"}
    assert "method" not in scope
