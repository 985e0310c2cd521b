"""Three rolling restarts of a 3-worker pool under a mixed load: nobody notices.

The issue's acceptance test: >= 50 keep-alive clients doing GET and POST with
bodies (and 5 HTTP/2 clients doing the same, 4 streams at a time: issue 22),
10 clients streaming 20 MiB (and slow chunked) responses, 20
WebSockets (10 on an app that opts in to handoff, 10 on a plain echo), and
three SIGHUP rolls of `zasgi run --workers 3`. Expected: 0 failed or reset
HTTP requests, 0 truncated bodies, every handoff session continues with no
close and no lost or repeated message, every plain WebSocket closed with 1012
(service restart), no earlier than the grace period after the roll began.

It runs with ``--timeout-stream-drain 0``: replaced workers do not linger, the
behaviour before issue 20 (tests/integration/test_keep.py has the default, and
tests/benchmarks/keep_bench.py measures it under this load).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import Proc
from tests.integration.conftest import Server, start_run, stop

from .load import Tally, start_load, stop_load

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

WORKERS = 3
GRACE_S = 4.0  # --timeout-graceful-shutdown: how long plain WebSockets survive a drain
ROLLS = 3


async def wait_workers(proc: Proc, predicate: object, what: str, timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = proc.worker_pids()
        if predicate(pids):  # type: ignore[operator]
            return pids
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s}s (workers now {sorted(proc.worker_pids())})\n{proc.log()[-5000:]}")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Server]:
    # --frontends auto, the default (two front ends on two cores): start_run would pin one.
    server = start_run(tmp_path, "--timeout-graceful-shutdown", str(GRACE_S), "--timeout-stream-drain", "0",
                       "--log-level", "info", "--frontends", "auto", workers=WORKERS)  # fmt: skip
    yield server
    stop(server)


async def test_three_rolling_restarts_under_load(pool: Server) -> None:
    supervisor = pool.procs[0]
    old = await wait_workers(supervisor, lambda p: len(p) == WORKERS, "initial workers", 30)
    tally, stop_event = Tally(), asyncio.Event()
    tasks = start_load(pool.url, tally, stop_event, h2=5)
    try:
        await asyncio.sleep(2.0)  # every client is going
        for roll in range(ROLLS):
            tally.roll_started = time.monotonic()
            supervisor.signal(signal.SIGHUP)
            # Done when every old worker has drained and exited and WORKERS new ones run.
            new = await wait_workers(
                supervisor, lambda p, old=old: not (p & old) and len(p) == WORKERS, f"roll {roll + 1}", 90
            )
            print(f"roll {roll + 1}: {sorted(old)} -> {sorted(new)} in {time.monotonic() - tally.roll_started:.1f}s")
            old = new
            await asyncio.sleep(1.0)
    finally:
        await stop_load(tasks, stop_event)
    print(tally.summary())
    assert not tally.http_failed, tally.http_failed[:10]
    assert not tally.streams_bad, tally.streams_bad[:10]
    assert not tally.handoff_failures, tally.handoff_failures[:10]
    assert not tally.plain_failures, tally.plain_failures[:10]
    assert tally.http_ok > 500 and tally.streams_ok > 10
    # Every handoff session moved at least once per roll (each roll replaces every worker).
    assert tally.handoff_worker_changes >= 10 * ROLLS, tally.summary()
    # Each plain WebSocket was closed with 1012 at least once per roll, never before the grace period.
    assert tally.plain_closes[1012] >= 10 * ROLLS, tally.summary()
    assert min(tally.plain_close_delays) >= GRACE_S * 0.9, sorted(tally.plain_close_delays)[:5]
    assert "Traceback" not in supervisor.log()
