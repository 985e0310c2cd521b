"""GET /grow keeps 200 MiB more in this worker (touched, so resident); any other path answers
the worker's pid (for --max-worker-rss)."""

from __future__ import annotations

import os
from typing import Any

_kept: list[bytearray] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/grow":
        _kept.append(bytearray(os.urandom(1024)) * (200 * 1024))  # written: resident, not just reserved
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
