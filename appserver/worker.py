"""The worker process: load the app, lifespan, one connection per front end, drain.

    run_worker(config)
      load_app                      AppLoadError      -> one line, exit 4
      lifespan startup              LifespanFailure   -> one line, exit 4
      FrontendConnection x N        REFUSE            -> one line, exit 3
        (discovery.FrontendSet: one per --connect address; names re-resolved,
         front ends joined and retired while running)
        (pulse.Pulse: a thread of its own sends PULSE to each front end, so a
         blocked loop looks busy, not dead; EVICT from one -> exit 5 at once)
      all WELCOMEd                  -> READY, ready()
      SIGTERM / SIGINT / parent gone-> DRAINING: DRAIN everywhere, in-flight
                                       streams get graceful_timeout_s, then
                                       WebSockets are closed (1012) and the
                                       rest cancelled; lifespan shutdown; BYE
      SIGUSR1 (retire: the supervisor-> DRAINING as above, but once only
        replaced this worker)          sessions are left (WebSockets open,
                                       responses already started) and at the
                                       latest when the grace period ends:
                                       LINGERING: LINGER everywhere, serve just
                                       those until they end or
                                       stream_drain_timeout_s after the drain
                                       began; then as above
      SIGTERM while retiring        -> no lingering (a lingering worker closes
                                       its sessions now, 1012)
      second SIGTERM                -> stop at once (no lifespan shutdown)
      STOPPED                       -> exit 0

Signal handlers only record the request (``loop.add_signal_handler``); the
main coroutine acts on it. The parent's death is noticed through
``parent_fd`` (e.g. multiprocessing's parent sentinel) becoming readable, so
a worker is never orphaned. One ``zmq.Context`` per process, made here.
Logging is configured by the CLI; a spawned child with no handlers gets a
plain stderr setup from ``configure_logging``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import zmq

from wire import compiled, gcpolicy, logsetup
from wire.heap import tune_malloc

from . import logctx
from .admission import Admission
from .config import WorkerConfig
from .connection import FrontendConnection
from .control import RETIRE_SIGNAL
from .discovery import FrontendSet
from .lifecycle import Lifecycle, WorkerPhase
from .lifespan import Lifespan, LifespanFailure
from .limiter import LimiterSettings
from .loader import AppLoadError, app_traceback, load_app
from .loopclock import LoopClock
from .pulse import Pulse

log = logging.getLogger(__name__)

EXIT_OK, EXIT_BOOT, EXIT_APP_LOAD = 0, 3, 4
DRAIN_POLL_S = 0.1  # a draining worker re-checks which streams are left (a response may start any time)
LINGER_POLL_S = 1.0  # a lingering one, whether a front end's sessions all ended (it then hears BYE)
LOG_FORMAT = logctx.FORMAT  # "[REQUEST-ID] " before a message logged for a request


def configure_logging(level: str, log_format: str = "text", log_config: str | None = None) -> None:
    """Stderr logging (text or JSON) or the operator's --log-config, for a spawned child whose
    parent's setup did not carry over."""
    if not logging.getLogger().handlers:
        logsetup.configure(level, log_format, LOG_FORMAT, log_config=log_config)
        logctx.install()


def make_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def run_worker(
    config: WorkerConfig,
    *,
    ready: Callable[[], None] | None = None,
    parent_fd: int | None = None,
    served: Any = None,
) -> int:
    """Run one worker process until stopped; return its exit code (0, 3 or 4).

    ``served``: a shared counter (``multiprocessing.RawValue``) of finished HTTP
    requests, read by the supervisor for --max-requests; None counts nothing.
    """
    configure_logging(config.log_level, config.log_format, config.log_config)
    tune_malloc()  # large body buffers reuse their pages (wire/heap.py)
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(Worker(config, ready=ready, parent_fd=parent_fd, served=served).run())


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        *,
        ready: Callable[[], None] | None = None,
        parent_fd: int | None = None,
        served: Any = None,
    ) -> None:
        self.config = config
        self.worker_id = make_worker_id()
        self.lifecycle = Lifecycle(f"worker {self.worker_id}")
        self.state: dict[str, Any] = {}  # lifespan state, shallow-copied into every request scope
        self.connections: list[FrontendConnection] = []
        self._ready = ready
        self._parent_fd = parent_fd
        self._served = served  # --max-requests counter, see run_worker
        # What was asked, each a step further: drain (SIGUSR1 or SIGTERM); drain without lingering
        # (SIGTERM, SIGINT, the parent died); stop now (a second SIGTERM).
        self._stop = asyncio.Event()
        self._no_linger = asyncio.Event()
        self._force = asyncio.Event()
        self._pulse_stop: Callable[[], Any] = lambda: None  # set while the pulse thread runs

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._watch(loop)
        try:
            return await self._run()
        finally:
            self._unwatch(loop)
            if self.lifecycle.phase is not WorkerPhase.STOPPED:
                self.lifecycle.to(WorkerPhase.STOPPED)

    # ------------------------------------------------------------ stop requests

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                    RETIRE_SIGNAL: self.request_retire}  # fmt: skip
        for sig, handler in handlers.items():
            try:
                loop.add_signal_handler(sig, handler)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
                log.debug("cannot handle %s in this thread", sig.name)
        if self._parent_fd is not None:
            loop.add_reader(self._parent_fd, self._on_parent_gone)

    def _unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, RETIRE_SIGNAL):
            try:
                loop.remove_signal_handler(sig)
            except (ValueError, RuntimeError, NotImplementedError):
                pass
        if self._parent_fd is not None:
            loop.remove_reader(self._parent_fd)

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: drain within the graceful timeout, lingering no more; a second one forces."""
        if self._no_linger.is_set():
            self._force.set()
        self._no_linger.set()
        self._stop.set()

    def request_retire(self) -> None:
        """SIGUSR1: a new worker took over; drain, keeping sessions (lingering) if there are any."""
        self._stop.set()

    def _on_parent_gone(self) -> None:
        asyncio.get_running_loop().remove_reader(self._parent_fd)  # type: ignore[arg-type]
        log.warning("parent process went away; draining")
        self._no_linger.set()
        self._stop.set()

    def _may_linger(self) -> bool:
        return self.config.stream_drain_timeout_s > 0 and not self._no_linger.is_set()

    # ------------------------------------------------------------ the phases

    async def _run(self) -> int:
        try:
            app = load_app(
                self.config.app,
                app_dir=self.config.app_dir,
                factory=self.config.factory,
                interface=self.config.interface,
                wsgi_threads=self.config.wsgi_threads,
            )
        except AppLoadError as exc:
            where = app_traceback(exc).rstrip()  # the app's frames, at every level: the fix is there
            tail = "\n" + where if where and self.config.log_format != "json" else ""  # json: a field
            log.error("cannot load app: %s%s", exc, tail, extra={"traceback": where})
            log.debug("app load failure", exc_info=exc.__cause__)
            return EXIT_APP_LOAD
        lifespan = Lifespan(app, mode=self.config.lifespan, state=self.state)  # type: ignore[arg-type]
        try:
            started = await _first(lifespan.startup(), self._stop.wait()) == 0
        except LifespanFailure as exc:
            log.error("lifespan startup failed: %s", exc)
            return EXIT_APP_LOAD
        if not started:
            await lifespan.shutdown(timeout_s=self.config.graceful_timeout_s)
            return EXIT_OK
        ctx: zmq.Context[Any] = zmq.Context()
        try:
            return await self._serve(_count_http(app, self._served), lifespan, ctx)
        finally:
            self._pulse_stop()  # its sockets close before ctx.term()
            for connection in self.connections:
                connection.close()
            ctx.term()  # every socket is closed; waits only for a BYE in flight (bounded linger)

    async def _serve(self, app: Any, lifespan: Lifespan, ctx: zmq.Context[Any]) -> int:
        info = {
            "host": socket.gethostname(),
            "app": self.config.app,
            "pid": os.getpid(),
            "started_at": time.time(),
        }
        ctx.setsockopt(zmq.IPV6, 1)  # discovery may resolve a front end to an IPv6 address
        admission = self._admission()

        def connect(endpoint: str) -> FrontendConnection:
            return FrontendConnection(
                ctx=ctx, endpoint=endpoint, worker_id=self.worker_id, app=app,
                capacity=self.config.capacity, ws_capacity=self.config.ws_capacity,
                window_bytes=self.config.window_bytes,
                reconnect_max_s=self.config.reconnect_max_s, state=self.state, info=info,
                curve=self.config.curve, admission=admission, shm_bodies=self.config.shm_bodies,
            )  # fmt: skip

        frontends = FrontendSet(
            self.config.connect, connect=connect, interval_s=self.config.resolve_interval_s,
            retire_timeout_s=self.config.graceful_timeout_s,
        )  # fmt: skip
        self.connections = frontends.connections  # live: discovery adds and retires front ends
        clock = LoopClock()
        clock.start()
        # Liveness from a thread of its own: a blocked loop looks busy to the front ends, not dead.
        pulse = Pulse(ctx, clock, self.connections, worker_id=self.worker_id,
                      warn_s=self.config.warn_blocked_loop_s, curve=self.config.curve)  # fmt: skip
        pulse.start()
        self._pulse_stop = lambda: (pulse.stop(), clock.stop())
        frontends.start()
        try:
            if await _first(frontends.ready(), self._stop.wait(), frontends.refused.wait()) == 0:
                self.lifecycle.to(WorkerPhase.READY)
                gcpolicy.settle()  # the app's own thresholds, if it set any, are kept
                log.info("worker %s ready (%d front end(s))", self.worker_id, len(self.connections))
                log.debug("hot path: %s", compiled.describe())
                if self._ready is not None:
                    self._ready()
                await _first(self._stop.wait(), frontends.refused.wait())
        finally:
            frontends.stop()  # the list holds still from here: drain and close work on it as it is
            if admission is not None:
                admission.stop()
        if self._stop.is_set():
            return await self._drain(lifespan)
        return await self._refused_exit(lifespan)

    def _admission(self) -> Admission | None:
        """Adaptive admission (admission.py), or None: HELLO.capacity is the fixed limit."""
        c = self.config
        if not c.adaptive:
            return None
        floor = min(c.capacity_floor, c.capacity)
        settings = LimiterSettings(floor=floor, ceiling=c.capacity, target_s=c.adaptive_target_s,
                                   initial=min(max(32, floor), c.capacity))  # fmt: skip
        admission = Admission(settings)
        admission.start()
        return admission

    async def _drain(self, lifespan: Lifespan) -> int:
        self.lifecycle.to(WorkerPhase.DRAINING)
        began = time.monotonic()
        deadline = began + self.config.graceful_timeout_s
        for connection in self.connections:
            connection.drain()
        if await _first(self._settle(deadline), self._force.wait()) == 0 and self._may_linger():
            linger_until = began + max(self.config.graceful_timeout_s, self.config.stream_drain_timeout_s)
            await _first(self._linger(linger_until), self._no_linger.wait(), self._force.wait())
            if self.lifecycle.phase is WorkerPhase.LINGERING:  # lifespan shutdown: a grace of its own
                deadline = min(linger_until, time.monotonic() + self.config.graceful_timeout_s)
        if self._force.is_set():
            log.warning("second stop signal: stopping now")
            await asyncio.gather(*(c.cancel_streams() for c in self.connections))
        else:
            await asyncio.gather(*(c.streams.close_sessions() for c in self.connections))
            timeout_s = max(deadline - time.monotonic(), 1.0)
            await _first(lifespan.shutdown(timeout_s=timeout_s), self._force.wait())
        for connection in self.connections:
            connection.close("worker stopped")
        self.lifecycle.to(WorkerPhase.STOPPED)
        return EXIT_OK

    async def _settle(self, deadline: float) -> None:
        """Until ``deadline``, wait for the streams: every one, or, while this worker may linger, all
        but its sessions (WebSockets open, responses started), re-checked every DRAIN_POLL_S: a
        request may start its response, or a SIGTERM forbid lingering, at any time."""
        while True:
            left = deadline - time.monotonic()
            if not self._may_linger():
                running = set().union(*(c.streams.running for c in self.connections))
                if running and left > 0:
                    await asyncio.wait(running, timeout=left)
                return
            pending = set().union(*(c.streams.pending() for c in self.connections))
            if not pending or left <= 0:
                return
            await asyncio.wait(pending, timeout=min(left, DRAIN_POLL_S), return_when=asyncio.FIRST_COMPLETED)

    async def _linger(self, until: float) -> None:
        """LINGERING: serve only the sessions until they end or ``until``; a front end whose
        sessions all ended hears BYE (within LINGER_POLL_S)."""
        await asyncio.gather(*(c.streams.cancel_pending() for c in self.connections))  # the grace is over
        kept = [c for c in self.connections if c.streams.sessions()]
        if not kept:
            return
        self.lifecycle.to(WorkerPhase.LINGERING)
        for connection in self.connections:
            if connection in kept:
                connection.linger()
            else:
                connection.close("worker stopped")
        sessions = sum(len(c.streams.sessions()) for c in kept)
        log.info("worker %s lingers: %d WebSocket session(s) and response(s) under way, for up to %.0fs",
                 self.worker_id, sessions, until - time.monotonic())  # fmt: skip
        while kept:
            left = until - time.monotonic()
            if left <= 0:
                log.info("worker %s: stream drain limit reached; closing what is left", self.worker_id)
                return
            running = set().union(*(c.streams.running for c in kept))
            if running:  # all at once, a poll at most: one wait per session ended costs O(n) each
                await asyncio.wait(running, timeout=min(left, LINGER_POLL_S))
            for connection in [c for c in kept if not c.streams.running]:
                kept.remove(connection)
                connection.close("worker stopped")

    async def _refused_exit(self, lifespan: Lifespan) -> int:
        for connection in self.connections:
            if connection.refused.is_set():
                log.error(
                    "front end %s refused this worker: %s", connection.endpoint, connection.refuse_reason
                )
        for connection in self.connections:
            connection.close("another front end refused this worker")
            await connection.cancel_streams()
        await lifespan.shutdown(timeout_s=self.config.graceful_timeout_s)
        return EXIT_BOOT


def _count_http(app: Any, served: Any) -> Any:
    """The app, adding 1 to ``served.value`` per finished HTTP request (one increment, no lock:
    this process is the only writer). Without a counter, the app itself."""
    if served is None:
        return app

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                served.value += 1

    return counted


async def _first(*aws: Awaitable[Any]) -> int:
    """Run ``aws`` until the first finishes; cancel the rest; return its index.

    An exception from the first one to finish propagates.
    """
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    winner = next(i for i, task in enumerate(tasks) if task in done)
    tasks[winner].result()
    return winner
