"""When the request queue is overloaded, and what that changes. Pure: times are passed in.

CoDel (Nichols and Jacobson) told apart a *good* queue, a burst that drains
within an interval, from a *bad* one, that stands: it drops only when the
queueing delay has stayed above a target for a whole interval. Facebook's
adaptive LIFO added that under a standing queue the newest requests are the
ones worth serving: their clients are still waiting, and serving them first
keeps their latency low while the oldest, the likeliest to be abandoned
anyway, are refused. Here, with the age of the oldest waiter as the delay:

| mode     | serves | a waiter gets 503 + Retry-After | becomes                                 |
|----------|--------|---------------------------------|-----------------------------------------|
| NORMAL   | FIFO   | after the queue timeout         | ABOVE: the oldest waited over target    |
| ABOVE    | LIFO   | after the queue timeout         | NORMAL: back under target, or empty;    |
|          |        |                                 | OVERLOAD: above target for an interval  |
| OVERLOAD | LIFO   | once it waited over target,     | NORMAL: the queue empties               |
|          |        | while the queue stands          |                                         |

A queue *stands* while requests keep coming about as fast as they leave
(arrivals at least ``STANDING`` of departures over the last interval): the
clients of an overload, or clients that retry. One that is only draining (a
burst has arrived, nothing new comes) is never shed, however old: every
waiter will be served, and refusing one helps nobody. So a burst (10,000
clients at once, a worker starting up) is served however it comes, only
newest first once it lasts; a queue that stands above the target longer than
an interval sheds what it cannot serve in time, and the requests it does
serve waited little. The shed ones cost their client at most ``target``
of waiting, and the front end one short response each (slots.py).
"""

from __future__ import annotations

from enum import Enum

STANDING = 0.8  # arrivals / departures over the last interval at which the queue stands


class QueueMode(Enum):
    NORMAL = "normal"
    ABOVE = "above"
    OVERLOAD = "overload"


TRANSITIONS: dict[QueueMode, frozenset[QueueMode]] = {
    QueueMode.NORMAL: frozenset({QueueMode.ABOVE}),
    QueueMode.ABOVE: frozenset({QueueMode.NORMAL, QueueMode.OVERLOAD}),
    QueueMode.OVERLOAD: frozenset({QueueMode.NORMAL}),
}


class QueuePolicy:
    def __init__(self, *, target_s: float, interval_s: float, timeout_s: float) -> None:
        self.target_s = target_s
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.mode = QueueMode.NORMAL
        self.lifo = False  # serve the newest first (ABOVE, OVERLOAD)
        self.wait_s = timeout_s  # how long a waiter may wait in this mode
        self._above_since = 0.0  # when the oldest waiter crossed the target (ABOVE)
        self.overloads = 0  # times OVERLOAD was entered (metrics)
        # Arrivals and departures in the previous and the current half interval.
        self._arrivals = [0, 0]
        self._departures = [0, 0]
        self._bucket_at = 0.0

    def arrived(self, now: float) -> None:
        self._rotate(now)
        self._arrivals[1] += 1

    def departed(self, now: float) -> None:
        self._rotate(now)
        self._departures[1] += 1

    @property
    def standing(self) -> bool:
        """Requests come about as fast as they leave: not a burst draining (nor nothing coming)."""
        arrivals = self._arrivals[0] + self._arrivals[1]
        return arrivals > 0 and arrivals >= STANDING * (self._departures[0] + self._departures[1])

    @property
    def sheds(self) -> bool:
        """Waiters older than the target are refused now."""
        return self.mode is QueueMode.OVERLOAD and self.standing

    def _rotate(self, now: float) -> None:
        half = self.interval_s / 2
        if now - self._bucket_at < half:
            return
        if now - self._bucket_at < 2 * half:
            self._arrivals = [self._arrivals[1], 0]
            self._departures = [self._departures[1], 0]
        else:
            self._arrivals, self._departures = [0, 0], [0, 0]
        self._bucket_at = now

    def to(self, mode: QueueMode) -> None:
        if mode not in TRANSITIONS[self.mode]:
            raise ValueError(f"queue: {self.mode.value} -> {mode.value} is not allowed")
        self.mode = mode
        self.lifo = mode is not QueueMode.NORMAL
        self.wait_s = self.target_s if mode is QueueMode.OVERLOAD else self.timeout_s
        if mode is QueueMode.OVERLOAD:
            self.overloads += 1

    def update(self, now: float, oldest_since: float | None) -> None:
        """The queue's state at ``now``: ``oldest_since``, when its oldest waiter came (None: empty)."""
        self._rotate(now)
        mode = self.mode
        if oldest_since is None:
            if mode is not QueueMode.NORMAL:
                self.to(QueueMode.NORMAL)
            return
        above = now - oldest_since > self.target_s
        if mode is QueueMode.NORMAL:
            if above:
                self.to(QueueMode.ABOVE)
                self._above_since = oldest_since + self.target_s
                mode = QueueMode.ABOVE
        if mode is QueueMode.ABOVE:
            if not above:
                self.to(QueueMode.NORMAL)
            elif now - self._above_since >= self.interval_s:
                self.to(QueueMode.OVERLOAD)

    def next_change(self, oldest_since: float | None) -> float | None:
        """The next time ``update`` or a waiter's deadline may change something (None: nothing queued)."""
        if oldest_since is None:
            return None
        mode = self.mode
        if mode is QueueMode.NORMAL:
            return oldest_since + min(self.target_s, self.timeout_s) + 1e-6
        if mode is QueueMode.ABOVE:
            return min(self._above_since + self.interval_s, oldest_since + self.timeout_s)
        return oldest_since + self.target_s
