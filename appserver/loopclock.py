"""When the worker's event loop last ran: one monotonic timestamp, written by the loop, read by threads.

A timer on the loop stores ``time.monotonic()`` every ``TICK_S``. Another
thread (pulse.py) reads it: ``stalled(now)`` is how long the loop has not run
beyond the tick it was due for. A float attribute written by one thread and
read by another needs no lock under the GIL (the read sees the old or the new
value, both valid). One timer callback every 50 ms costs the loop nothing
measurable (bench.py: hello CPU per request unchanged).
"""

from __future__ import annotations

import asyncio
import threading
import time

TICK_S = 0.05


class LoopClock:
    def __init__(self, tick_s: float = TICK_S) -> None:
        self.tick_s = tick_s
        self.last_tick = time.monotonic()
        self.thread_id = threading.get_ident()  # the loop's thread (its Python stack, pulse.py)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start ticking on the running loop (from its thread)."""
        self._loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stalled(self, now: float) -> float:
        """Seconds the loop is late on its tick at ``now`` (monotonic); 0 while it runs."""
        return max(0.0, now - self.last_tick - self.tick_s)

    def _tick(self) -> None:
        assert self._loop is not None
        self.last_tick = time.monotonic()
        self._timer = self._loop.call_later(self.tick_s, self._tick)
