"""The worker registry: who is connected, in which state, how busy. Pure.

No zmq, no asyncio, no clock: every time is passed in as ``now`` (seconds on
any monotonic clock), so tests drive expiry with plain numbers.

Invariants:
* a record's state moves only along ``wire.states.WORKER_TRANSITIONS``
  (JOINING -> READY <-> BUSY, READY|BUSY -> DRAINING [-> LINGERING] -> GONE),
  through ``WorkerRecord.to``; a LINGERING worker (LINGER, PROTOCOL Rule 11a)
  keeps its WebSocket sessions and started responses, takes nothing new, and
  is counted apart (``lingering``); a BUSY worker (its PULSE says its event
  loop is stalled, Rule 9a) is alive: it keeps its streams (none is replayed)
  and takes nothing new until a PULSE says its loop runs again; it counts
  among the workers that serve (``ready_count``), as it will again;
* ``in_flight`` counts slots taken (streams not yet closed on the wire, plus
  slots reserved for a request about to open one); ``choose`` never returns a
  worker whose ``in_flight`` has reached its ``limit``: its ``capacity``
  (PROTOCOL Rule 19), or the smaller limit it reports now (feature "limit",
  §7.1: 0 until its first LIMIT);
  WebSocket streams count apart, in ``ws_in_flight`` against ``ws_capacity``,
  and go only to workers that negotiated the "websocket" feature;
* a GONE record is no longer in the pool; ``release`` on it is harmless.
  Before its streams hear of the loss, the dispatcher notes on it what is
  known about delivery (``said_bye``, ``unsent``), so each stream can tell
  whether its request may have reached the app (PROTOCOL §9).

``ProbePlan`` is the other half of liveness: when to check, after a transport
disconnect, which workers are really gone (see dispatch.py).
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from wire.states import WORKER_TRANSITIONS, WorkerState

_READY = WorkerState.READY  # (hot-path rule 1: tests/benchmarks/README.md)
_BUSY = WorkerState.BUSY


class WorkerRecord:
    """One worker connection as the front end sees it."""

    __slots__ = (
        "peer", "worker_id", "pid", "info", "capacity", "limit", "ws_capacity", "window_bytes",
        "features", "state", "previous", "last_seen", "welcomed_at", "in_flight", "ws_in_flight", "served",
        "said_bye", "unsent", "pulse_peer", "blocked_since", "stall", "evicted",
    )  # fmt: skip

    def __init__(
        self,
        *,
        peer: bytes,
        worker_id: str,
        pid: int,
        capacity: int,
        ws_capacity: int = 0,
        window_bytes: int,
        features: frozenset[str] = frozenset(),
        info: dict[str, Any] | None = None,
        now: float,
    ) -> None:
        self.peer = peer  # ROUTER routing id of the worker's DEALER
        self.worker_id = worker_id
        self.pid = pid
        self.capacity = capacity
        # HTTP streams it may have now: its capacity, or what it reports (feature "limit"): none
        # until it does.
        self.limit = 0 if "limit" in features else capacity
        self.ws_capacity = ws_capacity
        self.window_bytes = window_bytes  # initial request-direction window (HELLO)
        self.features = features  # negotiated: what WELCOME said we will use
        self.info = info or {}
        self.state = WorkerState.JOINING
        self.previous = WorkerState.JOINING  # the state before the last move: was a lost worker draining?
        self.last_seen = now
        self.welcomed_at: float | None = None
        self.in_flight = 0
        self.ws_in_flight = 0
        self.served = 0
        # How it was lost (set before its streams are told): BYE means it will run nothing
        # more, so a stream it never acknowledged never reached the app (Rule 12, Rule 20);
        # ``unsent`` holds the stream ids whose opening event never left this process.
        self.said_bye = False
        self.unsent: frozenset[int] = frozenset()
        # Its pulse (feature "pulse", Rule 9a): the routing id PULSE comes from (EVICT goes there),
        # since when its loop is stalled (None: it runs) and the request on it then (id, method,
        # path); ``evicted``: lost because it stayed blocked (its streams get 504, none replayed).
        self.pulse_peer: bytes | None = None
        self.blocked_since: float | None = None
        self.stall: tuple[str, str, str] = ("", "", "")
        self.evicted = False

    def to(self, new: WorkerState) -> None:
        if new not in WORKER_TRANSITIONS[self.state]:
            raise ValueError(f"worker {self.worker_id}: {self.state.value} -> {new.value} is not allowed")
        self.previous, self.state = self.state, new

    def __repr__(self) -> str:
        return (
            f"<WorkerRecord {self.worker_id} pid={self.pid} {self.state.value} "
            f"{self.in_flight}/{self.limit}/{self.capacity}>"
        )


class Pool:
    def __init__(self, *, dead_after_s: float) -> None:
        self.dead_after_s = dead_after_s
        self._workers: dict[bytes, WorkerRecord] = {}
        self._order: tuple[WorkerRecord, ...] = ()  # _workers' values, rebuilt when it changes
        self._rr = 0  # rotates the scan start so equal loads alternate
        self.joins = 0  # workers welcomed, and workers forgotten, since start (metrics)
        self.losses = 0

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Any:
        return iter(list(self._workers.values()))

    def get(self, peer: bytes) -> WorkerRecord | None:
        return self._workers.get(peer)

    def add(self, record: WorkerRecord) -> WorkerRecord | None:
        """Register a JOINING worker; returns the record it replaces (now GONE), if any."""
        old = self.remove(record.peer)
        self._workers[record.peer] = record
        self._order = tuple(self._workers.values())
        return old

    def welcome(self, peer: bytes, now: float) -> None:
        record = self._workers[peer]
        record.to(WorkerState.READY)
        record.welcomed_at = now
        self.joins += 1

    def drain(self, peer: bytes) -> None:
        record = self._workers[peer]
        if record.state is not WorkerState.DRAINING:
            record.to(WorkerState.DRAINING)

    def linger(self, peer: bytes) -> None:
        """LINGER: the draining worker serves only its sessions from now on (DRAIN first if it skipped it)."""
        record = self._workers[peer]
        if record.state is WorkerState.READY or record.state is WorkerState.BUSY:
            record.to(WorkerState.DRAINING)
        if record.state is WorkerState.DRAINING:
            record.to(WorkerState.LINGERING)

    def remove(self, peer: bytes) -> WorkerRecord | None:
        """Forget a worker: it said BYE, went silent, or became unreachable."""
        record = self._workers.pop(peer, None)
        if record is not None:
            self._order = tuple(self._workers.values())
            record.to(WorkerState.GONE)
            self.losses += 1
        return record

    def seen(self, peer: bytes, now: float) -> WorkerRecord | None:
        record = self._workers.get(peer)
        if record is not None:
            record.last_seen = now
        return record

    @staticmethod
    def pulse(record: WorkerRecord, stalled_s: float, busy_s: float, now: float) -> bool:
        """A PULSE: ``record`` lives; its loop has not run for ``stalled_s`` (busy from ``busy_s``).
        Whether it moved between READY and BUSY (so waiters may be served, or must look elsewhere)."""
        record.last_seen = now
        if stalled_s >= busy_s:
            if record.blocked_since is None:
                record.blocked_since = now - stalled_s
            if record.state is _READY:
                record.to(_BUSY)
                return True
            return False
        record.blocked_since = None
        if record.state is _BUSY:
            record.to(_READY)
            return True
        return False

    def blocked_past(self, now: float, limit_s: float) -> list[WorkerRecord]:
        """The workers whose loop has been stalled for ``limit_s`` or longer (--timeout-worker-blocked)."""
        since = now - limit_s
        return [r for r in self._workers.values() if r.blocked_since is not None and r.blocked_since <= since]

    def expire(self, now: float) -> list[WorkerRecord]:
        """Remove and return the workers silent for longer than ``dead_after_s`` (Rule 10)."""
        deadline = now - self.dead_after_s
        dead = [r for r in self._workers.values() if r.last_seen < deadline]
        for record in dead:
            self.remove(record.peer)
        return dead

    def choose(self, websocket: bool = False) -> WorkerRecord | None:
        """The READY worker with the fewest streams and a free slot (of the kind asked for), or None."""
        workers = self._order  # called per request: no list built here
        n = len(workers)
        best: WorkerRecord | None = None
        best_load = 0
        if n == 0:
            return None
        if n == 1 and not websocket:
            record = workers[0]
            ready = record.state is _READY and record.in_flight < record.limit
            return record if ready else None
        self._rr = (self._rr + 1) % n
        for i in range(n):
            record = workers[(self._rr + i) % n]
            if record.state is not _READY:
                continue
            if websocket:
                if "websocket" not in record.features or record.ws_in_flight >= record.ws_capacity:
                    continue
                load = record.ws_in_flight
            elif record.in_flight >= record.limit:
                continue
            else:
                load = record.in_flight
            if best is None or load < best_load:
                best, best_load = record, load
        return best

    @staticmethod
    def set_limit(record: WorkerRecord, limit: int) -> bool:
        """The worker's LIMIT (1..capacity, clamped); whether it grew (waiters may be served)."""
        old, record.limit = record.limit, max(1, min(limit, record.capacity))
        return record.limit > old

    @staticmethod
    def acquire(record: WorkerRecord, websocket: bool = False) -> None:
        if websocket:
            record.ws_in_flight += 1
        else:
            record.in_flight += 1

    @staticmethod
    def release(record: WorkerRecord, websocket: bool = False) -> None:
        if websocket:
            if record.ws_in_flight > 0:
                record.ws_in_flight -= 1
                record.served += 1
        elif record.in_flight > 0:
            record.in_flight -= 1
            record.served += 1

    def ready_count(self) -> int:
        """Workers that serve new streams, now (READY) or once their loop runs again (BUSY)."""
        return sum(1 for r in self._workers.values() if r.state is _READY or r.state is _BUSY)

    def lingering(self) -> list[WorkerRecord]:
        return [r for r in self._workers.values() if r.state is WorkerState.LINGERING]


PROBE_DELAYS_S = (0.0, 0.05, 0.25)  # the ROUTER drops a dead peer's pipe a little after the event
PROBE_MERGE_S = 0.02  # probes this close together are one probe


class ProbePlan:
    """When to probe the workers after transport disconnects. Pure: times are passed in.

    A disconnect event names a file descriptor, not a worker, so the dispatcher
    sends every worker a HEARTBEAT: a send to a routing id whose pipe is gone
    fails at once (ROUTER_MANDATORY). The pipe can outlive the event by a few
    milliseconds, so each disconnect asks for probes at ``delays`` after it; a
    burst of disconnects shares probes that would fall within ``merge_s``.
    """

    def __init__(self, delays: tuple[float, ...] = PROBE_DELAYS_S, *, merge_s: float = PROBE_MERGE_S) -> None:
        self._delays = delays
        self._merge_s = merge_s
        self._due: list[float] = []  # sorted

    def __len__(self) -> int:
        return len(self._due)

    def disconnected(self, now: float) -> None:
        for delay in self._delays:
            at = now + delay
            if not any(abs(at - due) <= self._merge_s for due in self._due):
                insort(self._due, at)

    def next_at(self) -> float | None:
        """When the next probe is due, or None."""
        return self._due[0] if self._due else None

    def take_due(self, now: float) -> bool:
        """Whether a probe is due at ``now`` (all probes due by then count as one)."""
        n = 0
        while n < len(self._due) and self._due[n] <= now:
            n += 1
        del self._due[:n]
        return n > 0
