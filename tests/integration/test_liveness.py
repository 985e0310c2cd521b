"""Issue 18 end to end, with ``zasgi run``: a blocked worker is busy, not dead; a request that kills its
worker is replayed once at most; a worker blocked past --timeout-worker-blocked is replaced.

The app (tests/apps/blocking.py) makes the mistakes: ``time.sleep`` in an async handler, and
``os._exit(1)`` in one. A loop of ordinary GETs runs throughout; every one must succeed. Bounds
are generous: the machine is shared and loaded.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.processes import zasgi

from .conftest import Server, start_run, stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

APP = "tests.apps.blocking:app"
CLIENTS = 4


async def _with_get_load(
    url: str, path: str, *, after_s: float = 1.0, during: Any = None
) -> tuple[int, float, list[Any], int]:
    """(status, seconds) of one request to ``path`` while CLIENTS loop GET /; and the failures and
    successes of those GETs, which go on ``after_s`` after it. ``during``: a function run in a thread
    2 s after the request was sent."""
    failures: list[Any] = []
    ok = 0
    stop_load = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        while not stop_load.is_set():
            try:
                async with session.get(url + "/") as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        failures.append(r.status)
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))
            await asyncio.sleep(0.01)

    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        load = [asyncio.ensure_future(client(session)) for _ in range(CLIENTS)]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        if during is not None:
            asyncio.get_running_loop().call_later(2.0, lambda: asyncio.ensure_future(asyncio.to_thread(during)))
        async with session.get(url + path) as r:
            await r.read()
            status, took = r.status, time.monotonic() - started
        await asyncio.sleep(after_s)
        stop_load.set()
        await asyncio.gather(*load)
    return status, took, failures, ok


def zasgi_status(admin: str) -> str:
    done = subprocess.run(zasgi("status", "--admin", admin), capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def _runs(server: Server, name: str) -> list[str]:
    path = server.probe_dir / name
    return path.read_text().split() if path.exists() else []


def test_blocked_worker_is_busy_not_dead(tmp_path: Path) -> None:
    """6 s of time.sleep in an async handler under -w2: 200 after ~6 s, run once, every GET 200, and
    one warning naming the handler's line (main before issue 18: 502 after 9.2 s, run 3 times)."""
    server = start_run(tmp_path, workers=2, app=APP)
    admin = re.search(r"admin\s+(http://\S+)", server.procs[0].log())
    assert admin is not None, server.logs()
    seen: list[str] = []

    def status_while_blocked() -> None:
        seen.append(zasgi_status(admin.group(1)))

    try:
        status, took, failures, ok = asyncio.run(
            _with_get_load(server.url, "/block?s=6", during=status_while_blocked)
        )
        log = server.procs[0].log()
    finally:
        stop(server)
    print(f"blocking request: {status} after {took:.1f}s; other GETs: {ok} ok, {len(failures)} failed")
    assert status == 200, log[-6000:]
    assert 5.5 < took < 30
    assert len(_runs(server, "block")) == 1, log[-6000:]
    assert failures == [] and ok > 0
    warnings = re.findall(r"event loop blocked for .*?\n(?:  .*\n)+", log)
    assert len(warnings) == 1, log[-6000:]
    assert "GET /block" in warnings[0]
    assert 'blocking.py", line' in warnings[0] and "time.sleep(" in warnings[0]
    assert "lost" not in log  # no worker was declared lost
    assert len(seen) == 1 and "1 busy" in seen[0], seen  # `zasgi status` while it blocked
    assert re.search(r"\sbusy\s", seen[0].split("\n", 1)[1]), seen


def test_request_that_kills_its_worker_runs_twice_at_most(tmp_path: Path) -> None:
    """os._exit(1) in a handler under -w3: it runs on two workers at most, then 502 naming it; the
    third worker lives (main before issue 18: replayed to each worker in turn, all three killed)."""
    server = start_run(tmp_path, workers=3, app=APP)
    try:
        status, took, failures, ok = asyncio.run(_with_get_load(server.url, "/exit", after_s=2.0))
        log = server.procs[0].log()
    finally:
        stop(server)
    runs = _runs(server, "exit")
    deaths = re.findall(r"worker \d+ \(pid (\d+)\) died: exited with code 1", log)
    print(f"killing request: {status} after {took:.2f}s, ran {len(runs)}x, {len(deaths)} worker(s) died; "
          f"other GETs: {ok} ok, {len(failures)} failed {failures}")  # fmt: skip
    assert status == 502, log[-6000:]
    assert 1 <= len(runs) <= 2 and sorted(deaths) == sorted(runs), log[-6000:]
    poison = re.findall(r"request \S+ GET /exit was in flight on 2 workers.*poison", log)
    assert len(poison) == (1 if len(runs) == 2 else 0), log[-6000:]
    # Innocent GETs replayed onto the second worker it killed could fail with it (their second loss);
    # the replays are spread so that they rarely do. None did in any run so far.
    assert len(failures) <= 2 and ok > 0


def test_worker_blocked_past_the_limit_is_replaced(tmp_path: Path) -> None:
    """A handler blocking 40 s under --timeout-worker-blocked 10 (-w2): 504 at ~10 s, the worker exits
    with code 5 and a new one takes its place, every other GET 200."""
    server = start_run(tmp_path, "--timeout-worker-blocked", "10", workers=2, app=APP)
    try:
        status, took, failures, ok = asyncio.run(_with_get_load(server.url, "/block?s=40", after_s=3.0))
        log = server.procs[0].log()
    finally:
        stop(server)
    print(f"request blocking 40 s: {status} after {took:.1f}s; other GETs: {ok} ok, {len(failures)} failed")
    assert status == 504, log[-6000:]
    assert 9.5 < took < 30
    assert re.search(r"worker \d+ \(pid \d+\) died: exited with code 5 \(evicted", log), log[-6000:]
    assert re.search(r"evicting it", log) and re.search(r"evicted by a front end", log)
    assert len(re.findall(r"worker \d+ started", log)) >= 3  # two at boot, one replacement
    assert failures == [] and ok > 0
