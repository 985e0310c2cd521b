"""``serve()``: the front end's process-level wiring, usable in-process by tests.

Order matters. The backend binds first (so a worker started from the ready
line finds it), then the HTTP listener; only then the ready line. Shutdown
runs the other way: stop accepting, let in-flight requests finish (up to
``shutdown_timeout_s``; a second signal cuts that short), close idle
keep-alive connections (aiohttp's runner does these three; WebSockets are
closed with 1001 once in-flight HTTP is done), then say BYE to the workers and
close the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import zmq
from aiohttp import web

from .config import FrontendConfig
from .dispatch import Dispatcher
from .http_bridge import HttpBridge

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048  # uvicorn's default; bursts of connects must not be refused


async def serve(
    config: FrontendConfig,
    *,
    ready: Callable[[str], None] | None = None,
    shutdown: asyncio.Event | None = None,
    zmq_context: zmq.Context[Any] | None = None,
) -> None:
    """Run the front end until ``shutdown`` is set, or SIGTERM/SIGINT (main thread only).

    Raises:
        OSError: the HTTP address cannot be bound.
        zmq.ZMQError: the backend endpoint cannot be bound.
    """
    shutdown = shutdown if shutdown is not None else asyncio.Event()
    force = asyncio.Event()
    ctx = zmq_context if zmq_context is not None else zmq.Context()
    dispatcher = Dispatcher(config, ctx)
    try:
        dispatcher.start()
        bridge = HttpBridge(config, dispatcher)
        runner = _Runner(
            _http_server(config, bridge), bridge=bridge, shutdown_timeout_s=config.shutdown_timeout_s
        )
        await runner.setup()
        try:
            sock = _listen(config.host, config.port)
            await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
            url = _url(sock.getsockname())
            log.info("listening on %s, backend %s", url, dispatcher.endpoint)
            with _signals(shutdown, force):  # before the ready line: a signal right after it is ours
                if ready is not None:
                    ready(f"zasgi-ready frontend {url} backend={dispatcher.endpoint}")
                await shutdown.wait()
                log.info("shutting down: finishing %d open streams", dispatcher.streams_open)
                await _drain_http(runner, force)
        finally:
            await runner.cleanup()  # no-op after a drain; closes the site on errors
    finally:
        await dispatcher.aclose()
        if zmq_context is None:
            ctx.term()


class _Runner(web.ServerRunner):
    """aiohttp calls ``shutdown`` after the listeners stop and before it waits for the handlers:
    in-flight HTTP requests finish first, then WebSockets close with 1001 (both sides)."""

    def __init__(self, server: web.Server, *, bridge: HttpBridge, shutdown_timeout_s: float) -> None:
        super().__init__(server, shutdown_timeout=shutdown_timeout_s)
        self._bridge = bridge
        self._timeout_s = shutdown_timeout_s

    async def shutdown(self) -> None:
        await self._bridge.wait_idle(self._timeout_s)
        if self._bridge.websocket.open_count:
            log.info("closing %d WebSockets (1001)", self._bridge.websocket.open_count)
        self._bridge.websocket.going_away()


def _http_server(config: FrontendConfig, bridge: HttpBridge) -> web.Server:
    limits = config.http
    return web.Server(
        bridge.handle,
        handler_cancellation=True,  # a vanished client cancels its handler: DISCONNECT
        access_log=None,  # one log line per request costs more than the request
        max_line_size=limits.max_line_bytes,
        max_field_size=limits.max_field_bytes,
        max_headers=limits.max_headers,
        keepalive_timeout=limits.keepalive_timeout_s,
    )


async def _drain_http(runner: web.ServerRunner, force: asyncio.Event) -> None:
    cleanup = asyncio.ensure_future(runner.cleanup())
    forced = asyncio.ensure_future(force.wait())
    try:
        await asyncio.wait({cleanup, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not cleanup.done():
            log.warning("second signal: closing open connections now")
            server = runner.server
            for conn in server.connections if server is not None else ():
                conn.force_close()
        await cleanup
    finally:
        forced.cancel()


@contextlib.contextmanager
def _signals(shutdown: asyncio.Event, force: asyncio.Event) -> Iterator[None]:
    """SIGTERM/SIGINT: graceful shutdown; a second one: stop waiting for in-flight requests."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # records only: no I/O in a signal handler
        (force if shutdown.is_set() else shutdown).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
