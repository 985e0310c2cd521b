"""Failover with real processes: a worker killed under load, a front end killed and restarted,
a front end stopped with SIGTERM (PROTOCOL §9, DESIGN "Lifecycles").

Topology: ``zasgi frontend`` + ``zasgi appserver --workers N`` over tcp on
loopback. A worker is killed by its pid (learnt from the probe's /scope), so
its supervisor restarts it later; what is measured happens before that.
Clients are aiohttp sessions in the test's loop, keep-alive, many at once.
Every test prints its counts (sent, failed, replayed) and timings.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.helpers.processes import Proc, free_tcp_port, zasgi

from .conftest import PROBE, READY_APPSERVER, READY_FRONTEND, Server, stop

pytestmark = pytest.mark.integration

CLIENTS = 24
REQUEST_S = 0.1  # the probe's /slow: long enough that every worker always has streams in flight
LOAD_BEFORE_S = 1.0
LOAD_AFTER_S = 1.5
HEARTBEAT_FALLBACK_S = 3.0  # default 1 s x 3: what detection would take without the monitor
SLACK_S = 1.5  # a loaded 2-core machine; still well under the heartbeat fallback
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


# ------------------------------------------------------------------ servers


def _start(tmp: Path, *, workers: int, port: int = 0) -> tuple[Server, list[str]]:
    """(server, front-end argv): procs[0] is the front end, procs[1] the appserver (``workers`` processes)."""
    probe_dir = tmp / "probe"
    probe_dir.mkdir(exist_ok=True)
    env = {"PROBE_DIR": str(probe_dir)}
    backend = f"tcp://127.0.0.1:{free_tcp_port()}"
    fe_argv = zasgi("frontend", "--port", str(port), "--backend", backend)
    server = Server("", probe_dir)
    try:
        fe = Proc("frontend", fe_argv, tmp, env)
        server.procs.append(fe)
        server.url = fe.wait_for(READY_FRONTEND, 60).group(1)
        app_argv = zasgi("appserver", PROBE, "--connect", backend, "--workers", str(workers))
        app = Proc("appserver", app_argv, tmp, env)
        server.procs.append(app)
        app.wait_for(READY_APPSERVER, 60)
        _wait_log(fe, r"joined", workers)
    except BaseException:
        stop(server)
        raise
    return server, fe_argv


def _wait_log(proc: Proc, pattern: str, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(re.findall(pattern, proc.log())) < count:
        assert time.monotonic() < deadline, f"{pattern!r} x{count} not in the log:\n{proc.log()[-4000:]}"
        time.sleep(0.02)


async def _worker_pids(url: str, n: int, timeout_s: float = 20.0) -> list[int]:
    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while len(pids) < n:
            assert time.monotonic() < deadline, f"saw only workers {pids}"
            answers = await asyncio.gather(*(client.get("/scope") for _ in range(2 * n)))
            pids |= {r.json()["pid"] for r in answers}
    return sorted(pids)


def _log_time(line_start: str) -> float:
    return datetime.strptime(line_start, LOG_TIME).timestamp()


def _lost_line(fe: Proc, pid: int, timeout_s: float = 10.0) -> tuple[float, str, int]:
    """(log time, why, open streams) of the front end's "worker ... lost" line for ``pid``."""
    line = rf"^(\S+ \S+) WARNING .*worker \S+-{pid}-\S+ lost \(([^)]*)\) with (\d+) open streams"
    regex = re.compile(line, re.M)
    deadline = time.monotonic() + timeout_s
    while not (match := regex.search(fe.log())):
        assert time.monotonic() < deadline, f"worker {pid} never reported lost:\n{fe.log()[-4000:]}"
        time.sleep(0.02)
    return _log_time(match.group(1)), match.group(2), int(match.group(3))


# ------------------------------------------------------------------ load


@dataclass
class Load:
    """CLIENTS keep-alive clients in a loop; every request's outcome and latency is kept."""

    url: str
    method: str = "GET"
    body: bytes | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    slowest: tuple[float, float] = (0.0, 0.0)  # (latency, time.time() it started)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return self.sent - self.outcomes["200"]

    async def run(self, seconds_before: float, action: Callable[[], None], seconds_after: float) -> None:
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clients = [asyncio.ensure_future(self._client(session)) for _ in range(CLIENTS)]
            try:
                await asyncio.sleep(seconds_before)
                action()
                await asyncio.sleep(seconds_after)
            finally:
                self._stop.set()
                await asyncio.wait_for(asyncio.gather(*clients), 60)

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            started, wall = time.monotonic(), time.time()
            try:
                async with session.request(self.method, self.url, data=self.body) as resp:
                    await resp.read()
                    outcome = str(resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcome = type(exc).__name__
            latency = time.monotonic() - started
            self.outcomes[outcome] += 1
            self.latencies.append(latency)
            if latency > self.slowest[0]:
                self.slowest = (latency, wall)


def _kill_worker(pid: int, at: list[float]) -> Callable[[], None]:
    def kill() -> None:
        at.append(time.time())
        os.kill(pid, signal.SIGKILL)

    return kill


# ------------------------------------------------------------------ tests


async def test_worker_killed_under_get_load_no_client_sees_an_error(tmp_path: Path) -> None:
    server, _ = _start(tmp_path, workers=3)
    fe = server.procs[0]
    try:
        victim = (await _worker_pids(server.url, 3))[0]
        load = Load(f"{server.url}/slow?s={REQUEST_S}")
        killed: list[float] = []
        await load.run(LOAD_BEFORE_S, _kill_worker(victim, killed), LOAD_AFTER_S)
        lost_at, why, open_streams = _lost_line(fe, victim)
        detect_s = lost_at - killed[0]
        replayed = fe.log().count("replaying stream")
        print(f"\nGET load, kill -9 worker {victim}: sent {load.sent}, failed {load.failed}, "
              f"replayed {replayed}, open on the victim {open_streams}; lost ({why}) "
              f"{detect_s * 1000:.0f} ms after the kill; slowest request {load.slowest[0] * 1000:.0f} ms; "
              f"outcomes {dict(load.outcomes)}")  # fmt: skip
        assert load.failed == 0, dict(load.outcomes)
        assert load.sent > CLIENTS * 5
        assert why == "unreachable" and detect_s < 1.0  # the monitor + probe, not the 3 s heartbeat
        assert replayed >= open_streams > 0
        assert load.slowest[0] < detect_s + 2 * REQUEST_S + SLACK_S < HEARTBEAT_FALLBACK_S
    finally:
        stop(server)


async def test_worker_killed_under_post_load_only_its_streams_fail_with_502(tmp_path: Path) -> None:
    server, _ = _start(tmp_path, workers=3)
    fe = server.procs[0]
    try:
        victim = (await _worker_pids(server.url, 3))[0]
        load = Load(f"{server.url}/slow?s={REQUEST_S}", method="POST", body=b"order=42")
        killed: list[float] = []
        await load.run(LOAD_BEFORE_S, _kill_worker(victim, killed), LOAD_AFTER_S)
        lost_at, why, open_streams = _lost_line(fe, victim)
        detect_s = lost_at - killed[0]
        replayed = fe.log().count("replaying stream")
        print(f"\nPOST load, kill -9 worker {victim}: sent {load.sent}, failed {load.failed} "
              f"(502: {load.outcomes['502']}), replayed {replayed}, open on the victim {open_streams}; "
              f"lost ({why}) {detect_s * 1000:.0f} ms after the kill; slowest request "
              f"{load.slowest[0] * 1000:.0f} ms; outcomes {dict(load.outcomes)}")  # fmt: skip
        assert set(load.outcomes) <= {"200", "502"}, dict(load.outcomes)
        assert 0 < load.failed == open_streams - replayed  # exactly the streams it had; replayed: never sent
        assert load.sent > CLIENTS * 5
        assert why == "unreachable" and detect_s < 1.0
        assert load.slowest[0] < detect_s + 2 * REQUEST_S + SLACK_S < HEARTBEAT_FALLBACK_S
    finally:
        stop(server)


async def test_front_end_killed_and_restarted_app_servers_rejoin(tmp_path: Path) -> None:
    port = free_tcp_port()
    server, fe_argv = _start(tmp_path, workers=2, port=port)
    try:
        pids = await _worker_pids(server.url, 2)
        old = server.procs[0]
        old.signal(signal.SIGKILL)
        old.wait_exit(10)
        fe = Proc("frontend2", fe_argv, tmp_path, {"PROBE_DIR": str(server.probe_dir)})
        server.procs[0] = fe
        fe.wait_for(READY_FRONTEND, 60)
        _wait_log(fe, r"joined", 2, timeout_s=10)
        lines = fe.log().splitlines()
        listening = _log_time(next(x for x in lines if "listening on" in x)[:23])
        joined = [_log_time(x[:23]) for x in lines if "joined" in x]
        rejoin_s = max(joined) - listening
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            answers = await asyncio.gather(*(client.get("/scope") for _ in range(20)))
        statuses = Counter(r.status_code for r in answers)
        print(f"\nfront end kill -9 + restart: both workers rejoined {rejoin_s * 1000:.0f} ms after it "
              f"listened; 20 requests after: {dict(statuses)}")  # fmt: skip
        assert rejoin_s < 2.0
        assert statuses == {200: 20}
        assert sorted({r.json()["pid"] for r in answers}) == pids  # the same workers, not restarted ones
    finally:
        stop(server)


def test_front_end_sigterm_finishes_in_flight_and_closes_idle(tmp_path: Path) -> None:
    server, _ = _start(tmp_path, workers=1)
    fe, appserver = server.procs
    host, port = server.host_port
    try:
        idle = socket.create_connection((host, port), timeout=10)
        idle.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"status body" in _read_response(idle)  # a keep-alive connection, now idle
        result: dict[str, object] = {}

        def slow() -> None:
            try:
                result["response"] = httpx.get(server.url + "/slow?s=1.5&tag=inflight", timeout=20)
            except httpx.HTTPError as exc:
                result["response"] = exc

        thread = threading.Thread(target=slow)
        thread.start()
        server.wait_recorded("arrivals", "inflight")
        fe.signal(signal.SIGTERM)
        sent = time.monotonic()
        assert idle.recv(1) == b""  # closed at once, not after the keep-alive timeout
        idle_closed_s = time.monotonic() - sent
        idle.close()
        refused_s = _until_refused(host, port)
        thread.join(20)
        response = result.get("response")
        code = fe.wait_exit(20)
        stopped_s = time.monotonic() - sent
        outcome = getattr(response, "status_code", response)
        print(f"\nfront-end SIGTERM: idle keep-alive closed after {idle_closed_s * 1000:.0f} ms, new "
              f"connections refused after {refused_s * 1000:.0f} ms, in-flight request: {outcome}, "
              f"exit {code} after {stopped_s:.2f} s")  # fmt: skip
        assert idle_closed_s < 1.0
        assert isinstance(response, httpx.Response)
        assert (response.status_code, response.text) == (200, "slept")
        assert code == 0
        appserver.wait_for(r"front end .* lost \(front end said BYE", 10)  # it said BYE to the workers
        assert appserver.popen.poll() is None  # they wait for a successor
    finally:
        stop(server)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def _until_refused(host: str, port: int, timeout_s: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except ConnectionRefusedError:
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError("the front end still accepts connections after SIGTERM")
