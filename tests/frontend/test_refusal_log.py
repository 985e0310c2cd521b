"""How 503s for want of a worker reach the log (frontend/refusal_log.py): the first in full, then
a count per interval, never a line per refusal."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from frontend import config as cfg
from frontend.refusal_log import TRANSITIONS, RefusalLog, RefusalLogState, RefusalReporter

QUIET, COUNTING = RefusalLogState.QUIET, RefusalLogState.COUNTING


def test_the_first_refusal_is_logged_in_full_and_the_rest_counted_by_reason() -> None:
    log = RefusalLog(interval_s=10.0)
    assert log.refused(100.0, "overload") is True
    assert (log.state, log.due_at) == (COUNTING, 110.0)
    for now in (100.1, 101.0, 105.0):
        assert log.refused(now, "overload") is False
    assert log.refused(106.0, "timeout") is False
    assert log.report(110.0) == "4 more requests refused with 503 in the last 10s (overload 3, timeout 1)"
    assert (log.state, log.due_at) == (COUNTING, 120.0)  # still refusing, maybe: one more look


def test_a_quiet_interval_ends_counting_and_the_next_refusal_is_in_full_again() -> None:
    log = RefusalLog(interval_s=10.0)
    log.refused(0.0, "full")
    assert log.report(10.0) is None  # none followed the first
    assert log.state is QUIET
    assert log.refused(50.0, "no_workers") is True
    assert log.due_at == 60.0


def test_a_long_overload_is_one_line_per_interval() -> None:
    log = RefusalLog(interval_s=1.0)
    lines, full = [], 0
    for i in range(10_000):  # 1,000 refusals a second for 10 s
        now = i / 1000
        while log.state is COUNTING and now >= log.due_at:
            line = log.report(log.due_at)
            if line:
                lines.append(line)
        full += log.refused(now, "overload")
    assert full == 1
    assert len(lines) == 9
    assert all(line.startswith("1,000 more requests refused") for line in lines[1:])


def test_transitions_cover_every_state() -> None:
    assert set(TRANSITIONS) == set(RefusalLogState)


async def test_on_the_loop_the_count_line_comes_when_due_and_nothing_while_info_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.refusals")
    reporter = RefusalReporter(logger, interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        assert [reporter.refused("overload") for _ in range(3)] == [False] * 3  # INFO off: no timer either
    with caplog.at_level(logging.INFO, logger="test.refusals"):
        assert [reporter.refused("overload") for _ in range(3)] == [True, False, False]
        for _ in range(100):  # bounded: 100 x 10 ms
            if "refused with 503" in caplog.text:
                break
            await asyncio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == [
        "2 more requests refused with 503 in the last 0.05s (overload 2)"
    ]


async def test_a_front_end_without_workers_logs_its_503s_once_then_counts(
    start_frontend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fe = await start_frontend(queue=cfg.Queue(size=0, timeout_s=10))
    with caplog.at_level(logging.INFO):
        async with httpx.AsyncClient(timeout=5) as client:
            statuses = [(await client.get(fe.url + f"/r{i}")).status_code for i in range(20)]
    assert statuses == [503] * 20
    lines = [r.getMessage() for r in caplog.records if "no worker for" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("no worker for GET /r0: ")
