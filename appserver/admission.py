"""Adaptive admission in the worker: the limiter on the app's event loop, reported to the front ends.

Theory of operation. One ``Admission`` per worker process (``--adaptive``, the
default). A timer on the loop that runs the app ticks every ``TICK_S``; how
late it fires is the loop's lag. Each tick hands the limiter (limiter.py,
pure) the lag and the HTTP requests running now, the routers hand it every
finished request's latency (``completed``), and the limit it answers is split
among the front ends that agreed to feature "limit" (``limiter.share``, by the
most each ran at once since the last tick) and sent to each as ``LIMIT`` when
its part changed (PROTOCOL.md §7.1). The worker, not the front
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
from typing import NamedTuple, Protocol

from wire.channel import BATCH_MAX_EVENTS

from .limiter import Limiter, LimiterSettings, share

log = logging.getLogger(__name__)

TICK_S = 0.01  # lag probe and limiter tick while requests run
IDLE_TICK_S = 0.05  # nothing running: probe less often (a burst waits at most this for growth)
# How a worker's answers to a front end are held (``Hold``: Channel.hold_events, hold_s and
# hold_while), so that each message carries several and both sides wake less, without the app
# waiting for work. The worker keeps half its limit running while answers wait: a front end's
# answers leave once that front end's part of the limit is answered, or half the limit if that
# is less (one front end: half its part; with several, the others' requests keep the app busy
# meanwhile), or after HOLD_MAX_S. While the loop lags by LAGGING_S or more (the app keeps it
# busy) and requests still run here, they wait past the end of the loop iteration too (an answer
# with none to come after it leaves at once), where otherwise each iteration sends what it
# answered: a CPU-bound app runs every request the worker read at once, so an iteration's answers
# were what happened to arrive together (~4 a message, two front ends at 2 ms each).
# Measured with two front ends, their parts split by peaks (_report), 2 ms of CPU a request, three
# interleaved rounds (tests/benchmarks/README.md "Session 16"): half the limit instead of half the
# part +0.6% goodput, and with waiting past the iteration's end +1.2% (waiting alone: nothing);
# 1 ms requests 0.951x -> 0.961x uvicorn (no starving); one front end unchanged. A loop that
# stops lagging holds a batch for at most HOLD_MAX_S, once.
HOLD_MAX_S = 0.025
LAGGING_S = 0.005


class Hold(NamedTuple):
    events: int  # Channel.hold_events
    seconds: float  # Channel.hold_s
    across: bool  # Channel.hold_while: while requests run (connection.report_limit)


def hold(part: int, limit: int, lag_s: float) -> Hold:
    """How a worker whose loop lags ``lag_s`` holds its answers to a front end that may run
    ``part`` of its ``limit`` (bodies still arriving not counted: they answer nothing soon)."""
    return Hold(max(1, min(part, limit // 2, BATCH_MAX_EVENTS)), HOLD_MAX_S, lag_s >= LAGGING_S)


class Reporter(Protocol):
    """A front-end connection as admission sees it (connection.FrontendConnection)."""

    @property
    def reports_limit(self) -> bool: ...  # welcomed with feature "limit", not draining

    def admission_counts(self) -> tuple[int, int]: ...  # (running HTTP requests, bodies still arriving)
    def admission_peak(self) -> int: ...  # the most HTTP requests running at once since the last call
    def report_limit(self, limit: int, held: Hold) -> None: ...  # send LIMIT if it changed; hold answers


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
        self._lag_s = 0.0  # the last tick's

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
        lag = self._lag_s = max(0.0, perf_counter() - self._due)
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
        arriving = [c.admission_counts()[1] for c in reporters]
        # Each front end's part by the most it ran at once since the last report, not by what runs
        # now: between the iterations of a CPU-bound app nothing runs, and every front end took the
        # whole limit (two front ends: twice the limit running, twice the admitted latency).
        running = [c.admission_peak() for c in reporters]
        limit, ceiling = self.limiter.limit, self.settings.ceiling
        for i, connection in enumerate(reporters):
            part = min(share(limit, running, i), ceiling)
            connection.report_limit(min(part + arriving[i], ceiling), hold(part, limit, self._lag_s))
