"""Bodies through shared memory (feature "shm-body", wire/shm.py), with real processes:
agreed on one host, off with --no-shm-bodies, intact either way, nothing left in /dev/shm, and a
worker killed mid-download costs that download only."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.apps.probe import pattern

from .conftest import Server, start_run, stop

pytestmark = pytest.mark.integration
ADMIN_IN_BANNER = r"\n  admin +(http://\S+)"
MiB = 1024 * 1024


@pytest.fixture(scope="module", params=["shm", "no-shm"])
def run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    extra = () if request.param == "shm" else ("--no-shm-bodies",)
    server = start_run(tmp_path_factory.mktemp(request.param), *extra, workers=1)
    try:
        yield server, server.procs[0].wait_for(ADMIN_IN_BANNER, 10).group(1)
    finally:
        stop(server)


def _workers(admin: str, n: int = 1, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        listed = httpx.get(admin + "/workers", timeout=10).json()["workers"]
        workers = [w for w in listed if w["state"] == "ready"]
        if len(workers) == n or time.monotonic() > deadline:
            return workers
        time.sleep(0.05)


def _download(url: str, size: int) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    with httpx.stream("GET", f"{url}/big?size={size}&chunk={3 * MiB // 2}", timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def _segments(pid: int) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"zasgi-{pid}-")]


def test_large_bodies_arrive_intact_with_and_without_shared_memory(run: tuple[Server, str]) -> None:
    server, admin = run
    (worker,) = _workers(admin)
    shared = "--no-shm-bodies" not in server.procs[0].popen.args
    assert ("shm-body" in worker["features"]) == shared
    size = 40 * MiB + 12345  # 1.5 MiB sends: slots of 1 MiB and the odd rest
    assert _download(server.url, size) == (size, hashlib.sha256(pattern(size)).hexdigest())
    with httpx.Client(base_url=server.url, timeout=30) as client:  # more bytes than the slots: reused
        for _ in range(3):
            responses = [client.get(f"/big?size={3 * MiB}") for _ in range(4)]
            assert all(len(r.content) == 3 * MiB for r in responses)
    assert _segments(worker["pid"]) == []  # mapped by the front end, then unlinked


def test_large_request_bodies_arrive_intact(run: tuple[Server, str]) -> None:
    """Request bodies too go through the front end's segment (SHARE) where the worker mapped it."""
    server, _ = run
    data = os.urandom(30 * MiB + 777)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(2):  # the second reuses every slot the first freed
            response = client.post("/digest", content=data)
            assert response.json() == {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}
        chunked = (data[i : i + 100_000] for i in range(0, len(data), 100_000))  # odd piece sizes
        response = client.post("/digest", content=chunked)
        assert response.json() == {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}


def test_a_worker_killed_mid_download_costs_only_that_download(run: tuple[Server, str]) -> None:
    server, admin = run
    (worker,) = _workers(admin)
    failed = False
    try:
        with httpx.stream("GET", f"{server.url}/big?size={2000 * MiB}", timeout=30) as response:
            got = 0
            for chunk in response.iter_raw():
                got += len(chunk)
                if got >= 20 * MiB and not failed:
                    failed = True
                    os.kill(worker["pid"], signal.SIGKILL)
    except httpx.HTTPError:
        pass  # the body is cut short: the one response that was on the killed worker
    assert failed
    deadline = time.monotonic() + 60
    while True:  # its replacement joins
        workers = _workers(admin)
        if workers and workers[0]["pid"] != worker["pid"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert workers and workers[0]["pid"] != worker["pid"]
    size = 10 * MiB
    assert _download(server.url, size) == (size, hashlib.sha256(pattern(size)).hexdigest())
