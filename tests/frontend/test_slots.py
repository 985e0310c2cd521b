"""The slot queue (frontend/slots.py) on a real loop with short times: order, shedding, pacing, no workers."""

from __future__ import annotations

import asyncio

import pytest

from frontend.pool import Pool, WorkerRecord
from frontend.slots import NoWorkers, Overloaded, QueueFull, QueueTimeout, SlotQueue


def pool_with(capacity: int, *, limit_feature: bool = False) -> tuple[Pool, WorkerRecord]:
    pool = Pool(dead_after_s=3.0)
    features = frozenset({"limit"}) if limit_feature else frozenset()
    record = WorkerRecord(peer=b"w", worker_id="w", pid=1, capacity=capacity, window_bytes=1024,
                          features=features, now=0.0)  # fmt: skip
    pool.add(record)
    pool.welcome(b"w", 0.0)
    return pool, record


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fifo_under_the_target_newest_first_above_it() -> None:
    pool, record = pool_with(1)
    q = SlotQueue(pool, size=None, timeout_s=5.0, target_s=0.05, interval_s=5.0)
    await q.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await q.acquire()
        order.append(i)

    tasks = [asyncio.ensure_future(wait(i)) for i in range(3)]
    await settle()
    pool.release(record)
    q.wake()
    await settle()
    assert order == [0]  # FIFO: the oldest
    await asyncio.sleep(0.15)  # the oldest has now waited past the target: newest first
    tasks += [asyncio.ensure_future(wait(3))]
    await settle()
    for _ in range(3):
        pool.release(record)
        q.wake()
        await settle()
    assert order == [0, 3, 2, 1]
    assert q.policy.mode.value == "above"
    await asyncio.gather(*tasks)


async def closed_loop(q: SlotQueue, pool: Pool, record: WorkerRecord, clients: int, seconds: float,
                      serve_every_s: float) -> tuple[list[float], list[float]]:  # fmt: skip
    """``clients`` each asking again as soon as answered; one slot, freed every ``serve_every_s``.
    The waits of the served and of the refused."""
    loop = asyncio.get_running_loop()
    served: list[float] = []
    refused: list[float] = []
    end = loop.time() + seconds

    async def client() -> None:
        while loop.time() < end:
            started = loop.time()
            try:
                await q.acquire()
            except Overloaded:
                refused.append(loop.time() - started)
                await asyncio.sleep(0)
                continue
            served.append(loop.time() - started)
            await asyncio.sleep(serve_every_s)  # the request runs
            pool.release(record)
            q.wake()

    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    await asyncio.sleep(seconds)
    q.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    return served, refused


async def test_a_standing_queue_sheds_paced_by_service_and_serves_the_newest() -> None:
    pool, record = pool_with(1)
    q = SlotQueue(pool, size=None, timeout_s=5.0, target_s=0.05, interval_s=0.2)
    q._budget = 0.0  # no refusals saved up: each one is paid for by a request served
    served, refused = await closed_loop(q, pool, record, 30, 1.5, 0.01)
    assert q.policy.overloads >= 1 and refused  # it stood past target + interval: it shed
    assert len(refused) <= len(served) + 1  # never more refusals than requests served
    assert all(wait >= 0.05 for wait in refused)  # only those that waited past the target
    served.sort()
    assert served[len(served) // 2] < 0.05  # newest first: the median served waited little


async def test_out_of_refusals_it_sheds_when_a_waiter_is_served_not_on_a_timer() -> None:
    pool, record = pool_with(1)
    q = SlotQueue(pool, size=None, timeout_s=5.0, target_s=0.02, interval_s=0.05)
    await q.acquire()  # the only slot
    q._budget = 0.0
    loop = asyncio.get_running_loop()
    waiters = []
    for _ in range(20):  # requests keep coming, none leaves: a standing queue past target + interval
        waiters.append(asyncio.ensure_future(q.acquire()))
        await asyncio.sleep(0.01)
    assert q.policy.mode.value == "overload" and q.shed["overload"] == 0  # nothing to spend
    # No timer polls for a refusal to spend: the next one due is the oldest's deadline.
    assert q._timer_at >= q.waiters[0][0] + 5.0 - 1e-6 > loop.time() + 4.0
    pool.release(record)
    q.wake()  # the newest is served and earns one refusal, spent at once on the oldest
    await settle()
    assert waiters[-1].result() is record
    assert q.shed["overload"] == 1 and isinstance(waiters[0].exception(), Overloaded)
    assert all(not w.done() for w in waiters[1:-1])
    q.close()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_burst_that_only_drains_is_served_whole() -> None:
    pool, record = pool_with(1)
    q = SlotQueue(pool, size=None, timeout_s=5.0, target_s=0.05, interval_s=0.1)
    waiters = [asyncio.ensure_future(q.acquire()) for _ in range(40)]  # one burst, nothing after
    await settle()
    for _ in range(40):  # served one every 10 ms: 0.4 s, far past target + interval
        await asyncio.sleep(0.01)
        pool.release(record)
        q.wake()
    done = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(r is record for r in done), [r for r in done if r is not record][:3]
    assert q.shed["overload"] == 0 and q.policy.overloads == 1  # overloaded by age, yet nothing shed


async def test_the_queue_timeout_bounds_every_wait() -> None:
    pool, _ = pool_with(1)
    q = SlotQueue(pool, size=None, timeout_s=0.1, target_s=None)
    await q.acquire()
    with pytest.raises(QueueTimeout):
        await q.acquire()
    assert q.shed["timeout"] == 1


async def test_a_full_queue_refuses_at_once() -> None:
    pool, _ = pool_with(1)
    q = SlotQueue(pool, size=1, timeout_s=5.0)
    await q.acquire()
    first = asyncio.ensure_future(q.acquire())
    await settle()
    with pytest.raises(QueueFull):
        await q.acquire()
    q.close()
    await asyncio.gather(first, return_exceptions=True)


async def test_with_no_worker_past_the_grace_waiters_and_newcomers_get_503() -> None:
    pool = Pool(dead_after_s=3.0)
    q = SlotQueue(pool, size=None, timeout_s=10.0, no_worker_grace_s=0.2)
    loop = asyncio.get_running_loop()
    q.workers_changed(loop.time())
    started = loop.time()
    with pytest.raises(NoWorkers):
        await q.acquire()  # waited the grace, not the 10 s timeout
    assert 0.15 <= loop.time() - started < 2.0
    with pytest.raises(NoWorkers):
        await asyncio.wait_for(q.acquire(), 0.05)  # past the grace: at once
    assert q.shed["no_workers"] == 2
    pool.add(WorkerRecord(peer=b"w", worker_id="w", pid=1, capacity=1, window_bytes=1, now=0.0))
    pool.welcome(b"w", 0.0)
    q.workers_changed(loop.time())  # a worker joined: served again
    assert (await q.acquire()).worker_id == "w"


async def test_a_worker_with_the_limit_feature_takes_nothing_until_its_first_limit() -> None:
    pool, record = pool_with(100, limit_feature=True)
    q = SlotQueue(pool, size=None, timeout_s=5.0)
    assert q.try_acquire() is None
    waiter = asyncio.ensure_future(q.acquire())
    await settle()
    assert pool.set_limit(record, 2)  # grew: waiters may be served
    q.wake()
    assert await waiter is record
    assert q.try_acquire() is record
    assert q.try_acquire() is None  # at its limit of 2
    assert not pool.set_limit(record, 1) and record.limit == 1
    assert (pool.set_limit(record, 10**6), record.limit) == (True, 100)  # clamped to its capacity


async def test_a_replay_goes_first_and_is_never_shed() -> None:
    pool, record = pool_with(1)
    q = SlotQueue(pool, size=1, timeout_s=5.0, target_s=0.01, interval_s=0.01)
    await q.acquire()
    queued = asyncio.ensure_future(q.acquire())
    await settle()
    replay = asyncio.ensure_future(q.acquire(first=True))  # a full queue does not refuse it
    await settle()
    pool.release(record)
    q.wake()
    assert await replay is record
    q.close()
    await asyncio.gather(queued, return_exceptions=True)
