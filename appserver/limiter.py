"""How many HTTP requests this worker should run at once, learned from what its app does. Pure.

No asyncio, no clock: ``tick(now, lag_s, in_flight)`` is given the time, the
event loop's lag measured by the caller and the requests running now;
``completed(latency_s)`` is told each finished request. ``limit`` is the answer.
admission.py runs it on the worker's loop and reports the limit to the front
ends (PROTOCOL.md §7.1, feature "limit"); README "Overload" says why.

The signal is the *queueing delay inside the worker*: how long a request that
could run waits for the CPU (or for anything else the app shares) because too
many run at once. Two estimates of it, the larger wins:

* the loop's lag: how late a timer fires, i.e. how long a ready callback waits
  behind the others. It needs no baseline and does not care which endpoints
  are called, so it is the one that catches CPU-bound work;
* the window's median latency minus the latency when nothing queued (a
  low median of recent windows, plus 10% for noise): it catches waits the
  loop cannot see (a thread pool, a connection pool).

Every ``window_s`` the limit moves (the latency estimate waits until a few
requests have finished),
TCP Vegas / gradient style (Netflix concurrency-limits, Envoy adaptive concurrency):

* delay over ``target_s``: the queue holds about ``(delay - target) x throughput``
  requests too many (Little's law): take that many off (at most 90%: a loop
  blocked by CPU-bound work ticks rarely, so each window must count; half
  when nothing finished at all: something blocks the loop);
* delay under the target while the limit was in use (the front end held
  requests back): grow by ``limit x (target - delay) / target``, at most the
  requests that finished meanwhile (ACK-clocked, as TCP's slow start: an app
  that answers in 50 ms doubles its limit no faster than every 50 ms). Well
  under the target (half) this happens at every tick, not only at the
  window's end, so a burst is taken in a few round trips;
* the limit was not in use: nothing was learnt, nothing moves.

The limit stays within ``[floor, ceiling]``. It converges from either side on
the concurrency at which the worker's own queue holds ``target_s`` of delay:
enough to keep the loop busy, no more; what is left waits in the front end's
queue, which can shed it (frontend/slots.py). tests/appserver/test_limiter.py
checks convergence, the floor and bounded oscillation against a model app.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from math import ceil

MIN_SAMPLES = 8  # latencies needed for a median (fewer: they wait for the next window)
MAX_SAMPLES = 1024  # latencies kept per window (the median needs no more)
BASELINE_WINDOWS = 100  # the no-queue latency: a low (10th percentile) median of this many windows
LATENCY_TOLERANCE = 0.1  # latency this much over that is noise, not queueing
USED = 0.8  # the limit was in use when running requests reached this share of it
MAX_CUT = 0.1  # one window cuts the limit to no less than this share of it


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    floor: int = 16  # never fewer: keeps the loop fed across a front-end round trip (admission.hold)
    ceiling: int = 4096  # --capacity: never more (the worker refuses beyond it, Rule 19)
    initial: int = 32
    target_s: float = 0.010  # queueing delay the worker may hold
    window_s: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise ValueError(f"capacity floor must be 1..capacity ({self.ceiling}), got {self.floor}")
        if self.target_s <= 0 or self.window_s <= 0:
            raise ValueError("adaptive target and window must be positive")


class Limiter:
    def __init__(self, settings: LimiterSettings, now: float) -> None:
        self.settings = settings
        self._limit = float(min(max(settings.initial, settings.floor), settings.ceiling))
        self.limit = round(self._limit)
        self.delay_s = 0.0  # the last window's queueing-delay estimate (metrics, logs)
        self._medians: deque[float] = deque(maxlen=BASELINE_WINDOWS)
        self._start(now)

    def _start(self, now: float) -> None:
        self._since = now
        if not hasattr(self, "_samples") or len(self._samples) >= MIN_SAMPLES:
            self._samples: list[float] = []
        self._completed = 0
        self._grown = 0  # of those, already grown on by tick()
        self._lag_sum = 0.0
        self._ticks = 0
        self._peak = 0

    def completed(self, latency_s: float | None) -> None:
        """A request finished; ``latency_s`` None: not a fair sample (its body trickled in)."""
        self._completed += 1
        if latency_s is not None and len(self._samples) < MAX_SAMPLES:
            self._samples.append(latency_s)

    def tick(self, now: float, lag_s: float, in_flight: int) -> int:
        """One lag probe and the requests running now; the limit (moved if a window ended)."""
        self._lag_sum += lag_s
        self._ticks += 1
        if in_flight > self._peak:
            self._peak = in_flight
        elapsed = now - self._since
        if elapsed >= self.settings.window_s:
            self._decide(elapsed)
            self._start(now)
        elif in_flight >= USED * self._limit and max(lag_s, self.delay_s) <= self.settings.target_s / 2:
            # Clearly uncongested and in use: grow now, ACK-clocked, rather than at the window's
            # end (a burst of 3,000 clients should not wait for windows to go by).
            self._grow(max(lag_s, self.delay_s), self._completed - self._grown)
        return self.limit

    def _grow(self, delay: float, completed: int) -> None:
        s = self.settings
        limit = self._limit
        room = limit * (s.target_s - delay) / s.target_s
        self._limit = min(limit + max(0.0, min(room, completed, limit)), float(s.ceiling))
        self.limit = round(self._limit)
        self._grown += completed

    def _decide(self, elapsed: float) -> None:
        s = self.settings
        delay = self._lag_sum / self._ticks
        if len(self._samples) >= MIN_SAMPLES:
            samples = sorted(self._samples)
            median = samples[len(samples) // 2]
            self._medians.append(median)
            low = sorted(self._medians)[len(self._medians) // 10]  # a min, robust to noise
            delay = max(delay, median - low * (1 + LATENCY_TOLERANCE))
        self.delay_s = delay
        throughput = self._completed / elapsed
        limit = self._limit
        if delay > s.target_s:
            # Nothing finished while the loop lagged (a request blocking it): halve.
            excess = (delay - s.target_s) * throughput if self._completed else limit / 2
            limit = max(limit - excess, limit * MAX_CUT)
        elif self._peak >= USED * limit and self._completed > self._grown:
            self._grow(delay, self._completed - self._grown)
            return
        self._limit = min(max(limit, float(s.floor)), float(s.ceiling))
        self.limit = round(self._limit)


def share(limit: int, running: list[int], i: int) -> int:
    """Connection ``i``'s part of ``limit`` when ``running[j]`` requests run on connection j:
    an even part at least, and whatever the others leave unused (several front ends)."""
    others = sum(running) - running[i]
    return max(ceil(limit / len(running)), limit - others)
