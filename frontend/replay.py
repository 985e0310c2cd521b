"""When a request whose worker was lost goes to another (PROTOCOL §9, Rule 21a). Pure: no clock, no I/O.

Replaying the requests of a worker that died is what makes kill -9 cost no
client anything. It must not turn one bad request into a cascade: a request
that kills its worker (a segfault in a C extension, an OOM) would otherwise
walk through the pool, killing each worker it reaches, running its side
effects once per worker. So:

* ``may_replay``: a request goes to a second worker once at most. In flight on
  two workers that were both lost, it is answered 502, and ``poison_message``
  names it (method, path, request id) so the operator finds it.
* ``ReplaySpread``: the replays of one lost worker's requests leave over
  ``SPREAD_S``, not all at once. If one of them kills the worker it lands on,
  the ones sent after that see the worker gone and go elsewhere, instead of
  all dying with it (each would then be on its second lost worker: 502).

A worker that is *busy* (its loop stalled, Rule 9a) is not lost: its requests
are neither replayed nor counted here.
"""

from __future__ import annotations

MAX_LOSSES = 1  # lost workers a request may have been in flight on and still be replayed
SPREAD_S = 0.25  # the replays of one lost worker's requests leave over this long


def may_replay(losses: int) -> bool:
    """Whether a request whose worker was just lost, the ``losses``-th under it, may go to another."""
    return losses <= MAX_LOSSES


def poison_message(method: str, path: str, request_id: str, workers: tuple[str, ...]) -> str:
    """The log line for a request lost with two workers (or more)."""
    return (
        f"request {request_id} {method} {path} was in flight on {len(workers)} workers that were all lost "
        f"({', '.join(workers)}): answered 502, not replayed again. A request that kills its worker? "
        f"(a poison request: look at what {method} {path} does)"
    )


class ReplaySpread:
    """Paces the replays that follow a loss: the n requests of a lost worker leave ``spread_s / n`` apart.

    ``lost`` is told of each loss and how many of its requests may be replayed; ``delay`` is asked
    by each replay as it goes, and answers how long to wait first (0 for the first one, and for a
    replay not following a loss of several).
    """

    def __init__(self, spread_s: float = SPREAD_S) -> None:
        self.spread_s = spread_s
        self._step = 0.0
        self._next = 0.0  # when the next replay may leave
        self._until = 0.0  # the pacing window of the last loss ends

    def lost(self, now: float, victims: int) -> None:
        if victims <= 1 or self.spread_s <= 0:
            return
        self._step = self.spread_s / victims
        self._next = max(self._next, now)
        self._until = max(self._until, now + self.spread_s + self._step)

    def delay(self, now: float) -> float:
        if now >= self._until:
            return 0.0
        at = max(now, self._next)
        self._next = at + self._step
        return at - now
