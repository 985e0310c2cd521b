"""Worker slots for requests: take one now, or wait in a queue that sheds by delay (codel.py).

A request that finds no free slot (every READY worker at its limit, pool.py)
waits here. The queue serves the oldest first until its oldest has waited
longer than ``target_s``, then the newest first; once that has lasted
``interval_s`` it refuses (503 + Retry-After) every waiter older than
``target_s`` instead of keeping it for the whole ``timeout_s``, as long as
requests keep coming as fast as they leave (a burst that only drains is
served whole; codel.py has the table). A waiter is one future; a freed slot is handed to the next waiter
and taken for it at once, so a slot can't be stolen between the wake-up and
the waiter running. A waiter cancelled (its client left) after being handed a
slot gives it back. A request being replayed (its worker was lost) asks with
``first=True``: it already waited its turn once, so it is served before every
other waiter and is never refused for a full queue or for overload.

Refusals are paced by service: each slot handed to a waiter earns the queue
``REFUSALS_PER_SERVED`` refusal (up to ``REFUSAL_BURST``), and overload
shedding spends them; out of refusals, the queue sheds again when a served
waiter earns one (``wake``), not on a timer (a 10 ms timer was 100 more
front-end wake-ups a second for as long as an overload lasted). A client
refused comes back (wrk, a retrying browser): refusing at once or every
250 ms would turn an overload into a storm of
requests the front end answers 503 instead of serving (issue 17: a refusal
costs the front end a parse and a write, a good part of what serving costs
it). So refusing never takes more of the front end than serving does, and a
refused client waits longer when the workers serve fewer; the ones served
still come newest first.
``timeout_s`` bounds every wait regardless.

With no READY worker for longer than ``no_worker_grace_s`` (none ever joined,
or every one was lost) waiting is pointless: waiters are refused then, and new
requests at once, until a worker joins (issue 21: a front end without workers
looked hung for the whole queue timeout).

One timer per queue, not one per waiter: it fires at the next time the
policy or a deadline can change something (the oldest waiter's), and costs
nothing while nobody waits. Waiters that left are dropped lazily.
Refusals are counted by reason in ``shed`` (metrics.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import ClassVar

from .codel import QueueMode, QueuePolicy
from .pool import Pool, WorkerRecord


class NoCapacity(Exception):
    """No worker slot for a request: the client gets 503."""

    reason: ClassVar[str] = "timeout"  # the ``shed`` counter it adds to


class QueueFull(NoCapacity):
    reason: ClassVar[str] = "full"


class QueueTimeout(NoCapacity):
    reason: ClassVar[str] = "timeout"


class Overloaded(NoCapacity):
    """It would have waited longer than the target in a queue that stands (codel.py)."""

    reason: ClassVar[str] = "overload"


class NoWorkers(NoCapacity):
    reason: ClassVar[str] = "no_workers"


class ShuttingDown(NoCapacity):
    reason: ClassVar[str] = "shutdown"


SHED_REASONS = ("overload", "timeout", "full", "no_workers", "shutdown")
REFUSALS_PER_SERVED = 1.0  # overload refusals a served waiter pays for
REFUSAL_BURST = 100.0  # refusals saved up at most (also the budget on entering overload)
PACE_S = 0.01  # a burst draining with waiters past the target: look again this soon
_OVERLOAD = QueueMode.OVERLOAD


class SlotQueue:
    def __init__(
        self,
        pool: Pool,
        *,
        size: int | None,
        timeout_s: float,
        target_s: float | None = None,
        interval_s: float = 2.0,
        no_worker_grace_s: float | None = None,
        websocket: bool = False,
    ) -> None:
        """``size`` None: no bound but the clients' connections; ``target_s`` None: never shed
        before ``timeout_s`` (FIFO throughout); ``no_worker_grace_s`` None: wait for workers."""
        self._pool = pool
        self._websocket = websocket  # the kind of slot: HTTP or WebSocket (Rule 19 counts them apart)
        self._size = size
        self._replay_timeout_s = timeout_s
        target = timeout_s if target_s is None else min(target_s, timeout_s)
        interval = interval_s if target_s is not None else timeout_s
        self.policy = QueuePolicy(target_s=target, interval_s=interval, timeout_s=timeout_s)
        # formatted once: a float format per refusal was ~2% of the front end's CPU under overload
        # (perf, bench.py cpu-overload)
        self._overload_reason = f"waited over {target:g}s in an overloaded queue"
        self._grace_s = no_worker_grace_s
        # (since, waiter), the oldest on the left
        self.waiters: deque[tuple[float, asyncio.Future[WorkerRecord]]] = deque()
        self._replays: deque[asyncio.Future[WorkerRecord]] = deque()
        self._live = 0  # waiters in ``waiters`` still waiting (the rest left and are skipped)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._no_worker_since: float | None = None  # no READY worker since then (workers_changed)
        self.shed: dict[str, int] = dict.fromkeys(SHED_REASONS, 0)
        self._budget = REFUSAL_BURST  # overload refusals it may make now
        self._owed = False  # out of refusals with waiters past the target: wake() sheds when it can
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return self._live + len(self._replays)

    async def acquire(self, *, first: bool = False) -> WorkerRecord:
        """A slot on the least loaded READY worker; waits when none is free (``first``: before all).

        Raises:
            QueueFull, QueueTimeout, Overloaded, NoWorkers, ShuttingDown (all ``NoCapacity``).
        """
        if self._closed:
            raise ShuttingDown("the front end is shutting down")
        if first or not len(self):
            record = self._pool.choose(self._websocket)
            if record is not None:
                self._pool.acquire(record, self._websocket)
                return record
        if first:
            loop = self._loop or self._bind()
            self._check_workers(loop)
            return await self._wait_replay(loop)
        fut = self.enqueue()
        try:
            return await fut
        except asyncio.CancelledError:
            self.left(fut)
            raise

    def try_acquire(self) -> WorkerRecord | None:
        """A free slot now, or None (then ``acquire`` or ``enqueue``): the common case needs no await."""
        if self._closed or self._live or self._replays:
            return None
        record = self._pool.choose(self._websocket)
        if record is not None:
            self._pool.acquire(record, self._websocket)
        return record

    def enqueue(self) -> asyncio.Future[WorkerRecord]:
        """A place at the back of the queue, for a request ``try_acquire`` found no slot for: a
        future that gets its slot, or a ``NoCapacity`` to answer 503 with. Whoever cancels it (its
        client left) passes it to ``left``. No task needed: the request path adds a callback.

        Raises:
            QueueFull, NoWorkers, ShuttingDown (refused at once).
        """
        if self._closed:
            raise ShuttingDown("the front end is shutting down")
        loop = self._loop or self._bind()
        now = self._check_workers(loop)
        if self._size is not None and self._live >= self._size:
            self.shed["full"] += 1
            raise QueueFull(f"{self._live} requests already wait for a worker")
        fut: asyncio.Future[WorkerRecord] = loop.create_future()
        if not self._live:
            self._drop_left()
            self.policy.update(now, None)  # it emptied since the timer last looked
        self.waiters.append((now, fut))
        self._live += 1
        self.policy.arrived(now)
        self._schedule()
        return fut

    def left(self, fut: asyncio.Future[WorkerRecord]) -> None:
        """An ``enqueue`` future whose client left: cancelled in the queue (its entry is skipped
        when reached), or already handed a slot (given back)."""
        if fut.cancelled():
            self._live -= 1
        else:
            self._give_back(fut)

    def _give_back(self, fut: asyncio.Future[WorkerRecord]) -> None:
        """The slot ``fut`` was handed, if it was, to a client that has left: free it for the next."""
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            self._pool.release(fut.result(), self._websocket)
            self.wake()

    def _check_workers(self, loop: asyncio.AbstractEventLoop) -> float:
        """Now; raises NoWorkers when none has been READY for longer than the grace."""
        now = loop.time()
        if self._no_worker_since is not None and self._grace_s is not None:
            if now - self._no_worker_since >= self._grace_s:
                self.shed["no_workers"] += 1
                raise NoWorkers(f"no worker for {now - self._no_worker_since:.1f}s")
        return now

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def _wait_replay(self, loop: asyncio.AbstractEventLoop) -> WorkerRecord:
        fut: asyncio.Future[WorkerRecord] = loop.create_future()
        self._replays.append(fut)
        timer = loop.call_later(self._replay_timeout_s, _time_out, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            self._give_back(fut)
            raise
        finally:
            timer.cancel()
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                try:
                    self._replays.remove(fut)
                except ValueError:
                    pass

    def wake(self) -> None:
        """Hand free slots to waiters (a slot was freed, a limit grew, a worker joined)."""
        while self._replays or self._live:
            record = self._pool.choose(self._websocket)
            if record is None:
                break
            fut = self._next()
            if fut is None:
                break
            self._pool.acquire(record, self._websocket)
            fut.set_result(record)
            self.policy.departed(self._loop.time() if self._loop is not None else 0.0)
            if self._budget < REFUSAL_BURST:
                self._budget += REFUSALS_PER_SERVED
        if self._owed and self._budget >= 1.0:
            self._owed = False
            self._look()

    def _next(self) -> asyncio.Future[WorkerRecord] | None:
        """The next live waiter, taken off the queue: replays, then oldest or newest first."""
        replays = self._replays
        while replays:
            fut = replays.popleft()
            if not fut.done():
                return fut
        waiters = self.waiters
        pop = waiters.pop if self.policy.lifo else waiters.popleft
        while waiters:
            fut = pop()[1]
            if not fut.done():
                self._live -= 1
                return fut
        return None

    def _drop_left(self) -> None:
        waiters = self.waiters
        while waiters and waiters[0][1].done():
            waiters.popleft()

    # ------------------------------------------------------------ the queue's timer

    def _schedule(self, at: float | None = None) -> None:
        """Set the timer for the next change (``at``: this time, a burst draining past the target)."""
        loop = self._loop
        if loop is None or self._closed:
            return
        self._drop_left()
        oldest = self.waiters[0][0] if self.waiters else None
        if at is None and self._owed and oldest is not None:
            at = oldest + self.policy.timeout_s  # till wake() sheds again, only the deadline is due
        elif at is None:
            at = self.policy.next_change(oldest)
        waiting = self.waiters or self._replays
        if self._no_worker_since is not None and self._grace_s is not None and waiting:
            grace_at = self._no_worker_since + self._grace_s
            at = grace_at if at is None else min(at, grace_at)
        if at is None:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        # uvloop returns a plain Handle (no .when()) for a time within a millisecond: keep our own.
        self._timer_at = at
        self._timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._look()

    def _look(self) -> None:
        """Refuse what the policy and the budget say to, then set the timer for the next change."""
        assert self._loop is not None
        now = self._loop.time()
        if self._no_worker_since is not None and self._grace_s is not None:
            if now - self._no_worker_since >= self._grace_s:
                self._fail_all(NoWorkers(f"no worker for {now - self._no_worker_since:.1f}s"))
                return
        self._drop_left()
        self._owed = False
        waiters, policy = self.waiters, self.policy
        policy.update(now, waiters[0][0] if waiters else None)
        paced = False
        while waiters:
            age = now - waiters[0][0]
            if age >= policy.timeout_s:
                exc: NoCapacity = QueueTimeout("no worker became free in time")
            elif policy.mode is _OVERLOAD and age >= policy.target_s:
                if not policy.standing:  # a burst draining: nothing to shed unless arrivals resume
                    paced = True
                    break
                if self._budget < 1.0:  # none to spend till a served waiter earns one
                    self._owed = True
                    break
                self._budget -= 1.0
                exc = Overloaded(self._overload_reason)
            else:
                break
            fut = waiters.popleft()[1]
            self._live -= 1
            policy.departed(now)
            self.shed[exc.reason] += 1
            fut.set_exception(exc)
            self._drop_left()
        if not waiters:
            policy.update(now, None)
        self._schedule(now + PACE_S if paced else None)

    def _fail_all(self, exc: NoCapacity) -> None:
        for fut in [f for _, f in self.waiters] + list(self._replays):
            if not fut.done():
                self.shed[exc.reason] += 1
                fut.set_exception(exc)
        self.waiters.clear()
        self._replays.clear()
        self._live = 0
        self.policy.update(0.0, None)

    # ------------------------------------------------------------ workers come and go

    def workers_changed(self, now: float) -> None:
        """The pool's READY workers changed (joined, drained, lost): serve waiters, or start the grace."""
        self._loop = self._loop or asyncio.get_running_loop()
        if self._pool.ready_count():
            self._no_worker_since = None
            self.wake()
            return
        if self._no_worker_since is None:
            self._no_worker_since = now
            self._schedule()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail_all(ShuttingDown("the front end is shutting down"))


def _time_out(fut: asyncio.Future[WorkerRecord]) -> None:
    if not fut.done():
        fut.set_exception(QueueTimeout("no worker became free in time"))
