"""frontend.pool: a pure registry, driven with explicit times."""

from __future__ import annotations

import pytest

from frontend.pool import Pool, ProbePlan, WorkerRecord
from wire.states import WorkerState


def record(peer: bytes, *, capacity: int = 2, now: float = 0.0) -> WorkerRecord:
    return WorkerRecord(
        peer=peer, worker_id=peer.decode(), pid=1, capacity=capacity, window_bytes=1024, now=now
    )


def ready_pool(*peers: bytes, capacity: int = 2, now: float = 0.0) -> Pool:
    pool = Pool(dead_after_s=3.0)
    for peer in peers:
        pool.add(record(peer, capacity=capacity, now=now))
        pool.welcome(peer, now)
    return pool


def test_joining_worker_is_not_chosen_until_welcomed() -> None:
    pool = Pool(dead_after_s=3.0)
    pool.add(record(b"a"))
    assert pool.choose() is None
    pool.welcome(b"a", 1.0)
    chosen = pool.choose()
    assert chosen is not None and chosen.state is WorkerState.READY and chosen.welcomed_at == 1.0


def test_choose_prefers_least_in_flight() -> None:
    pool = ready_pool(b"a", b"b", capacity=4)
    a, b = pool.get(b"a"), pool.get(b"b")
    assert a is not None and b is not None
    pool.acquire(a)
    pool.acquire(a)
    pool.acquire(b)
    assert pool.choose() is b


def test_ties_alternate() -> None:
    pool = ready_pool(b"a", b"b", b"c", capacity=10)
    seen = {pool.choose().peer for _ in range(6)}  # type: ignore[union-attr]
    assert seen == {b"a", b"b", b"c"}


def test_full_workers_are_never_chosen() -> None:
    pool = ready_pool(b"a", capacity=2)
    a = pool.get(b"a")
    assert a is not None
    pool.acquire(a)
    pool.acquire(a)
    assert pool.choose() is None
    pool.release(a)
    assert pool.choose() is a
    assert a.served == 1


def test_release_never_goes_negative() -> None:
    pool = ready_pool(b"a")
    a = pool.get(b"a")
    assert a is not None
    pool.release(a)
    assert a.in_flight == 0 and a.served == 0


def test_draining_worker_gets_no_new_streams() -> None:
    pool = ready_pool(b"a")
    pool.drain(b"a")
    assert pool.get(b"a").state is WorkerState.DRAINING  # type: ignore[union-attr]
    assert pool.choose() is None
    pool.drain(b"a")  # a second DRAIN is harmless


def test_expire_removes_silent_workers_only() -> None:
    pool = ready_pool(b"a", b"b", now=0.0)
    pool.seen(b"b", 2.5)
    assert pool.expire(2.9) == []
    gone = pool.expire(3.1)
    assert [r.peer for r in gone] == [b"a"]
    assert gone[0].state is WorkerState.GONE
    assert pool.get(b"a") is None and len(pool) == 1
    assert [r.peer for r in pool.expire(5.6)] == [b"b"]


def test_seen_unknown_peer_is_none() -> None:
    assert Pool(dead_after_s=1.0).seen(b"nobody", 1.0) is None


def test_readding_a_peer_replaces_and_retires_the_old_record() -> None:
    pool = ready_pool(b"a")
    old = pool.get(b"a")
    replaced = pool.add(record(b"a"))
    assert replaced is old and old is not None and old.state is WorkerState.GONE
    assert pool.get(b"a").state is WorkerState.JOINING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], WorkerState.DRAINING),  # joining -> draining
        ([WorkerState.READY], WorkerState.JOINING),
        ([WorkerState.READY, WorkerState.DRAINING], WorkerState.READY),
        ([WorkerState.GONE], WorkerState.READY),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(path: list[WorkerState], bad: WorkerState) -> None:
    rec = record(b"a")
    for state in path:
        rec.to(state)
    before = rec.state
    with pytest.raises(ValueError):
        rec.to(bad)
    assert rec.state is before


def test_remove_is_idempotent() -> None:
    pool = ready_pool(b"a")
    assert pool.remove(b"a") is not None
    assert pool.remove(b"a") is None
    assert pool.ready_count() == 0


# ---------------------------------------------------------------- ProbePlan


def test_probe_plan_asks_for_probes_after_each_disconnect() -> None:
    plan = ProbePlan((0.0, 0.05, 0.25), merge_s=0.02)
    assert plan.next_at() is None and not plan.take_due(100.0)
    plan.disconnected(10.0)
    assert plan.next_at() == 10.0
    assert plan.take_due(10.0)
    assert plan.next_at() == pytest.approx(10.05)
    assert not plan.take_due(10.04)
    assert plan.take_due(10.3)  # two overdue probes are one probe
    assert plan.next_at() is None and len(plan) == 0


def test_probe_plan_merges_a_burst_of_disconnects() -> None:
    plan = ProbePlan((0.0, 0.05, 0.25), merge_s=0.02)
    for i in range(10):  # ten workers restarted at once: still three probes
        plan.disconnected(10.0 + i * 0.001)
    assert len(plan) == 3
    plan.disconnected(10.26)  # later: its 0 ms probe merges with the pending 250 ms one
    assert len(plan) == 5


def test_probe_plan_disconnect_after_a_probe_ran_gets_a_fresh_probe() -> None:
    plan = ProbePlan((0.0,), merge_s=0.02)
    plan.disconnected(5.0)
    assert plan.take_due(5.0)
    plan.disconnected(5.01)  # within merge_s of a probe that already ran: must not be merged
    assert plan.next_at() == pytest.approx(5.01)


def test_a_lingering_worker_keeps_its_streams_takes_nothing_new_and_is_counted_apart() -> None:
    pool = ready_pool(b"old", b"new")
    old = pool.get(b"old")
    assert old is not None
    pool.acquire(old, websocket=True)
    pool.drain(b"old")
    pool.linger(b"old")
    assert old.state is WorkerState.LINGERING and old.previous is WorkerState.DRAINING
    assert pool.lingering() == [old] and pool.ready_count() == 1
    assert {pool.choose(), pool.choose(), pool.choose(websocket=False)} == {pool.get(b"new")}
    pool.release(old, websocket=True)  # its session ended
    assert pool.remove(b"old") is old and old.state is WorkerState.GONE and pool.lingering() == []


def test_linger_without_a_drain_first_still_moves_along_the_table() -> None:
    pool = ready_pool(b"a")
    pool.linger(b"a")
    record_ = pool.get(b"a")
    assert record_ is not None and record_.state is WorkerState.LINGERING
    pool.linger(b"a")  # a second LINGER changes nothing
    assert record_.state is WorkerState.LINGERING
    with pytest.raises(ValueError, match="lingering -> ready"):
        record_.to(WorkerState.READY)


def test_a_stalled_pulse_makes_a_worker_busy_and_a_running_one_ready_again() -> None:
    pool = ready_pool(b"a", b"b", capacity=4)
    a = pool.get(b"a")
    assert a is not None
    assert not pool.pulse(a, 0.2, 0.5, now=1.0)  # lag, not a stall
    assert a.state is WorkerState.READY and a.blocked_since is None
    assert pool.pulse(a, 0.6, 0.5, now=2.0)
    assert a.state is WorkerState.BUSY and a.blocked_since == pytest.approx(1.4)
    assert {pool.choose().peer for _ in range(4)} == {b"b"}  # type: ignore[union-attr]
    assert pool.ready_count() == 2  # it will serve again: the queue waits for it
    assert not pool.pulse(a, 1.6, 0.5, now=3.0)  # still busy, since the stall began
    assert a.blocked_since == pytest.approx(1.4) and a.last_seen == 3.0
    pool.seen(b"b", 5.0)
    assert pool.expire(5.9) == [] and pool.blocked_past(5.9, 4.0) == [a]  # its pulse keeps it
    assert pool.pulse(a, 0.0, 0.5, now=4.0)
    assert a.state is WorkerState.READY and a.blocked_since is None
    assert pool.blocked_past(10.0, 1.0) == []


def test_a_busy_worker_drains_lingers_and_is_lost_like_any() -> None:
    pool = ready_pool(b"a", b"b")
    a, b = pool.get(b"a"), pool.get(b"b")
    assert a is not None and b is not None
    pool.pulse(a, 1.0, 0.5, now=1.0)
    pool.drain(b"a")  # DRAIN that crossed its stall on the wire
    assert a.state is WorkerState.DRAINING
    assert not pool.pulse(a, 0.0, 0.5, now=2.0) and a.state is WorkerState.DRAINING  # not READY again
    pool.pulse(b, 1.0, 0.5, now=1.0)
    pool.linger(b"b")
    assert b.state is WorkerState.LINGERING
    c = record(b"c")
    pool.add(c)
    pool.welcome(b"c", 0.0)
    pool.pulse(c, 1.0, 0.5, now=1.0)
    assert pool.expire(10.0) == [a, b, c]  # pulses stopped: lost
    assert c.state is WorkerState.GONE
