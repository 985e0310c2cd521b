"""The supervisor's loop states, with fake processes: restarts, rolls, recycling, scaling, stop.

``Supervisor.step()`` is one pass of the loop; it never waits, so every test
drives it by hand: a fake process is "ready" when the test sets its Event and
"exits" when the test sets its exit code.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from appserver.config import PoolConfig, WorkerConfig
from appserver.supervisor import Phase, Supervisor, Why, WorkerProc
from wire import shm

CONFIG = WorkerConfig(app="tests.apps.probe:app", connect=("ipc:///tmp/unused.sock",), graceful_timeout_s=5)


class FakeProcess:
    _pids = iter(range(10_000, 20_000))

    def __init__(self) -> None:
        self.pid = next(self._pids)
        self.exitcode: int | None = None
        self.signals: list[str] = []
        self.closed = False

    def terminate(self) -> None:
        self.signals.append("TERM")

    def kill(self) -> None:
        self.signals.append("KILL")
        self.exitcode = -signal.SIGKILL

    def close(self) -> None:
        self.closed = True


class FakePool(Supervisor):
    def _start_process(self, index: int) -> tuple[Any, Any, Any]:
        served = SimpleNamespace(value=0) if self.pool.max_requests else None
        return FakeProcess(), threading.Event(), served

    def _send_retire(self, proc: WorkerProc) -> None:
        proc.process.signals.append("RETIRE")


def make(workers: int = 3, **pool: Any) -> FakePool:
    sup = FakePool(config=CONFIG, pool=PoolConfig(workers=workers, **pool))
    sup.start_workers()
    for proc in currents(sup):
        proc.ready.set()
    sup.step()
    assert all(p.phase is Phase.SERVING for p in currents(sup))
    return sup


def currents(sup: Supervisor) -> list[WorkerProc]:
    return [s.current for s in sup.slots if s.current is not None]


def successors(sup: Supervisor) -> list[WorkerProc]:
    return [s.successor for s in sup.slots if s.successor is not None]


def signal_(sup: Supervisor, signum: int) -> None:
    sup._on_signal(signum, None)
    sup.step()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "zasgi.supervisor"]


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zasgi.supervisor")


@pytest.fixture(autouse=True)
def shm_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake workers' pids are not theirs: sweep (shm.sweep) a directory of the test's own."""
    monkeypatch.setattr(shm, "DIRECTORY", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------- crashes


def test_killed_worker_is_restarted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(3)
    victim = sup.slots[2].current
    assert victim is not None
    victim.process.exitcode = -signal.SIGKILL
    sup.step()
    assert f"worker 2 (pid {victim.pid}) died: killed by SIGKILL; restarting in 0.0s" in messages(caplog)
    assert victim.process.closed
    sup.step()
    new = sup.slots[2].current
    assert new is not None and new.pid != victim.pid and new.phase is Phase.STARTING


def test_a_dead_workers_unmapped_segment_is_removed(shm_dir: Path) -> None:
    sup = make(2)
    victim, other = sup.slots[0].current, sup.slots[1].current
    assert victim is not None and other is not None
    # Killed after creating its segment, before the front end mapped (and so unlinked) it.
    (shm_dir / f"{shm.prefix(victim.pid)}0123abcd").write_bytes(b"x")
    (shm_dir / f"{shm.prefix(other.pid)}4567ef01").write_bytes(b"x")
    victim.process.exitcode = -signal.SIGKILL
    sup.step()
    assert sorted(p.name for p in shm_dir.iterdir()) == [f"{shm.prefix(other.pid)}4567ef01"]


def test_worker_dying_before_ready_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(1)
    sup.slots[0].current.process.exitcode = 1  # type: ignore[union-attr]
    sup.step()
    sup.step()
    starting = sup.slots[0].current
    assert starting is not None and starting.phase is Phase.STARTING
    starting.process.exitcode = 4
    sup.step()
    assert "restarting in 1.0s" in messages(caplog)[-1]
    assert "exited with code 4 (app could not be loaded)" in messages(caplog)[-1]
    sup.step()
    assert sup.slots[0].current is None  # still backing off


def test_sighup_no_longer_stops_the_pool() -> None:
    sup = make(1)
    sup._on_signal(signal.SIGHUP, None)
    assert sup._stop_signal is None
    sup._on_signal(signal.SIGTERM, None)
    assert sup._stop_signal == signal.SIGTERM
    sup._on_signal(signal.SIGINT, None)
    assert sup._stop_signal == -1  # a second one forces


# ---------------------------------------------------------------- rolling restart


def finish_roll(sup: Supervisor, limit: int = 50) -> list[WorkerProc]:
    """Make every new worker ready as it appears; return them in start order."""
    started: list[WorkerProc] = []
    for _ in range(limit):
        if sup.roll is None:
            return started
        for new in successors(sup):
            if new not in started:
                started.append(new)
                new.ready.set()
        sup.step()
    raise AssertionError("roll did not finish")


def test_roll_replaces_every_worker_new_first(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(3)
    old = currents(sup)
    signal_(sup, signal.SIGHUP)
    assert [s.index for s in sup.slots if s.successor] == [0]  # one at a time (max_surge 1)
    assert old[0].process.signals == []  # the old one waits for its replacement
    new = finish_roll(sup)
    assert [p.why for p in new] == [Why.RELOAD] * 3
    assert currents(sup) == new
    assert all(p.process.signals == ["RETIRE"] and p.phase is Phase.DRAINING for p in old)
    assert sup.draining == old  # still supervised
    assert any(m.startswith("reload complete: 3 worker(s) replaced") for m in messages(caplog))
    for proc in old:
        proc.process.exitcode = 0
    sup.step()
    assert sup.draining == [] and all(p.process.closed for p in old)


def test_roll_with_max_surge_starts_batches(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(3, max_surge=2)
    signal_(sup, signal.SIGHUP)
    assert len(successors(sup)) == 2
    assert finish_roll(sup) and len(sup.draining) == 3


def test_roll_stops_when_a_new_worker_fails(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(3, max_surge=2)
    old = currents(sup)
    signal_(sup, signal.SIGHUP)
    first, second = successors(sup)
    second.ready.set()
    first.process.exitcode = 4
    sup.step()
    assert sup.roll is None
    failed = (
        "reload failed: new worker exited with code 4 (app could not be loaded); "
        "keeping the 3 running workers"
    )
    assert failed in messages(caplog)
    # Slot 1's replacement was ready first and took over; slot 0 and 2 keep their old worker.
    assert currents(sup) == [old[0], second, old[2]]
    assert old[0].process.signals == [] and old[2].process.signals == []
    assert successors(sup) == []


def test_roll_gives_up_on_a_new_worker_that_is_never_ready(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(2, worker_start_timeout_s=5)
    old = currents(sup)
    signal_(sup, signal.SIGHUP)
    (new,) = successors(sup)
    new.started_at -= 6
    sup.step()
    assert new.process.signals == ["KILL"]
    failed = "reload failed: new worker was not ready within 5s (killed); keeping the 2 running workers"
    assert failed in messages(caplog)
    assert currents(sup) == old and sup.roll is None
    sup.step()
    assert new not in sup.draining and new.process.closed  # reaped


def test_reload_during_a_roll_starts_over_after_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(2)
    signal_(sup, signal.SIGHUP)
    (first,) = successors(sup)
    signal_(sup, signal.SIGHUP)
    assert successors(sup) == [first]  # no extra start while the batch runs
    new = finish_roll(sup)
    assert new[0] is first
    assert [p.index for p in new] == [0, 0, 1]  # the batch, then from the top: slot 0 again, slot 1
    assert currents(sup) == new[1:]
    assert "reload complete: 3 worker(s) replaced" in messages(caplog)[-1]


def test_old_worker_dying_during_its_replacement_is_not_restarted(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(1)
    (old,) = currents(sup)
    signal_(sup, signal.SIGHUP)
    (new,) = successors(sup)
    old.process.exitcode = -signal.SIGSEGV
    sup.step()
    died = f"worker 0 (pid {old.pid}) died: killed by SIGSEGV; its replacement (pid {new.pid}) is starting"
    assert died in messages(caplog)
    assert sup.slots[0].current is None and successors(sup) == [new]
    new.ready.set()
    sup.step()
    assert currents(sup) == [new] and sup.roll is None


# ---------------------------------------------------------------- recycling


def test_max_requests_recycles_new_first_one_at_a_time(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(3, max_requests=10, max_requests_jitter=5)
    old = currents(sup)
    assert all(10 <= p.limit <= 15 for p in old)
    for proc in old:
        proc.served.value = proc.limit
    sup.step()
    (new,) = successors(sup)  # max_surge 1: one at a time
    assert new.why is Why.RECYCLE and old[new.index].process.signals == []
    assert any("requests (limit" in m and "starting its replacement" in m for m in messages(caplog))
    new.ready.set()
    sup.step()
    assert old[new.index].process.signals == ["RETIRE"]
    assert len(successors(sup)) == 1  # the next one


def test_failed_recycle_keeps_the_old_worker_and_retries_later(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(1, max_requests=1)
    (old,) = currents(sup)
    old.served.value = 5
    sup.step()
    (new,) = successors(sup)
    new.process.exitcode = 4
    sup.step()
    assert "keeps serving, next try in 1.0s" in messages(caplog)[-1]
    assert currents(sup) == [old] and old.process.signals == []
    sup.step()
    assert successors(sup) == []  # backing off
    sup.slots[0].retry_at = time.monotonic()
    sup.step()
    assert len(successors(sup)) == 1


# ---------------------------------------------------------------- scaling


def test_ttin_adds_and_ttou_drains_the_newest(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(2)
    signal_(sup, signal.SIGTTIN)
    assert len(sup.slots) == 3 and sup.slots[2].current is not None
    newest = sup.slots[2].current
    signal_(sup, signal.SIGTTOU)
    assert len(sup.slots) == 2 and newest.process.signals == ["RETIRE"] and sup.draining == [newest]
    signal_(sup, signal.SIGTTOU)
    signal_(sup, signal.SIGTTOU)
    assert len(sup.slots) == 1
    assert "SIGTTOU ignored: the pool keeps at least 1 worker" in messages(caplog)


def test_ttou_during_a_roll_drops_the_slot_from_it() -> None:
    sup = make(2)
    signal_(sup, signal.SIGHUP)
    signal_(sup, signal.SIGTTOU)  # slot 1 (pending in the roll) leaves
    new = finish_roll(sup)
    assert [p.index for p in new] == [0]


def test_draining_worker_overdue_is_killed(caplog: pytest.LogCaptureFixture) -> None:
    sup = make(2)
    signal_(sup, signal.SIGTTOU)
    (leaving,) = sup.draining
    leaving.drain_deadline = time.monotonic() - 1
    sup.step()
    assert leaving.process.signals == ["RETIRE", "KILL"]
    sup.step()
    assert sup.draining == []


# ---------------------------------------------------------------- stop


def test_stop_terminates_everyone_but_does_not_resignal_draining_workers() -> None:
    sup = make(2)
    signal_(sup, signal.SIGHUP)
    finish_roll(sup)
    for proc in currents(sup):
        proc.process.terminate = lambda p=proc.process: (p.signals.append("TERM"), setattr(p, "exitcode", 0))
    for proc in sup.draining:
        proc.process.exitcode = 0
    assert sup.stop() == 0
    assert all(p.process.signals == ["TERM"] for p in currents(sup))
    assert all(p.process.signals == ["RETIRE"] for p in sup.draining)  # the drain's signal only


# ---------------------------------------------------------------- lingering (issue 20)


def test_replaced_workers_may_linger_for_the_stream_drain_limit() -> None:
    sup = make(1)
    (old,) = currents(sup)
    signal_(sup, signal.SIGHUP)
    finish_roll(sup)
    assert old.process.signals == ["RETIRE"] and old.lingers
    stream_drain_s = CONFIG.stream_drain_timeout_s
    assert old.drain_deadline - time.monotonic() > stream_drain_s - 5  # not killed after the grace


def test_past_max_lingering_the_oldest_generation_closes_its_sessions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = make(2, max_lingering=3)
    for _ in range(3):
        signal_(sup, signal.SIGHUP)
        finish_roll(sup)
    assert [p.generation for p in sup.draining] == [0, 0, 1, 1, 2, 2]
    told = [p for p in sup.draining if p.process.signals == ["RETIRE", "TERM"]]
    kept = [p for p in sup.draining if p.process.signals == ["RETIRE"]]
    assert [p.generation for p in told] == [0, 0, 1] and [p.generation for p in kept] == [1, 2, 2]
    assert all(not p.lingers and p.drain_deadline - time.monotonic() < 20 for p in told)
    assert sum("closes its sessions: more than 3 workers would linger" in m for m in messages(caplog)) == 3
    for proc in kept[:1]:  # one that ends by itself frees its place
        proc.process.exitcode = 0
    sup.step()
    signal_(sup, signal.SIGHUP)
    finish_roll(sup)
    assert [p.generation for p in sup.draining if p.lingers] == [2, 3, 3]


def test_no_lingering_with_a_zero_stream_drain_or_limit() -> None:
    for sup in (FakePool(config=replace(CONFIG, stream_drain_timeout_s=0), pool=PoolConfig(workers=1)),
                FakePool(config=CONFIG, pool=PoolConfig(workers=1, max_lingering=0))):  # fmt: skip
        sup.start_workers()
        currents(sup)[0].ready.set()
        sup.step()
        (old,) = currents(sup)
        signal_(sup, signal.SIGHUP)
        finish_roll(sup)
        assert old.process.signals == ["TERM"] and not old.lingers


def test_stop_ends_the_lingering_too() -> None:
    sup = make(1)
    (old,) = currents(sup)
    signal_(sup, signal.SIGHUP)
    finish_roll(sup)
    for proc in [*currents(sup), old]:
        proc.process.terminate = lambda p=proc.process: (p.signals.append("TERM"), setattr(p, "exitcode", 0))
    assert sup.stop() == 0
    assert old.process.signals == ["RETIRE", "TERM"]  # its sessions close within the graceful timeout
