"""``serve()``: the front end's process-level wiring, usable in-process by tests.

Order matters. The backend binds first (so a worker started from the ready
line finds it), then the HTTP listener; only then the ready line. Shutdown
runs the other way: stop accepting, let in-flight requests finish (up to
``shutdown_timeout_s``; a second signal cuts that short), close idle
keep-alive connections at once (aiohttp's runner does these three, ``_Server``
makes the last one immediate; WebSockets are closed with 1001 once in-flight
HTTP is done), then say BYE to the workers and close the backend.

The admin endpoint (admin.py, its own port) starts after the HTTP listener
and before the ready line (which then ends with ``admin=URL``); once shutdown
begins its /readyz says 503, and it stops last. The access-log hook
(access_log.py) is aiohttp's ``access_log_class``: called as each response ends.
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

from .access_log import AccessLog, hook_class
from .admin import Admin
from .config import FrontendConfig, HttpLimits
from .connection import Connection, Gate
from .dispatch import Dispatcher
from .http_bridge import HttpBridge
from .tls import server_context

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048  # uvicorn's default; bursts of connects must not be refused
WS_CLOSE_MIN_S = 1.0  # WebSockets get this long to close even when HTTP used up the shutdown timeout


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
        tls.TlsError: the certificate, key or CA file cannot be used.
    """
    shutdown = shutdown if shutdown is not None else asyncio.Event()
    force = asyncio.Event()
    ssl_context = server_context(config.tls) if config.tls.enabled else None  # bad files: fail first
    ctx = zmq_context if zmq_context is not None else zmq.Context()
    dispatcher = Dispatcher(config, ctx)
    try:
        dispatcher.start()
        bridge = HttpBridge(config, dispatcher, ssl_context=ssl_context)
        access = AccessLog(bridge.metrics, enabled=config.access_log, log_format=config.log_format)
        admin = Admin(config.admin, dispatcher, bridge.metrics)
        runner = _Runner(
            _http_server(config, bridge, access), bridge=bridge, shutdown_timeout_s=config.shutdown_timeout_s
        )
        await runner.setup()
        try:
            sock = _listen(config.host, config.port)
            await _Site(
                runner, sock, backlog=LISTEN_BACKLOG, ssl_context=ssl_context,
                handshake_timeout_s=config.http.header_timeout_s,
            ).start()  # fmt: skip
            url = _url(sock.getsockname(), "https" if ssl_context is not None else "http")
            log.info("listening on %s, backend %s", url, dispatcher.endpoint)
            admin.http_url = url
            admin_url = await admin.start()  # the ready line's last field; None: off
            with _signals(shutdown, force):  # before the ready line: a signal right after it is ours
                if ready is not None:
                    line = f"zasgi-ready frontend {url} backend={dispatcher.endpoint}"
                    ready(f"{line} admin={admin_url}" if admin_url else line)
                await shutdown.wait()
                log.info("shutting down: finishing %d open streams", dispatcher.streams_open)
                admin.shutting_down()  # /readyz: 503 while we drain
                await _drain_http(runner, force)
        finally:
            await runner.cleanup()  # no-op after a drain; closes the site on errors
            await admin.stop()
    finally:
        await dispatcher.aclose()
        if zmq_context is None:
            ctx.term()


class _Site(web.SockSite):
    """aiohttp's SockSite, with the TLS handshake bounded by ``--timeout-request-header`` too:
    aiohttp passes no ``ssl_handshake_timeout``, so a client that opens TLS and sends nothing
    would hold its connection for the loop's default 60 s (our head timer starts only after
    the handshake, when aiohttp's protocol sees the connection)."""

    __slots__ = ("_handshake_timeout_s",)

    def __init__(self, *args: Any, handshake_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handshake_timeout_s = handshake_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)  # SockSite.start minus its create_server call
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        if self._ssl_context is None:  # (a handshake timeout without ssl is a ValueError)
            self._server = await loop.create_server(server, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                server, sock=self._sock, backlog=self._backlog,
                ssl=self._ssl_context, ssl_handshake_timeout=self._handshake_timeout_s,
            )  # fmt: skip


class _Runner(web.ServerRunner):
    """aiohttp calls ``shutdown`` after the listeners stop and before it waits for the handlers:
    in-flight HTTP requests finish first, then WebSockets close with 1001 (both sides).
    aiohttp's own wait for the handlers then gets only what is left of the budget (at least
    ``WS_CLOSE_MIN_S`` for the closing handshakes), so the whole stop stays near the timeout."""

    def __init__(self, server: web.Server, *, bridge: HttpBridge, shutdown_timeout_s: float) -> None:
        super().__init__(server, shutdown_timeout=shutdown_timeout_s)
        self._bridge = bridge
        self._timeout_s = shutdown_timeout_s

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        await self._bridge.wait_idle(self._timeout_s)
        if self._bridge.websocket.open_count:
            log.info("closing %d WebSockets (1001)", self._bridge.websocket.open_count)
        self._bridge.websocket.going_away()
        self._shutdown_timeout = max(deadline - loop.time(), WS_CLOSE_MIN_S)  # read by cleanup() next


class _Server(web.Server):
    """aiohttp's ``pre_shutdown`` asks every connection to close after its current request;
    an idle keep-alive one cancels its wait for the next request but then stays open until
    the runner's final shutdown, i.e. until in-flight requests are done. Idle ones are
    closed here at once, recognised by the same test aiohttp's keep-alive timer uses.
    Each connection is a ``connection.Connection``: aiohttp's handler plus our limits."""

    def __init__(self, handler: Any, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._gate = Gate(limits.max_connections)
        self._header_timeout_s = limits.header_timeout_s

    def __call__(self) -> Connection:
        return Connection(
            self, loop=self._loop, gate=self._gate, header_timeout_s=self._header_timeout_s, **self._kwargs
        )

    def pre_shutdown(self) -> None:
        for conn in self.connections:
            waiter = getattr(conn, "_waiter", None)
            if waiter is not None and not waiter.done():  # waiting for a request: idle
                conn.force_close()
            else:
                conn.close()


def _http_server(config: FrontendConfig, bridge: HttpBridge, access: AccessLog) -> web.Server:
    limits = config.http
    return _Server(
        bridge.handle,
        limits=limits,
        handler_cancellation=True,  # a vanished client cancels its handler: DISCONNECT
        access_log=access.logger,  # aiohttp calls the hook as each response ends: metrics, access log
        access_log_class=hook_class(access),
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


def _url(sockname: Any, scheme: str) -> str:
    host, port = sockname[0], sockname[1]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
