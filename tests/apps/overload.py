"""App for the overload tests (tests/integration/test_overload.py): one I/O-bound and one CPU-bound endpoint.

/io    awaits 50 ms (a database call), answers "io"
/cpu   burns 5 ms of CPU without awaiting, answers "cpu"
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/cpu":
        end = time.thread_time() + 0.005
        while time.thread_time() < end:
            pass
        body = b"ok"
    else:
        await asyncio.sleep(0.05)
        body = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": body})
