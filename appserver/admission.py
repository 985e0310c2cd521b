"""Adaptive admission in the worker: the limiter on the app's event loop, reported to the front ends.

Theory of operation. One ``Admission`` per worker process (``--adaptive``, the
default). A timer on the loop that runs the app ticks every ``TICK_S``; how
late it fires is the loop's lag. Each tick hands the limiter (limiter.py,
pure) the lag and the HTTP requests running now, the routers hand it every
finished request's latency (``completed``), and the limit it answers is split
among the front ends that agreed to feature "limit" and sent to each as
``LIMIT`` when its part changed (PROTOCOL.md §7.1). The worker, not the front
end, runs the limiter: only it sees its own loop's lag, and with several front
ends only it sees all of its load.

A request whose body is still arriving is not counted as running, and each
front end's limit is raised by the ones it has open: a slow upload waits in
``receive()`` costing the app nothing, so 600 clients trickling bodies must
not take the slots ordinary requests need (issue 17). The worker still
refuses streams beyond ``--capacity`` (Rule 19), however they are counted.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Protocol

from wire.channel import BATCH_MAX_EVENTS

from .limiter import Limiter, LimiterSettings, share

log = logging.getLogger(__name__)

TICK_S = 0.01  # lag probe and limiter tick while requests run
IDLE_TICK_S = 0.05  # nothing running: probe less often (a burst waits at most this for growth)
# While the app keeps the loop busy (a CPU-bound app runs request after request in one
# iteration), a worker's answers to a front end leave together once half of what that front end
# may run here (its LIMIT less the bodies still arriving: they answer nothing soon) is answered,
# or after HOLD_MAX_S: the other half keeps the app busy while the front end sends more, so the
# worker never waits for it, and each message carries several answers, where a fixed 10 ms
# (wire/channel.py STALE_BATCH_S) sent ~5 at 2 ms each and starved the loop if held longer. Fewer messages are fewer wake-ups on both sides: bench.py
# cpu-overload with --capacity-floor 16 (the floor sets the depth that makes batches), 2026-12-07,
# interleaved: one front end 0.954x -> 0.969x uvicorn, two within the noise (0.935x -> 0.958x in
# one run, 0.949x -> 0.951x in another); admitted p99 ~95 -> ~130 ms with two (uvicorn's ~320),
# 45 -> 68 with one; I/O burst unchanged; 1 ms requests unchanged (no starving). An iteration's
# end still sends whatever is held: an app that is not busy waits for nothing.
HOLD_MAX_S = 0.025


def hold(running: int) -> tuple[int, float]:
    """(events, seconds) a worker's answers to a front end that may run ``running`` requests here
    may gather: ``Channel.hold_events`` and ``hold_s``."""
    return max(1, min(running // 2, BATCH_MAX_EVENTS)), HOLD_MAX_S


class Reporter(Protocol):
    """A front-end connection as admission sees it (connection.FrontendConnection)."""

    @property
    def reports_limit(self) -> bool: ...  # welcomed with feature "limit", not draining

    def admission_counts(self) -> tuple[int, int]: ...  # (running HTTP requests, bodies still arriving)
    def report_limit(self, limit: int, running: int) -> None: ...  # send LIMIT if it changed; hold by running


class Admission:
    def __init__(self, settings: LimiterSettings) -> None:
        self.settings = settings
        self._loop = asyncio.get_running_loop()
        self.limiter = Limiter(settings, self._loop.time())
        self.connections: list[Reporter] = []
        self.completed = self.limiter.completed  # per request: the routers call it directly
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # perf_counter() when the tick should run
        self._logged_limit = self.limiter.limit

    def start(self) -> None:
        self._schedule(TICK_S)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def attach(self, connection: Reporter) -> None:
        self.connections.append(connection)

    def detach(self, connection: Reporter) -> None:
        if connection in self.connections:
            self.connections.remove(connection)

    def welcomed(self, connection: Reporter) -> None:
        """A front end agreed to "limit": it opens nothing here until it hears our limit, so now."""
        self._report()

    def _schedule(self, delay_s: float) -> None:
        self._due = perf_counter() + delay_s
        self._timer = self._loop.call_later(delay_s, self._tick)

    def _tick(self) -> None:
        lag = max(0.0, perf_counter() - self._due)
        running = sum(c.admission_counts()[0] for c in self.connections if c.reports_limit)
        limit = self.limiter.tick(self._loop.time(), lag, running)
        logged = self._logged_limit
        if limit >= 2 * logged or 2 * limit <= logged:  # log big moves only
            log.debug("adaptive limit %d (queueing delay %.1f ms)", limit, self.limiter.delay_s * 1e3)
            self._logged_limit = limit
        self._report()
        self._schedule(TICK_S if running or lag > self.settings.target_s else IDLE_TICK_S)

    def _report(self) -> None:
        reporters = [c for c in self.connections if c.reports_limit]
        if not reporters:
            return
        counts = [c.admission_counts() for c in reporters]
        running = [n for n, _ in counts]
        limit, ceiling = self.limiter.limit, self.settings.ceiling
        for i, connection in enumerate(reporters):
            part = min(share(limit, running, i), ceiling)
            # the bodies still arriving raise the limit but not the hold: they answer nothing soon
            connection.report_limit(min(part + counts[i][1], ceiling), part)
