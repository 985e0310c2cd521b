"""What every request adds to the front end's metrics: plain ints, floats and bucket arrays.

The hot half of the metrics, compiled with the request path (wire/compiled.py):
a request's end (``request_ended``, from the access log's hook), a WebSocket's
end, and a request's wait for a slot (``queue_waited``) cost a few additions
here (~0.5 µs a request interpreted, against ~2.3 µs for prometheus_client's
locked Counter/Histogram children). ``metrics.py`` owns the registry and turns
these numbers into metric families when scraped, on the same event loop: no
lock is needed.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence


class Buckets:
    """A histogram's per-bucket counts (``le`` inclusive, +Inf last) and sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.sum += value


class Traffic:
    """The per-request numbers, and the calls that add to them."""

    def __init__(self, latency_bounds: Sequence[float], wait_bounds: Sequence[float]) -> None:
        self.created = time.time()
        self.by_status: dict[int, int] = {}
        self.status_created: dict[int, float] = {}  # a status's first response (its child's birth)
        self.latency = Buckets(latency_bounds)
        self.wait = Buckets(wait_bounds)
        self.bytes_in = 0
        self.bytes_out = 0
        self.websockets_ended = 0

    def request_ended(self, status: int, duration_s: float, bytes_in: int, bytes_out: int) -> None:
        by_status = self.by_status
        if status in by_status:
            by_status[status] += 1
        else:  # once per status code
            by_status[status] = 1
            self.status_created[status] = time.time()
        self.latency.observe(duration_s)
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def websocket_ended(self) -> None:
        self.websockets_ended += 1

    def queue_waited(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def dispatched_at_once(self) -> None:
        """``queue_waited(0.0)``, the common case, in one step."""
        self.wait.counts[0] += 1
