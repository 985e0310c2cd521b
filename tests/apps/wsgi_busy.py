"""A WSGI app that counts how many of its requests run at once: GET /max answers the most seen,
any other path sleeps 0.3 s (for --wsgi-threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_lock = threading.Lock()
_running = 0
_most = 0


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    global _running, _most
    if environ["PATH_INFO"] == "/max":
        body = str(_most).encode()
    else:
        with _lock:
            _running += 1
            _most = max(_most, _running)
        time.sleep(0.3)
        with _lock:
            _running -= 1
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
