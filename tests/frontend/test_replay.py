"""Replay after a lost worker, once at most, spread out (frontend/replay.py, PROTOCOL Rule 21a)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from frontend import config as cfg
from frontend.replay import ReplaySpread, may_replay, poison_message
from wire import events as ev

pytestmark = pytest.mark.timeout(30)

SLOW_HEARTBEAT = cfg.Heartbeat(interval_ms=5000, liveness=3)  # losses here are seen by the monitor


def test_a_request_is_replayed_after_its_first_lost_worker_only() -> None:
    assert may_replay(1)
    assert not may_replay(2)


def test_poison_message_names_the_request() -> None:
    line = poison_message("GET", "/crash", "abc123", ("w-1", "w-2"))
    assert "abc123 GET /crash" in line and "w-1, w-2" in line and "502" in line


def test_replays_of_one_loss_leave_spread_over_the_window() -> None:
    spread = ReplaySpread(0.25)
    assert spread.delay(10.0) == 0.0  # no loss: no wait
    spread.lost(10.0, 4)
    delays = [spread.delay(10.0) for _ in range(4)]
    assert delays == pytest.approx([0.0, 0.0625, 0.125, 0.1875])
    assert spread.delay(10.5) == 0.0  # the window passed: a later replay goes at once


def test_one_victim_and_later_askers_are_not_delayed() -> None:
    spread = ReplaySpread(0.25)
    spread.lost(1.0, 1)
    assert spread.delay(1.0) == 0.0
    spread.lost(2.0, 2)
    assert spread.delay(2.0) == 0.0
    assert spread.delay(2.2) == 0.0  # its turn (2.125) passed while it was not asked


async def _worker_with_request(workers: list[Any]) -> tuple[Any, ev.Request]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline:
        for w in workers:
            for event in list(w.received):
                if type(event) is ev.Request:
                    w.received.remove(event)
                    return w, event
        await asyncio.sleep(0.01)
    raise AssertionError("no worker got the request")


async def test_request_lost_with_two_workers_is_502_and_named(
    start_frontend: Any, worker_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fe = await start_frontend(heartbeat=SLOW_HEARTBEAT)
    workers = [await worker_for(fe) for _ in range(3)]
    async with httpx.AsyncClient(timeout=10) as client:
        with caplog.at_level(logging.WARNING, logger="frontend.stream"):
            pending = asyncio.ensure_future(client.get(fe.url + "/crash", headers={"x-request-id": "poison-1"}))
            first, _ = await _worker_with_request(workers)
            first.close()  # the request killed it
            workers.remove(first)
            second, _ = await _worker_with_request(workers)  # replayed once
            second.close()  # and killed that one too
            workers.remove(second)
            response = await pending
    assert response.status_code == 502
    await asyncio.sleep(0.2)
    assert not [e for e in workers[0].received if type(e) is ev.Request]  # never a third
    poison = [r.getMessage() for r in caplog.records if "poison" in r.getMessage()]
    assert len(poison) == 1 and "poison-1 GET /crash" in poison[0]
