"""Worker slots for requests: take one now, or wait in a bounded FIFO (DESIGN: "no capacity
anywhere: the request waits in a bounded queue; past its timeout it gets 503").

A waiter is one future; a freed slot is handed to the oldest live waiter and
taken for it at once, so a slot can't be stolen between the wake-up and the
waiter running. A waiter cancelled (its client left) after being handed a
slot gives it back. A request being replayed (its worker was lost) asks with
``first=True``: it already waited its turn once, so it goes to the head of
the queue and is never refused for a full queue.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .pool import Pool, WorkerRecord


class NoCapacity(Exception):
    """No worker slot for a request: the client gets 503."""


class QueueFull(NoCapacity):
    pass


class QueueTimeout(NoCapacity):
    pass


class ShuttingDown(NoCapacity):
    pass


class SlotQueue:
    def __init__(self, pool: Pool, *, size: int, timeout_s: float, websocket: bool = False) -> None:
        self._pool = pool
        self._websocket = websocket  # the kind of slot: HTTP or WebSocket (Rule 19 counts them apart)
        self._size = size
        self._timeout_s = timeout_s
        self.waiters: deque[asyncio.Future[WorkerRecord]] = deque()  # (read-only outside)
        self._closed = False

    def __len__(self) -> int:
        return len(self.waiters)

    async def acquire(self, *, first: bool = False) -> WorkerRecord:
        """A slot on the least loaded READY worker; waits (FIFO; ``first``: at the head) when none is free.

        Raises:
            QueueFull, QueueTimeout, ShuttingDown (all ``NoCapacity``).
        """
        if self._closed:
            raise ShuttingDown("the front end is shutting down")
        if first or not self.waiters:
            record = self._pool.choose(self._websocket)
            if record is not None:
                self._pool.acquire(record, self._websocket)
                return record
        if not first and len(self.waiters) >= self._size:
            raise QueueFull(f"{len(self.waiters)} requests already wait for a worker")
        return await self._wait(first)

    def try_acquire(self) -> WorkerRecord | None:
        """A free slot now, or None (then ``acquire`` queues): the common case needs no await."""
        if self._closed or self.waiters:
            return None
        record = self._pool.choose(self._websocket)
        if record is not None:
            self._pool.acquire(record, self._websocket)
        return record

    async def _wait(self, first: bool) -> WorkerRecord:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WorkerRecord] = loop.create_future()
        if first:
            self.waiters.appendleft(fut)
        else:
            self.waiters.append(fut)
        timer = loop.call_later(self._timeout_s, _time_out, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # handed a slot as the client left
                self._pool.release(fut.result(), self._websocket)
                self.wake()
            raise
        finally:
            timer.cancel()
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                # timed out, cancelled or closed: maybe still queued. (A waiter handed a slot was
                # popped by wake(); a scan of a deep queue for it cost ~2x the CPU per request.)
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass

    def wake(self) -> None:
        """Hand free slots to the oldest waiters (a slot was freed or a worker joined)."""
        while self.waiters:
            record = self._pool.choose(self._websocket)
            if record is None:
                return
            fut = self.waiters.popleft()
            if not fut.done():
                self._pool.acquire(record, self._websocket)
                fut.set_result(record)

    def close(self) -> None:
        self._closed = True
        for fut in self.waiters:
            if not fut.done():
                fut.set_exception(ShuttingDown("the front end is shutting down"))
        self.waiters.clear()


def _time_out(fut: asyncio.Future[WorkerRecord]) -> None:
    if not fut.done():
        fut.set_exception(QueueTimeout("no worker became free in time"))
