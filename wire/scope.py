"""REQUEST / WS_CONNECT events -> ASGI 3 connection scopes (spec_version 2.5).

The front end forwards what the client sent untouched; the worker (the tier
that scales out) does the per-request work here: lower-casing header names,
percent-decoding the path, joining root_path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from . import events as ev

ASGI_VERSION = {"version": "3.0", "spec_version": "2.5"}
HTTP_EXTENSIONS = ("http.response.trailers", "http.response.pathsend")
WS_EXTENSIONS = ("websocket.http.response",)
HANDOFF_EXTENSION = "zasgi.websocket.handoff"


def decode_path(raw_path: bytes) -> str:
    """Percent-decode a request target's path; bytes that are not UTF-8 become U+FFFD."""
    return unquote_to_bytes(raw_path).decode("utf-8", errors="replace")


def lower_headers(headers: ev.Headers) -> list[tuple[bytes, bytes]]:
    return [(name.lower(), value) for name, value in headers]


def _extensions(names: tuple[str, ...], ext: dict[str, Any]) -> dict[str, Any]:
    extensions: dict[str, Any] = {name: {} for name in names}
    if "tls" in ext:
        extensions["tls"] = dict(ext["tls"])
    return extensions


def _common(event: ev.Request | ev.WsConnect, state: dict[str, Any] | None) -> dict[str, Any]:
    root = event.root_path
    return {
        "asgi": dict(ASGI_VERSION),
        "http_version": event.http_version,
        "scheme": event.scheme,
        "path": root + decode_path(event.raw_path),
        "raw_path": root.encode("utf-8") + event.raw_path,
        "query_string": event.query_string,
        "root_path": root,
        "headers": lower_headers(event.headers),
        "client": list(event.client) if event.client else None,
        "server": list(event.server) if event.server else None,
        "state": dict(state) if state is not None else {},
    }


def http_scope(event: ev.Request, *, state: dict[str, Any] | None = None) -> dict[str, Any]:
    scope = _common(event, state)
    scope["type"] = "http"
    scope["method"] = event.method
    scope["extensions"] = _extensions(HTTP_EXTENSIONS, event.ext)
    return scope


def websocket_scope(
    event: ev.WsConnect, *, state: dict[str, Any] | None = None, handoff: bool = False
) -> dict[str, Any]:
    scope = _common(event, state)
    scope["type"] = "websocket"
    scope["subprotocols"] = list(event.subprotocols)
    names = WS_EXTENSIONS + ((HANDOFF_EXTENSION,) if handoff else ())
    scope["extensions"] = _extensions(names, event.ext)
    return scope
