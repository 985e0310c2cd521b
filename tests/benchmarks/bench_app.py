"""The app every benchmark case serves, identical under zasgi and uvicorn (plain ASGI 3).

/            hello world (the same response as examples/hello.py)
/big?size=N  N bytes streamed in 64 KiB chunks (one constant buffer: the app costs ~nothing)
/upload      reads the whole body, answers its length
/sleep       awaits 5 ms (an app waiting on I/O), then hello world
/io          awaits 50 ms (an app waiting on a database), then hello world
/cpu         burns 2 ms of CPU without awaiting (a CPU-bound endpoint), then hello world
/slow-upload reads the whole body (which a client trickles in), answers its length
/fastapi/items/{id}?q=..  a realistic endpoint: FastAPI, a path and a query parameter, a pydantic
             model of ~1 KiB answered as JSON (fastapi_app.py; imported at the first such request)
websocket    echo
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

CHUNK = 64 * 1024
_BUFFER = b"x" * CHUNK
_HELLO = b"Hello, world!"
_HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path.startswith("/fastapi/"):
            await _fastapi()(scope, receive, send)
            return
        if path == "/big":
            await big(scope, send)
            return
        if path == "/upload" or path == "/slow-upload":
            await upload(receive, send)
            return
        if path == "/sleep":
            await asyncio.sleep(0.005)
        elif path == "/io":
            await asyncio.sleep(0.05)
        elif path == "/cpu":
            burn(0.002)
        await send({"type": "http.response.start", "status": 200, "headers": _HELLO_HEADERS})
        await send({"type": "http.response.body", "body": _HELLO})
    elif kind == "websocket":
        await echo(receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


_FASTAPI: Any = None


def _fastapi() -> Any:
    global _FASTAPI
    if _FASTAPI is None:
        from fastapi_app import app as fastapi_app  # (beside this file, on the servers' path)

        _FASTAPI = fastapi_app
    return _FASTAPI


def burn(cpu_s: float) -> None:
    """Spin until this thread has used ``cpu_s`` of CPU (CPU time, not wall time: fair under load)."""
    end = time.thread_time() + cpu_s
    while time.thread_time() < end:
        pass


async def big(scope: dict[str, Any], send: Any) -> None:
    size = int(scope["query_string"].partition(b"=")[2] or 1 << 20)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    for start in range(0, size, CHUNK):
        body = _BUFFER if size - start >= CHUNK else _BUFFER[: size - start]
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def upload(receive: Any, send: Any) -> None:
    n, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        n += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(n).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def echo(receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
