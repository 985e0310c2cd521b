"""WebSockets and long streams kept across planned restarts, for an app that never opted in (issue 20).

Real processes (``zasgi run``), real clients (aiohttp). Ordinary /ws/echo
WebSockets echo numbered texts every few milliseconds and check each echo;
Server-Sent Events streams (/sse) check every event id in order. Across a
rolling restart and across --max-requests recycling: no close, no lost or
repeated frame, every stream whole, served throughout by the old (lingering)
worker while new connections go to the new ones. Then the bounds: the linger
limit closes the oldest generation's sessions with 1012, --timeout-stream-drain
ends lingering, and SIGTERM of the whole server still stops everything within
the graceful timeout.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.chaos.load import SseReader
from tests.helpers.processes import zasgi

from .conftest import Server, start_run, stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

GRACE_S = 1.0  # --timeout-graceful-shutdown: sessions must outlive it by far
ADMIN_IN_BANNER = r"\n  admin +(http://\S+)"
TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass
class Echoer:
    """One /ws/echo client: a numbered text every ``period_s``, each echo checked."""

    name: str
    pid: int = 0
    echoed: int = 0
    closes: list[str] = field(default_factory=list)  # anything but our own close is a failure
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, session: aiohttp.ClientSession, url: str, connected: asyncio.Event,
                  period_s: float = 0.02) -> None:  # fmt: skip
        try:
            async with session.ws_connect(f"{url}/ws/echo", heartbeat=None) as ws:
                await ws.send_str("pid")
                self.pid = int((await ws.receive(timeout=30)).data)
                connected.set()
                while not self.stop.is_set():
                    text = f"{self.name}-{self.echoed}"
                    try:
                        await ws.send_str(text)
                    except ConnectionResetError:
                        pass  # the server's close crossed our send: its close frame comes next
                    msg = await ws.receive(timeout=30)
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code
                        self.closes.append(f"{self.name}: {msg.type.name} {code} after {self.echoed}")
                        return
                    if msg.data != text:
                        self.errors.append(f"{self.name}: sent {text!r}, got {msg.data!r}")
                        return
                    self.echoed += 1
                    await asyncio.sleep(period_s)
        except Exception as exc:  # any client-visible error counts
            self.errors.append(f"{self.name}: {type(exc).__name__}: {exc}")
        finally:
            connected.set()


def admin_url(server: Server) -> str:
    match = re.search(ADMIN_IN_BANNER, server.procs[0].log())
    assert match, server.logs()
    return match.group(1)


async def workers(admin: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(f"{admin}/workers") as r:
        return await r.json()  # type: ignore[no-any-return]


async def wait_for(check: Callable[[], Any], what: str, server: Server, timeout_s: float = 60.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s}s\n{server.logs()}")


async def states(admin: str) -> list[str]:
    return sorted(w["state"] for w in (await workers(admin))["workers"])


def start(tmp_path: Path, *extra: str, workers: int = 2) -> Server:
    return start_run(tmp_path, "--timeout-graceful-shutdown", str(GRACE_S), "--admin-port", "0", *extra,
                     workers=workers)  # fmt: skip


async def test_rolling_restart_keeps_plain_websockets_and_sse_streams(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        admin, supervisor = admin_url(server), server.procs[0]
        await wait_for(lambda: states(admin), "workers ready", server)
        old_pids = supervisor.worker_pids()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            echoers = [Echoer(f"ws{i}") for i in range(4)]
            connected = [asyncio.Event() for _ in echoers]
            tasks = [
                asyncio.create_task(e.run(session, server.url, c))
                for e, c in zip(echoers, connected, strict=True)
            ]
            streams = [SseReader(n=50, delay_s=0.1) for _ in range(2)]
            started = [asyncio.Event() for _ in streams]
            tasks += [
                asyncio.create_task(s.run(session, server.url, e))
                for s, e in zip(streams, started, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected + started)), 30)
            await asyncio.sleep(0.5)
            assert {e.pid for e in echoers} <= old_pids

            supervisor.signal(signal.SIGHUP)
            await wait_for(lambda: _lingering_and_ready(admin, 2, 2), "2 ready and 2 lingering", server)
            data = await workers(admin)
            assert data["frontend"]["lingering"]["workers"] == 2
            assert data["frontend"]["lingering"]["sessions"] >= 4  # the WebSockets, and streams still going
            status = subprocess.run(
                zasgi("status", "--admin", admin), capture_output=True, text=True, timeout=60
            )
            assert re.search(r"4 workers, 2 ready, 2 lingering \(\d+ sessions? left\)", status.stdout), (
                status.stdout
            )
            rows = [line.split() for line in status.stdout.splitlines()[2:]]
            assert sorted(row[3] for row in rows) == ["lingering", "lingering", "ready", "ready"], (
                status.stdout
            )
            async with session.get(f"{admin}/metrics") as r:
                assert 'zasgi_workers{state="lingering"} 2.0' in await r.text()

            fresh = Echoer("fresh")  # a new connection goes to a new worker
            fresh_connected = asyncio.Event()
            tasks.append(asyncio.create_task(fresh.run(session, server.url, fresh_connected)))
            await asyncio.wait_for(fresh_connected.wait(), 30)
            assert fresh.pid not in old_pids and fresh.pid in supervisor.worker_pids()

            await asyncio.sleep(3 * GRACE_S)  # well past the grace: the sessions go on
            await asyncio.wait_for(
                asyncio.gather(*tasks[len(echoers) : len(echoers) + 2]), 30
            )  # the streams end
            for echoer in [*echoers, fresh]:
                echoer.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        for stream in streams:
            assert stream.whole, (stream.ids[-3:], stream.errors)
            assert stream.pids <= old_pids  # one worker, the old one, served every event
        for echoer in [*echoers, fresh]:
            assert not echoer.closes and not echoer.errors, (echoer.closes, echoer.errors)
            assert echoer.echoed > 50
        # The sessions ended: the lingering workers leave.
        await wait_for(
            lambda: not (supervisor.worker_pids() & old_pids), "lingering workers gone", server, 20
        )
        assert await states(admin) == ["ready", "ready"]
        assert "Traceback" not in supervisor.log()
    finally:
        stop(server)


async def _lingering_and_ready(admin: str, ready: int, lingering: int) -> bool:
    found = await states(admin)
    return found.count("ready") == ready and found.count("lingering") == lingering


async def test_max_requests_recycling_keeps_them(tmp_path: Path) -> None:
    server = start(tmp_path, "--max-requests", "20", workers=1)
    try:
        admin, supervisor = admin_url(server), server.procs[0]
        await wait_for(lambda: states(admin), "worker ready", server)
        (old,) = supervisor.worker_pids()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            echoer, connected = Echoer("ws"), asyncio.Event()
            stream, started = SseReader(n=40, delay_s=0.1), asyncio.Event()
            tasks = [asyncio.create_task(echoer.run(session, server.url, connected)),
                     asyncio.create_task(stream.run(session, server.url, started))]  # fmt: skip
            await asyncio.wait_for(asyncio.gather(connected.wait(), started.wait()), 30)
            for _ in range(30):  # past --max-requests: the worker is replaced, new one first
                async with session.get(f"{server.url}/echo") as r:
                    assert r.status == 200
            await wait_for(lambda: _lingering_and_ready(admin, 1, 1), "recycled worker lingering", server)
            await asyncio.sleep(2 * GRACE_S)
            await asyncio.wait_for(tasks[1], 30)
            echoer.stop.set()
            await asyncio.wait_for(tasks[0], 30)
        assert stream.whole and stream.pids == {old}, (stream.ids[-3:], stream.errors)
        assert not echoer.closes and not echoer.errors and echoer.pid == old, (echoer.closes, echoer.errors)
        await wait_for(lambda: old not in supervisor.worker_pids(), "recycled worker gone", server, 20)
    finally:
        stop(server)


async def test_linger_limit_closes_the_oldest_and_sigterm_still_bounds_everything(tmp_path: Path) -> None:
    server = start(tmp_path, "--max-lingering", "1", workers=1)
    try:
        admin, supervisor = admin_url(server), server.procs[0]
        await wait_for(lambda: states(admin), "worker ready", server)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            first, second = Echoer("first"), Echoer("second")
            ready = asyncio.Event()
            tasks = [asyncio.create_task(first.run(session, server.url, ready))]
            await asyncio.wait_for(ready.wait(), 30)
            supervisor.signal(signal.SIGHUP)  # generation 0 lingers with `first`
            await wait_for(lambda: _lingering_and_ready(admin, 1, 1), "generation 0 lingering", server)
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(second.run(session, server.url, ready)))
            await asyncio.wait_for(ready.wait(), 30)
            assert second.pid != first.pid
            supervisor.signal(signal.SIGHUP)  # generation 1 lingers too: one too many, the oldest goes
            await asyncio.wait_for(tasks[0], 30)
            assert first.closes and "1012" in first.closes[0], first.closes
            await wait_for(lambda: _lingering_and_ready(admin, 1, 1), "generation 1 lingering", server)
            assert not second.closes and not second.errors

            began = time.monotonic()
            supervisor.signal(signal.SIGTERM)  # the whole server: nothing lingers past the grace
            code = await asyncio.to_thread(supervisor.wait_exit, 30)
            took = time.monotonic() - began
            await asyncio.wait_for(tasks[1], 30)
        assert code == 0
        assert took < GRACE_S + 10, took
        assert second.closes and not second.errors, (second.closes, second.errors)
        assert not supervisor.worker_pids()
    finally:
        stop(server)


async def test_stream_drain_limit_ends_the_lingering_with_1012(tmp_path: Path) -> None:
    server = start(tmp_path, "--timeout-stream-drain", "3", workers=1)
    try:
        admin, supervisor = admin_url(server), server.procs[0]
        await wait_for(lambda: states(admin), "worker ready", server)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            echoer, ready = Echoer("ws"), asyncio.Event()
            task = asyncio.create_task(echoer.run(session, server.url, ready))
            await asyncio.wait_for(ready.wait(), 30)
            began = time.monotonic()
            supervisor.signal(signal.SIGHUP)
            await asyncio.wait_for(task, 30)
            took = time.monotonic() - began
        assert echoer.closes and "1012" in echoer.closes[0], (echoer.closes, echoer.errors)
        assert 3 * 0.9 <= took < 3 + 10, took  # not at the grace (1 s): at the stream drain limit
        await wait_for(lambda: len(supervisor.worker_pids()) == 1, "lingering worker gone", server, 20)
    finally:
        stop(server)


async def test_an_opted_in_app_still_hands_its_websockets_to_the_new_worker(tmp_path: Path) -> None:
    """Handoff takes precedence: the session moves (no close, no gap) instead of lingering."""
    server = start(tmp_path, workers=1)
    try:
        admin, supervisor = admin_url(server), server.procs[0]
        await wait_for(lambda: states(admin), "worker ready", server)
        (old,) = supervisor.worker_pids()
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.ws_connect(f"{server.url}/ws/handoff", heartbeat=None) as ws:
                pids, n = [], 0
                supervisor.signal(signal.SIGHUP)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and (not pids or pids[-1] == old):
                    n += 1
                    await ws.send_str(f"m{n}")
                    msg = await ws.receive(timeout=30)
                    assert msg.type is aiohttp.WSMsgType.TEXT, (msg, server.logs())
                    count, pid, text = msg.data.split(":", 2)
                    assert (int(count), text) == (n, f"m{n}")  # the app's counter went on: nothing lost
                    pids.append(int(pid))
                    await asyncio.sleep(0.05)
                assert pids[0] == old and pids[-1] != old, pids
        # Nothing was left to linger for: the old worker is gone.
        await wait_for(lambda: old not in supervisor.worker_pids(), "old worker gone", server, 20)
    finally:
        stop(server)
