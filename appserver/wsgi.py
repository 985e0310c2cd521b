"""WSGI apps (Flask, Django's WSGIHandler...) as ASGI 3, through a2wsgi.

a2wsgi's ``WSGIMiddleware`` does the translation: the WSGI callable runs in
its thread pool (``threads`` of them per worker process), request bodies are
read through ``receive`` from that thread, and response chunks go back
through a bounded queue. WebSocket scopes are refused (close before accept,
which the front end turns into a 403); lifespan is acknowledged and ignored.

This module adds only what a2wsgi leaves to the server:

* ``wsgi.input_terminated``: a2wsgi's input stream ends where the request
  body ends, chunked or not; without that key Werkzeug (Flask) reads a body
  that has no Content-Length as empty.
* A client that goes away. Our ``send`` raises ``ClientDisconnected`` then;
  a2wsgi's sender task would die of it and leave the WSGI thread blocked
  forever on a full queue, still iterating a streaming response for nobody.
  So ``send`` swallows everything after the disconnect and the response
  iterable is cut short at its next chunk (its ``close()`` still runs),
  which is what a sync server's failing socket write does to a WSGI app.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from a2wsgi import WSGIMiddleware

from .stream import ClientDisconnected

DEFAULT_THREADS = 10  # a2wsgi's default: WSGI requests running at once per worker process
_GONE_KEY = "zasgi.wsgi.client_gone"  # per-request flag, reaches the WSGI thread via environ["asgi.scope"]


class WSGIAdapter:
    """Runs a WSGI app as an ASGI 3 app."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, threads: int = DEFAULT_THREADS) -> None:
        self.app = app
        self._middleware = WSGIMiddleware(_Shim(app), workers=threads)  # type: ignore[arg-type]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._middleware(scope, receive, send)  # type: ignore[arg-type]
            return
        gone = threading.Event()
        scope = {**scope, _GONE_KEY: gone}

        async def send_until_gone(message: dict[str, Any]) -> None:
            if gone.is_set():
                return
            try:
                await send(message)
            except ClientDisconnected:
                gone.set()

        try:
            await self._middleware(scope, receive, send_until_gone)  # type: ignore[arg-type]
        finally:
            gone.set()  # if cancelled (drain timeout), the WSGI thread stops at its next chunk


class _Shim:
    """The WSGI app, with input_terminated set and its response cut short once the client is gone."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ.setdefault("wsgi.input_terminated", True)
        result = self.app(environ, start_response)
        gone = environ.get("asgi.scope", {}).get(_GONE_KEY)
        return result if gone is None else _until(gone, result)


def _until(gone: threading.Event, result: Iterable[bytes]) -> Iterator[bytes]:
    try:
        for chunk in result:
            if gone.is_set():
                return
            yield chunk
    finally:
        close = getattr(result, "close", None)  # PEP 3333: the server calls close(), whatever happened
        if close is not None:
            close()
