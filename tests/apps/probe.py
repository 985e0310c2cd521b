"""Probe app for the integration tests: each path exercises one part of ASGI.

Everything it observes goes back in HTTP responses or, for what outlives a
request (disconnects, lifespan), in files under $PROBE_DIR.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

CHUNK = 64 * 1024


_BLOCK = bytes(range(256)) * 256  # 64 KiB: pattern() repeats with this period


def pattern(size: int, offset: int = 0) -> bytes:
    """Deterministic bytes, so clients can checksum big bodies; pattern(n)[a:b] == pattern(b - a, a)."""
    start = offset % len(_BLOCK)
    return (_BLOCK * ((start + size) // len(_BLOCK) + 1))[start : start + size]


def _record(name: str, text: str) -> None:
    directory = os.environ.get("PROBE_DIR")
    if directory:
        with open(Path(directory) / name, "a") as f:
            f.write(text + "\n")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["type"] == "websocket":
        await WS_ROUTES.get(scope["path"], ws_echo)(scope, receive, send, query)
        return
    handler = ROUTES.get(scope["path"], scope_info)
    await handler(scope, receive, send, query)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    if os.environ.get("PROBE_LIFESPAN_FAIL"):
        await send({"type": "lifespan.startup.failed", "message": "database unreachable (probe)"})
        return
    scope["state"]["greeting"] = "hello from lifespan"
    _record("lifespan", f"startup {os.getpid()}")
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    _record("lifespan", f"shutdown {os.getpid()}")
    await send({"type": "lifespan.shutdown.complete"})


async def respond(send: Any, status: int = 200, body: bytes = b"", headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def scope_info(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    await read_body(receive)
    info = _jsonable({k: v for k, v in scope.items() if k not in ("app",)})
    info["pid"] = os.getpid()
    await respond(send, 200, json.dumps(info).encode(), [(b"content-type", b"application/json")])


async def echo(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    await respond(send, 200, await read_body(receive))


async def digest(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """sha256 and length of the request body, read chunk by chunk (at most ?rate bytes/s)."""
    h, n, rate = hashlib.sha256(), 0, float(query.get("rate", 0))
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        h.update(message.get("body", b""))
        n += len(message.get("body", b""))
        if rate:
            await asyncio.sleep(len(message.get("body", b"")) / rate)
        if not message.get("more_body"):
            break
    await respond(send, 200, json.dumps({"sha256": h.hexdigest(), "length": n}).encode())


async def big(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """A streamed response of ?size bytes of pattern(), in ?chunk-sized sends."""
    size, chunk = int(query.get("size", 1 << 20)), int(query.get("chunk", CHUNK))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-size", str(size).encode())]})
    for start in range(0, size, chunk):
        body = pattern(min(chunk, size - start), start)  # generated per chunk: the app stays small
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def stream(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """?n numbered chunks, ?delay seconds apart; the last line says when it finished."""
    n, delay = int(query.get("n", 10)), float(query.get("delay", 0))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(n):
        await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        if delay:
            await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b"end\n"})


async def sse(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """Server-Sent Events: ?n events ``id: I`` / ``data: I PID``, ?delay seconds apart (a token stream)."""
    n, delay = int(query.get("n", 10)), float(query.get("delay", 0))
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(n):
        await send({"type": "http.response.body", "body": b"id: %d\ndata: %d %d\n\n" % (i, i, os.getpid()),
                    "more_body": True})  # fmt: skip
        if delay:
            await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b"event: end\ndata: done\n\n"})


async def slow(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    if "tag" in query:
        _record("arrivals", query["tag"])
    await asyncio.sleep(float(query.get("s", 0.5)))
    await respond(send, 200, b"slept")


async def wait_disconnect(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """Never answers; records the http.disconnect it gets when the client leaves."""
    _record("arrivals", query.get("tag", "-"))
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            _record("disconnects", query.get("tag", "-"))
            return


async def status(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    code = int(query.get("code", 200))
    headers = [(b"etag", b'"x"')] if code == 304 else []
    await respond(send, code, b"" if code in (204, 304) else b"status body", headers)


async def headers(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    hdrs = [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"x-custom", b"v"), (b"content-length", b"2")]
    await respond(send, 200, b"ok", hdrs)


async def crash_before_start(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    raise RuntimeError("probe: crash before start")


async def crash_mid_body(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("probe: crash mid body")


async def no_response(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    return None


async def trailers(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-digest")], "trailers": True})
    await send({"type": "http.response.body", "body": b"body", "more_body": False})
    await send({"type": "http.response.trailers", "headers": [(b"x-digest", b"abc")], "more_trailers": False})


async def pathsend(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    path = query["path"]
    size = os.path.getsize(path)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
    await send({"type": "http.response.pathsend", "path": path})


async def early_hints(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """A 103 before the page when the server offers it; ?bad=1: a CR/LF link, and the error it raised."""
    offered = "http.response.early_hint" in scope["extensions"]
    links = [b"</a>\r\nset-cookie: x=1"] if "bad" in query else [b"</style.css>; rel=preload; as=style"]
    error = ""
    if offered:
        try:
            await send({"type": "http.response.early_hint", "links": links})
        except ValueError as exc:
            error = type(exc).__name__
    await respond(send, 200, json.dumps({"offered": offered, "error": error}).encode())


async def state(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    await respond(send, 200, json.dumps(_jsonable(scope.get("state", {}))).encode())


ROUTES = {
    "/scope": scope_info,
    "/echo": echo,
    "/digest": digest,
    "/big": big,
    "/stream": stream,
    "/sse": sse,
    "/slow": slow,
    "/wait-disconnect": wait_disconnect,
    "/status": status,
    "/headers": headers,
    "/crash-before-start": crash_before_start,
    "/crash-mid-body": crash_mid_body,
    "/no-response": no_response,
    "/trailers": trailers,
    "/pathsend": pathsend,
    "/state": state,
    "/early-hints": early_hints,
}


# ------------------------------------------------------------------ WebSocket


async def ws_echo(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """Echo; ?subprotocol picks one; text "close CODE REASON" makes the app close."""
    assert (await receive())["type"] == "websocket.connect"
    accept: dict[str, Any] = {"type": "websocket.accept", "headers": [(b"x-extra", b"yes")]}
    if "subprotocol" in query:
        accept["subprotocol"] = query["subprotocol"]
    await send(accept)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _record("ws-disconnects", f"{query.get('tag', '-')}:{message.get('code')}:{message.get('reason', '')}")
            return
        text = message.get("text")
        if text is not None and text.startswith("close "):
            _, code, reason = text.split(" ", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            return
        if text == "scope":
            await send({"type": "websocket.send", "text": json.dumps(_jsonable(scope))})
        elif text == "pid":
            await send({"type": "websocket.send", "text": str(os.getpid())})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def ws_reject(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    await receive()
    await send({"type": "websocket.close", "code": 1000})


async def ws_deny(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"1")]})  # fmt: skip
    await send({"type": "websocket.http.response.body", "body": b"no entry"})


async def ws_slow_reader(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """Reads one message per ?delay seconds; on text "done" answers the byte count."""
    await receive()
    await send({"type": "websocket.accept"})
    delay, total = float(query.get("delay", 0.01)), 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "done":
            await send({"type": "websocket.send", "text": str(total)})
            continue
        total += len(message.get("bytes") or b"")
        await asyncio.sleep(delay)


async def ws_handoff(scope: dict[str, Any], receive: Any, send: Any, query: dict[str, str]) -> None:
    """Echo that opts in to zasgi.websocket.handoff: text T -> "N:PID:T", N counting the texts seen
    over the whole session (carried across workers in the handoff state). Text "scope" -> the
    extension's value as JSON (not counted). ?delay: seconds to think before each reply."""
    delay = float(query.get("delay", 0))
    assert (await receive())["type"] == "websocket.connect"
    extension = scope["extensions"].get("zasgi.websocket.handoff")
    n = int(((extension or {}).get("state") or {}).get("n", 0))
    await send({"type": "websocket.accept", "zasgi.websocket.handoff": True})
    while True:
        message = await receive()
        if message["type"] == "zasgi.websocket.handoff":
            await send({"type": "zasgi.websocket.handoff", "state": {"n": n}})
            return
        if message["type"] == "websocket.disconnect":
            _record("ws-disconnects", f"{query.get('tag', '-')}:{message['code']}")
            return
        text = message.get("text")
        if text == "scope":
            await send({"type": "websocket.send", "text": json.dumps(_jsonable(extension))})
        elif text is not None:
            n += 1
            if delay:
                await asyncio.sleep(delay)
            await send({"type": "websocket.send", "text": f"{n}:{os.getpid()}:{text}"})


WS_ROUTES = {
    "/ws/echo": ws_echo,
    "/ws/reject": ws_reject,
    "/ws/deny": ws_deny,
    "/ws/slow-reader": ws_slow_reader,
    "/ws/handoff": ws_handoff,
}
