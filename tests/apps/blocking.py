"""The mistakes issue 18 is about: a synchronous call in an async handler, and a request that kills
its worker. Each run of /block and /exit is recorded (one line, pid) under $PROBE_DIR."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs


def _record(name: str, text: str) -> None:
    directory = os.environ.get("PROBE_DIR")
    if directory:
        with open(Path(directory) / name, "a") as f:
            f.write(text + "\n")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/block":
        _record("block", str(os.getpid()))
        time.sleep(float(query.get("s", "6")))  # the mistake: a synchronous call in async code
        body = b"blocked"
    elif path == "/exit":
        _record("exit", str(os.getpid()))
        os._exit(1)  # as a segfault in a C extension or an OOM kill would
    else:
        body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
