"""``serve()``: the front end's process-level wiring, usable in-process by tests.

Order matters. The backend binds first (so a worker started from the ready
line finds it), then the HTTP listener; only then the ready line. Shutdown
runs the other way (``HttpServer.shutdown``): stop accepting, close idle
keep-alive connections at once, let in-flight requests finish (up to
``shutdown_timeout_s``; a second signal cuts that short), close WebSockets
with 1001 once in-flight HTTP is done, then say BYE to the workers and close
the backend.

Retirement (retire.py; SIGUSR1 or the ``retire`` event: a successor front end
already accepts on our port) is the other way out: stop accepting, answer
what is in flight, let keep-alive connections end after their next response
(``connection: close``) or at their keep-alive timeout, keep streams and
WebSockets up to the shutdown timeout, then close WebSockets with 1012.

Why stopping to accept loses nothing queued. The listening socket may be
*inherited* (``sock``: ``zasgi run`` binds the port once and gives every front
end of a slot, old and new, a copy of the same socket). Stopping closes only
our copy: the socket, and the connections waiting in its accept queue, stay
with the successor, which is already accepting from it. Closing a listener
that is the last holder of its socket would reset everything in its accept
queue, and with SO_REUSEPORT the kernel keeps hashing new connections to a
listener until the moment it closes, so "accept what is queued, then close"
always leaves a window (gunicorn's resets on worker recycling). Handing the
socket over (as HAProxy's seamless reload does with SCM_RIGHTS) closes that
window; inheriting it from the parent is the same hand-over without a
protocol. A front end that binds its own socket (``reuse_port``, the split
deployment) gets no such guarantee: keep the socket in systemd or a parent.

The admin endpoint (admin.py, its own port) starts after the HTTP listener
and before the ready line (which then ends with ``admin=URL``); once shutdown
begins its /readyz says 503, and it stops last. The access-log hook
(access_log.py) is called as each response ends: by our connections for
HTTP, by ws_bridge for WebSocket upgrades (``upgrade_ended``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import zmq

from wire import compiled
from wire.states import WorkerState

from . import handoff, http1
from .admin import Admin
from .config import FrontendConfig
from .connection import Connection, Shared
from .dispatch import Dispatcher
from .gate import Gate
from .h2_connection import H2Shared
from .handoff import HandoffClient, HandoffServer
from .listen import inherited, open_listener
from .retire import FrontendLifecycle, FrontendPhase
from .services import Services
from .tls import server_context
from .upgrade import Upgrades

log = logging.getLogger(__name__)

RETIRE_SIGNAL = signal.SIGUSR1  # as the workers' (appserver/control.py): replaced, leave cleanly
RETIRED_BYE = "front end retired: a successor serves its port"  # what its workers are told (BYE)
RETIRE_POLL_S = 0.1  # a retiring front end checks this often whether its connections are all gone
HANDOFF_POLL_S = 0.02  # and, for its first second, which connections are idle, to hand them over
REPORT_POLL_S = 0.1  # how often the READY workers are compared with the last report
WS_CLOSE_MIN_S = 1.0  # WebSockets get this long to close even when HTTP used up the shutdown timeout


async def serve(
    config: FrontendConfig,
    *,
    ready: Callable[[str], None] | None = None,
    shutdown: asyncio.Event | None = None,
    retire: asyncio.Event | None = None,
    zmq_context: zmq.Context[Any] | None = None,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
    frontend_id: str = "",
    lifecycle: FrontendLifecycle | None = None,
    report: Callable[[str], None] | None = None,
) -> None:
    """Run the front end until ``shutdown`` is set, or SIGTERM/SIGINT (main thread only);
    or until ``retire`` is set, or SIGUSR1: a successor serves the port (retire.py).

    ``sock``: a bound socket to listen on (inherited; see above) instead of binding
    ``config.host:port``; ``reuse_port``: bind with SO_REUSEPORT, beside other front ends (the
    admin endpoint too, so a successor can take over its port). ``frontend_id``: our name in
    /workers and WELCOME (default ``config.name``, which the access log shows as ``fe=``).
    ``report``: called after the ready line with ``zasgi-workers PID...`` whenever the set of
    READY workers changes (a supervisor rolling front ends waits until every worker joined the
    new one).

    Raises:
        OSError: the HTTP address cannot be bound.
        zmq.ZMQError: the backend endpoint cannot be bound.
        tls.TlsError: the certificate, key or CA file cannot be used.
    """
    shutdown = shutdown if shutdown is not None else asyncio.Event()
    retire = retire if retire is not None else asyncio.Event()
    phase = lifecycle if lifecycle is not None else FrontendLifecycle()
    force = asyncio.Event()
    ssl_context = server_context(config.tls) if config.tls.enabled else None  # bad files: fail first
    if ssl_context is not None and config.http2 is not None:
        ssl_context.set_alpn_protocols(["h2", "http/1.1"])
    _configure_headers(config)
    reuse_port = reuse_port or config.reuse_port
    frontend_id = frontend_id or config.name
    ctx = zmq_context if zmq_context is not None else zmq.Context()
    dispatcher = Dispatcher(config, ctx, frontend_id=frontend_id)
    try:
        dispatcher.start()
        services = Services(config, dispatcher, ssl_context=ssl_context, frontend_id=frontend_id)
        admin = Admin(config.admin, dispatcher, services.metrics, fields=config.headers,
                      reuse_port=reuse_port)  # fmt: skip
        http = HttpServer(config, services)
        listener = None
        try:
            if sock is not None:
                listener = inherited(sock)
            else:
                listener = open_listener(config.host, config.port, uds=config.uds, uds_mode=config.uds_mode,
                                         fd=config.fd, reuse_port=reuse_port)  # fmt: skip
            await http.start(listener.sock, ssl_context, config.backlog)
            http.start_handoff(config.handoff_path)  # adopt a retiring predecessor's idle connections
            url = listener.url("https" if ssl_context is not None else "http")
            log.info("listening on %s, backend %s", url, dispatcher.endpoint)
            log.debug("hot path: %s", compiled.describe())
            admin.http_url = url
            admin_url = await admin.start()  # the ready line's last field; None: off
            with _signals(shutdown, force, retire):  # before the ready line: a signal right after it is ours
                if ready is not None:
                    line = f"zasgi-ready frontend {url} backend={dispatcher.endpoint}"
                    ready(f"{line} admin={admin_url}" if admin_url else line)
                reporter = asyncio.ensure_future(_report_workers(dispatcher, report)) if report else None
                await _first(shutdown, retire)
                if reporter is not None:
                    reporter.cancel()
                await admin.shutting_down()  # /readyz: 503 while we drain
                if not shutdown.is_set():
                    phase.to(FrontendPhase.RETIRING)
                    log.info("retiring (a successor serves %s): %d connections, %d open streams",
                             url, len(http.shared.connections), dispatcher.streams_open)  # fmt: skip
                    await http.retire(config.shutdown_timeout_s, shutdown, force, phase)
                else:
                    phase.to(FrontendPhase.STOPPING)
                    log.info("shutting down: finishing %d open streams", dispatcher.streams_open)
                    await http.shutdown(config.shutdown_timeout_s, force)
        finally:
            http.stop_listening()  # no-op after a drain; closes the listener on errors
            http.close_all()
            http.stop_handoff()
            if listener is not None:
                listener.close()  # (a Unix socket's file goes too)
            await admin.stop()
    finally:
        retired = phase.phase is FrontendPhase.RETIRING  # (not STOPPING: a SIGTERM came meanwhile)
        await dispatcher.aclose(RETIRED_BYE if retired else "front end shutting down")
        if zmq_context is None:
            ctx.term()
        if phase.phase is not FrontendPhase.STOPPED:
            phase.to(FrontendPhase.STOPPED)


class HttpServer:
    """The HTTP listener and its connections (``connection.Connection``, our own protocol);
    connections handed over for WebSocket upgrades live on in ``upgrade.Upgrades`` (ws_connection).

    ``shutdown``: stop accepting; idle keep-alive connections close at once, busy ones after
    their current response; in-flight HTTP requests get up to the timeout (a second signal cuts
    it short); then WebSockets close with 1001, given what is left of the budget (at least
    ``WS_CLOSE_MIN_S`` for the closing handshakes); whatever is left is closed."""

    def __init__(self, config: FrontendConfig, services: Services) -> None:
        limits = config.http
        gate = Gate(limits.max_connections)
        access = services.access
        self._services = services
        self._limits = limits
        websocket = services.websocket
        self.upgrades = Upgrades(websocket.handle_upgrade, ended=websocket.session_ended, gate=gate)
        self.shared = Shared(limits=limits, gate=gate, requests=services.requests, access=access,
                             upgrades=self.upgrades)  # fmt: skip
        self.h2 = _h2_shared(config, services, self.shared)
        if self.h2 is not None:
            self.shared.h2 = self.h2.take_over
            self.shared.alpn = config.tls.enabled
        self._server: asyncio.AbstractServer | None = None
        self._handoff: HandoffServer | None = None
        self._factory: Callable[[], Any] | None = None  # (a Connection: see start)
        self._tls = False
        self._adopting: set[asyncio.Task[None]] = set()

    def start_handoff(self, path: str | None) -> None:
        """Listen at ``path`` for a retiring predecessor's idle connections (plain HTTP only)."""
        if path is None or self._tls or not handoff.supported():
            return
        loop = asyncio.get_running_loop()

        async def adopted(sock: socket.socket) -> None:
            assert self._factory is not None
            try:
                await loop.connect_accepted_socket(self._factory, sock)
            except OSError as exc:  # the client left meanwhile
                log.debug("a handed-over connection could not be adopted: %s", exc)
                sock.close()

        def adopt(sock: socket.socket) -> None:
            task = loop.create_task(adopted(sock))
            self._adopting.add(task)  # (the loop keeps only a weak reference)
            task.add_done_callback(self._adopting.discard)

        self._handoff = HandoffServer(path, adopt)
        self._handoff.start()

    def stop_handoff(self) -> None:
        if self._handoff is not None:
            self._handoff.close()
            self._handoff = None

    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None, backlog: int) -> None:
        loop = asyncio.get_running_loop()
        shared = self.shared

        def factory() -> Any:  # an asyncio.Protocol by its methods (compiled, Connection has no Python base)
            return Connection(shared, loop)

        self._factory = factory
        self._tls = ssl_context is not None
        if ssl_context is None:  # (a handshake timeout without ssl is a ValueError)
            self._server = await loop.create_server(factory, sock=sock, backlog=backlog)
        else:
            # Bounded by --timeout-request-header too: the loop's default is 60 s, and our head
            # timer starts only once the handshake is done.
            self._server = await loop.create_server(
                factory, sock=sock, backlog=backlog,
                ssl=ssl_context, ssl_handshake_timeout=self._limits.header_timeout_s,
            )  # fmt: skip

    async def shutdown(self, timeout_s: float, force: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.stop_listening()
        self.shared.stopping = True
        if self.h2 is not None:
            self.h2.stopping = True
        for conn in list(self.shared.connections):
            conn.stop()  # (an HTTP/2 connection: GOAWAY, then close once its streams are done)
        idle = [self._services.requests.wait_idle(timeout_s)]
        if self.h2 is not None:
            idle.append(self.h2.wait_idle(timeout_s))
        if not await _unless_forced(asyncio.gather(*idle), force):
            self.close_all()
            return
        websocket = self._services.websocket
        if websocket.open_count:
            log.info("closing %d WebSockets (1001)", websocket.open_count)
        websocket.going_away()
        budget = max(deadline - loop.time(), WS_CLOSE_MIN_S)
        await _unless_forced(self.upgrades.shutdown(budget), force)
        self.close_all()

    async def retire(
        self, grace_s: float, shutdown: asyncio.Event, force: asyncio.Event, phase: FrontendLifecycle
    ) -> None:
        """A successor serves the port (retire.py): stop accepting (our copy of the socket only),
        then wait up to ``grace_s`` for every connection to end by itself: each closes after its
        next response (``connection: close``) or at its keep-alive timeout. What is left then is
        closed: WebSockets with 1012. A shutdown meanwhile (SIGTERM) closes idle connections now
        and WebSockets with 1001, within what is left of the grace."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self.stop_listening()
        shared, websocket = self.shared, self._services.websocket
        shared.retiring = True
        if self.h2 is not None:
            self.h2.stopping = True  # (HTTP/2 connections accepted from now on: GOAWAY at once)
        await self._hand_off_idle(min(loop.time() + handoff.HANDOFF_WINDOW_S, deadline), shutdown, force)
        for conn in list(shared.connections):
            conn.retire()  # (an HTTP/2 connection: GOAWAY, then close once its streams are done)
        while shared.connections or websocket.open_count or self.upgrades.connections:
            if force.is_set() or loop.time() >= deadline:
                break
            if shutdown.is_set() and not shared.stopping:
                phase.to(FrontendPhase.STOPPING)
                log.info("shutting down while retiring: closing idle connections")
                shared.stopping = True
                for conn in list(shared.connections):
                    conn.stop()
            await _first(shutdown, force, timeout_s=min(RETIRE_POLL_S, max(deadline - loop.time(), 0)))
        if force.is_set():
            log.warning("second signal: closing open connections now")
            self.close_all()
            return
        if shared.connections:
            left = len(shared.connections)
            log.warning("%d connections still open after %.1fs; closing them", left, grace_s)
        for conn in list(shared.connections):
            conn.force_close()
        restart = not shared.stopping
        if websocket.open_count:
            log.info("closing %d WebSockets (%d)", websocket.open_count, 1012 if restart else 1001)
        websocket.going_away(restart)
        budget = max(deadline - loop.time(), WS_CLOSE_MIN_S)
        await _unless_forced(self.upgrades.shutdown(budget), force)
        self.close_all()

    async def _hand_off_idle(self, until: float, shutdown: asyncio.Event, force: asyncio.Event) -> None:
        """Until ``until``: give every connection caught idle to the successor adopting them at our
        hand-off path, if one took it over (handoff.py); the rest then end as retire() says."""
        server = self._handoff
        if server is None or server.is_ours() or not self.shared.connections:
            return
        client = HandoffClient.connect(server.path)
        if client is None:
            return
        loop = asyncio.get_running_loop()
        connections = self.shared.connections
        try:
            while connections and loop.time() < until and not (shutdown.is_set() or force.is_set()):
                for conn in list(connections):
                    if not isinstance(conn, Connection):  # HTTP/2 (h2_connection): GOAWAY instead, in retire()
                        continue
                    if conn.hand_off(client.send) is False and client.failed:
                        return
                await _first(shutdown, force, timeout_s=HANDOFF_POLL_S)
        finally:
            client.close()
            log.info("handed %d idle connection(s) to the successor; %d left to close by themselves",
                     client.sent, len(connections))  # fmt: skip

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    def close_all(self) -> None:
        for conn in list(self.shared.connections):
            conn.force_close()
        self.upgrades.close_all()


def _h2_shared(config: FrontendConfig, services: Services, shared: Shared) -> H2Shared | None:
    """HTTP/2's per-listener state (h2_connection), None when --no-http2."""
    if config.http2 is None:
        return None
    # One field / fields per request: the HTTP/1 limits (--limit-max-header-size, --limit-max-headers).
    http = config.http
    limits = replace(config.http2, max_field_bytes=http.max_field_bytes, max_headers=http.max_headers)
    h2 = H2Shared(
        limits=limits, requests=services.requests, access=services.access,
        connections=shared.connections, gate=shared.gate, keepalive_s=http.keepalive_timeout_s,
    )  # fmt: skip
    services.metrics.registry.register(h2.counts)
    return h2


async def _report_workers(dispatcher: Dispatcher, report: Callable[[str], None]) -> None:
    """``report("zasgi-workers PID...")`` each time the READY workers change (polled: off the hot path)."""
    last: list[int] | None = None
    while True:
        pids = sorted(r.pid for r in dispatcher.pool if r.state is WorkerState.READY)
        if pids != last:
            last = pids
            report("zasgi-workers " + " ".join(map(str, pids)))
        await asyncio.sleep(REPORT_POLL_S)


async def _first(*events: asyncio.Event, timeout_s: float | None = None) -> None:
    """Until one of ``events`` is set (or ``timeout_s`` passed)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _unless_forced(coro: Any, force: asyncio.Event) -> bool:
    """Run ``coro`` unless ``force`` is set first (then cancel it): whether it completed."""
    task = asyncio.ensure_future(coro)
    forced = asyncio.ensure_future(force.wait())
    try:
        await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        forced.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    log.warning("second signal: closing open connections now")
    return False


@contextlib.contextmanager
def _signals(shutdown: asyncio.Event, force: asyncio.Event, retire: asyncio.Event) -> Iterator[None]:
    """SIGTERM/SIGINT: graceful shutdown; a second one: stop waiting for in-flight requests.
    SIGUSR1: retire (a successor serves the port)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # records only: no I/O in a signal handler
        (force if shutdown.is_set() else shutdown).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(RETIRE_SIGNAL, retire.set)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, RETIRE_SIGNAL):
            loop.remove_signal_handler(sig)


def _configure_headers(config: FrontendConfig) -> None:
    """The fields our HTTP/1 responses add (http1; the admin endpoint's: admin.py)."""
    headers = config.headers
    http1.configure(server=http1.SERVER_NAME if headers.server else None, date=headers.date,
                    extra=headers.extra)  # fmt: skip
