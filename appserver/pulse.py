"""The worker's pulse: liveness from a thread of its own, so a blocked event loop looks busy, not dead.

Theory of operation (PROTOCOL.md Rules 9a, 9b). The event loop that runs the
app also sends the connection's HEARTBEATs; an app that blocks it (a
synchronous call in an async handler) used to look dead after three seconds,
and the front end replayed its requests on the next worker, which blocked in
turn. So a daemon thread, with one DEALER of its own per front end that
agreed to feature "pulse", sends ``PULSE`` every half heartbeat interval
whatever the loop does. Each PULSE names the connection it speaks for (its
routing id) and says how the loop is: how long it has not run (``loopclock``),
and while it is stalled, which request is on it.

* The thread sleeps until something can be due (``wake_in``): the next PULSE,
  or the moment the loop, if it stopped ticking now, would have been stalled
  long enough to matter; it polls every ``POLL_S`` only during a stall. Each
  wake takes the GIL from the app's thread, and under a CPU-bound app the
  app's thread then waits for a core to come back: polling every 50 ms cost a
  2 ms-per-request app 5% of its throughput (bench.py cpu-overload).
* A stall is noticed when it reaches its threshold. At half the heartbeat interval the
  front ends are told at once (they stop sending this worker requests); when
  the loop runs again they are told at once too, with the stall's length
  (their ``zasgi_worker_loop_blocked_seconds`` histogram).
* Past ``warn_s`` (--warn-blocked-loop) one warning names the request (id,
  method, path) and the Python stack of the loop's thread from the app's
  entry down to the blocking frame, sampled with ``sys._current_frames``.
* ``EVICT`` from a front end (its --timeout-worker-blocked passed; it answered
  our streams 504): the process exits at once with ``EXIT_EVICTED``, since
  the loop that would drain it is the thing that is stuck. The supervisor
  starts a replacement.

The thread reads the loop's objects (the connections' pulse targets, open
cycles, frames) without locks: attribute reads under the GIL, done while the
loop is stalled or as snapshots; anything that changes under us is skipped
until the next poll. It needs the GIL: a C extension that holds it while it
blocks stops the pulse too, and the worker looks lost, as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from types import FrameType
from typing import Any, Protocol

import zmq

import wire
from wire import events as ev
from wire.channel import configure_dealer
from wire.curve import ClientKeys, apply_client
from wire.errors import DecodeError

from .loopclock import LoopClock

log = logging.getLogger(__name__)

EXIT_EVICTED = 5  # a front end evicted this worker: its loop stayed blocked past --timeout-worker-blocked
POLL_S = 0.05  # how often the thread looks at the loop clock during a stall (EVICT wakes it any time)
MAX_SLEEP_S = 0.5  # the longest it sleeps: a newly welcomed front end hears its first PULSE within this
STACK_LIMIT = 30  # frames in the warning, innermost last
_APPSERVER_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True, slots=True)
class PulseTarget:
    """What the pulse needs of one welcomed connection (FrontendConnection.pulse_target)."""

    endpoint: str
    peer: bytes  # that connection's routing id: the front end's name for this worker
    interval_s: float  # WELCOME.heartbeat_ms in seconds


class Pulsed(Protocol):
    """A front-end connection as the pulse sees it (connection.FrontendConnection)."""

    @property
    def pulse_target(self) -> PulseTarget | None: ...  # None: not welcomed with "pulse"

    def cycle_of(self, task: Any) -> Any: ...  # the stream cycle a task runs, or None


@dataclass(slots=True)
class Stall:
    """The loop's stall now, and what was on it."""

    tick: float  # the loop clock's last tick before it: the loop ran again when that changes
    request: tuple[str, str, str] = ("", "", "")  # (request id, method, path)
    sampled: bool = False  # request (and, past warn_s, the stack) looked up
    warned: bool = False
    told: bool = False  # the front ends heard of it


class Pulse:
    """Resource handling: ``start`` runs the thread, which owns its sockets; ``stop`` ends it and waits
    (its sockets are closed before ``zmq.Context.term``)."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        clock: LoopClock,
        connections: Sequence[Pulsed],
        *,
        worker_id: str,
        warn_s: float,
        curve: ClientKeys | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self._ctx = ctx
        self._clock = clock
        self._connections = connections  # live: discovery adds and retires front ends
        self._worker_id = worker_id
        self._warn_s = warn_s  # 0: never warn
        self._curve = curve
        self._loop = loop or asyncio.get_running_loop()
        self._exit = exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sockets: dict[str, zmq.Socket[Any]] = {}
        self._last_sent: dict[str, float] = {}
        self._counter = 0
        self._stall: Stall | None = None
        self._ended_ms = 0  # a stall that ended, not yet told

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="zasgi-pulse", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        poller = zmq.Poller()
        try:
            while not self._stop.is_set():
                targets = self._targets()
                self._sync_sockets(targets, poller)
                for sock, _ in poller.poll(max(1, ceil(self.wake_in(targets, time.monotonic()) * 1000))):
                    self._read(sock)
                self._beat(targets, time.monotonic())
        except Exception:  # the pulse must never take the worker down; it only stops
            log.exception("pulse thread failed; heartbeats come from the event loop only")
        finally:
            for sock in self._sockets.values():
                sock.close(linger=0)
            self._sockets.clear()

    def wake_in(self, targets: dict[str, PulseTarget], now: float) -> float:
        """Seconds until the next thing that can be due: a PULSE, or a stall reaching its threshold."""
        if self._stall is not None:
            return POLL_S  # to see it end (and grow past warn_s) soon
        due = now + MAX_SLEEP_S
        for endpoint, target in targets.items():
            due = min(due, self._last_sent.get(endpoint, 0.0) + target.interval_s / 2)
        # The loop ticks every tick_s: were it to stop now, its stall starts counting at
        # last_tick + tick_s and matters at the threshold _watch uses.
        due = min(due, self._clock.last_tick + self._clock.tick_s + self._threshold(targets))
        return max(0.0, due - now)

    def _threshold(self, targets: dict[str, PulseTarget]) -> float:
        """The stall at which _watch starts following it."""
        busy_s = _busy_s(targets)
        return min(busy_s, self._warn_s or busy_s)

    def _targets(self) -> dict[str, PulseTarget]:
        targets = {}
        for connection in list(self._connections):
            target = connection.pulse_target
            if target is not None:
                targets[target.endpoint] = target
        return targets

    def _sync_sockets(self, targets: dict[str, PulseTarget], poller: zmq.Poller) -> None:
        for endpoint in [e for e in self._sockets if e not in targets]:
            sock = self._sockets.pop(endpoint)
            poller.unregister(sock)
            sock.close(linger=0)
            self._last_sent.pop(endpoint, None)
        for endpoint in targets:
            if endpoint not in self._sockets:
                self._counter += 1
                sock = self._ctx.socket(zmq.DEALER)
                configure_dealer(sock, routing_id=f"{self._worker_id}/pulse/{self._counter}".encode())
                sock.setsockopt(zmq.SNDHWM, 8)  # a pulse not sent soon is worth nothing
                if self._curve is not None:
                    apply_client(sock, self._curve)
                sock.connect(endpoint)
                poller.register(sock, zmq.POLLIN)
                self._sockets[endpoint] = sock

    def _read(self, sock: zmq.Socket[Any]) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                events = wire.decode(frames)
            except DecodeError:
                continue
            for event in events:
                if type(event) is ev.Evict:
                    self._evicted(event.reason)

    def _evicted(self, reason: str) -> None:
        stall = self._stall
        what = f" in {_describe(stall.request)}" if stall is not None else ""
        log.error("evicted by a front end (%s)%s; exiting with code %d, the supervisor starts a new worker",
                  reason, what, EXIT_EVICTED)  # fmt: skip
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(EXIT_EVICTED)

    def _beat(self, targets: dict[str, PulseTarget], now: float) -> None:
        stalled = self._clock.stalled(now)
        changed = self._watch(stalled, now, _busy_s(targets))
        stall = self._stall
        stalled_ms = int(stalled * 1000) if stall is not None else 0
        request = stall.request if stall is not None else ("", "", "")
        for endpoint, target in targets.items():
            if not changed and now - self._last_sent.get(endpoint, 0.0) < target.interval_s / 2:
                continue
            pulse = ev.Pulse(0, target.peer, stalled_ms, self._ended_ms, *request)
            try:
                self._sockets[endpoint].send_multipart(wire.encode([pulse]), zmq.NOBLOCK)
            except zmq.Again:
                continue  # not connected (yet): IMMEDIATE drops it, the next beat tries again
            self._last_sent[endpoint] = now
        if changed:
            self._ended_ms = 0

    def _watch(self, stalled: float, now: float, busy_s: float) -> bool:
        """Follow the loop's stall; True when the front ends should hear of it now."""
        stall, tick = self._stall, self._clock.last_tick
        if stall is None:
            if stalled < min(busy_s, self._warn_s or busy_s):
                return False
            stall = self._stall = Stall(tick=tick)
        if tick != stall.tick:  # the loop ran again
            self._stall = None
            length = max(0.0, tick - stall.tick - self._clock.tick_s)
            if stall.warned:
                log.info("event loop ran again after %.1fs blocked by %s", length, _describe(stall.request))
            if not stall.told:
                return False
            self._ended_ms = max(1, int(length * 1000))
            return True
        if not stall.sampled:
            stall.sampled = True
            stall.request = self._request_on_loop()
        if self._warn_s and stalled >= self._warn_s and not stall.warned:
            stall.warned = True
            self._warn(stalled, stall)
        if stalled >= busy_s and not stall.told:
            stall.told = True
            return True
        return False

    # ------------------------------------------------------------ what is on the loop

    def _loop_frame(self) -> FrameType | None:
        return sys._current_frames().get(self._clock.thread_id)

    def _request_on_loop(self) -> tuple[str, str, str]:
        """(request id, method, path) of the stream whose task is running on the loop, if any."""
        try:
            task = asyncio.current_task(self._loop)
            if task is None:
                return ("", "", "")
            for connection in list(self._connections):
                cycle = connection.cycle_of(task)
                if cycle is not None:
                    scope = cycle.scope
                    method = scope.get("method", "WEBSOCKET")
                    return (getattr(cycle, "request_id", None) or "", method, scope.get("path", ""))
        except RuntimeError:  # a dict changed under us: the loop moved on
            pass
        return ("", "", "")

    def _warn(self, stalled: float, stall: Stall) -> None:
        frame = self._loop_frame()
        stack = "".join(format_blocking_stack(frame)) if frame is not None else "  (no Python frame)\n"
        log.warning(
            "event loop blocked for %.1fs by %s (a synchronous call in async code?); "
            "it is running:\n%s", stalled, _describe(stall.request), stack.rstrip("\n"),
        )  # fmt: skip


def _busy_s(targets: dict[str, PulseTarget]) -> float:
    """A stall this long is told to the front ends: half the shortest heartbeat interval."""
    return min((t.interval_s for t in targets.values()), default=1.0) / 2


def _describe(request: tuple[str, str, str]) -> str:
    rid, method, path = request
    if not method:
        return "no request (a callback or a background task)"
    return f"request {rid or '-'} {method} {path}"


def format_blocking_stack(frame: FrameType) -> list[str]:
    """The stack of a thread from the app's entry (below zasgi's own frames) to ``frame``, formatted.

    The app's frames are those after the last step from a frame in appserver/ into one outside
    it (the cycle calling the app); without one, the innermost STACK_LIMIT frames.
    """
    summary = traceback.extract_stack(frame)
    start = 0
    for i in range(len(summary) - 1):
        here = os.path.dirname(os.path.abspath(summary[i].filename)) == _APPSERVER_DIR
        there = os.path.dirname(os.path.abspath(summary[i + 1].filename)) == _APPSERVER_DIR
        if here and not there:
            start = i + 1
    frames = summary[start:][-STACK_LIMIT:]
    return traceback.format_list(frames)
