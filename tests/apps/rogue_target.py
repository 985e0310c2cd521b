"""The app behind the rogue-front-end fuzz (tests/appserver/test_rogue_frontend.py).

Every call (HTTP or WebSocket) appends "+" and its raw path's last segment (the
test marks each opener's path with a unique one) to $ROGUE_CALLS, and "-" and
the same when it returns, so the
test can tell that only well-formed openers reached the app. ``RUNNING``
counts calls in progress: GET /count answers it (itself not included), so the
test can tell that no stream's app task outlives its stream. Routes by prefix:
/echo reads the body and echoes it; /stream sends chunks (it waits for credit
like any app); /slow sleeps before answering; /probe answers at once; /ws*
accepts and echoes until the disconnect.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

RUNNING = 0
_calls = open(os.environ["ROGUE_CALLS"], "ab", buffering=0) if "ROGUE_CALLS" in os.environ else None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global RUNNING
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["raw_path"]
    mark = path.rsplit(b"/", 1)[-1]  # raw_path starts with the root_path
    if _calls is not None:
        _calls.write(b"+%s %s %s\n" % (mark, scope["type"].encode(), path))
    RUNNING += 1
    try:
        if scope["type"] == "websocket":
            await _websocket(receive, send)
        elif path.startswith(b"/count"):
            await _answer(send, str(RUNNING - 1).encode())
        else:
            await _http(path, receive, send)
    finally:
        RUNNING -= 1
        if _calls is not None:
            _calls.write(b"-" + mark + b"\n")


async def _answer(send: Any, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


async def _http(path: bytes, receive: Any, send: Any) -> None:
    if path.startswith(b"/probe"):
        await _answer(send, b"ok")
        return
    if path.startswith(b"/slow"):
        await asyncio.sleep(0.05)
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if path.startswith(b"/stream"):
        await send({"type": "http.response.start", "status": 200})
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"x" * 20_000, "more_body": True})
        await send({"type": "http.response.body", "body": body})
        return
    await _answer(send, body)


async def _websocket(receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
