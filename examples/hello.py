"""The example app for the README and docker-compose: plain ASGI 3, no framework.

    zasgi run examples.hello:app
"""

from __future__ import annotations

import json
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await _respond(send, 200, body, b"application/octet-stream")
    elif scope["path"] == "/info":
        info = {"path": scope["path"], "method": scope["method"], "client": scope["client"]}
        await _respond(send, 200, json.dumps(info).encode(), b"application/json")
    else:
        await _respond(send, 200, b"Hello, world!", b"text/plain")


async def _respond(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
