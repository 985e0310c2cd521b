"""Flow control end to end: a slow client and a slow app keep memory bounded.

A 200 MiB response read at ~8 MiB/s and a 200 MiB upload to an app that
reads at ~8 MiB/s run at the same time; the RSS of the front end and the
worker must not grow by more than 32 MiB over the idle baseline. Either side
is still ~300x slower than the split moves bytes on loopback, so without
flow control nearly all of the 200 MiB would pile up in a process (at 2 MiB/s
the test took 100 s of the suite's time and showed nothing more).
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.apps.probe import pattern

from .conftest import start_run, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MiB = 1024 * 1024
SIZE = 200 * MiB
RATE = 8 * MiB  # bytes per second
BUDGET = 32 * MiB


def _slow_download(url: str, out: dict[str, object]) -> None:
    h, received, start = hashlib.sha256(), 0, time.monotonic()
    with httpx.Client(timeout=60) as client, client.stream("GET", f"{url}/big?size={SIZE}") as response:
        for chunk in response.iter_raw(64 * 1024):
            h.update(chunk)
            received += len(chunk)
            ahead = received / RATE - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    out["download"] = h.hexdigest()


def _fast_upload(host_port: tuple[str, int], out: dict[str, object]) -> None:
    with socket.create_connection(host_port, timeout=120) as sock:
        sock.sendall(f"POST /digest?rate={RATE} HTTP/1.1\r\nHost: t\r\nContent-Length: {SIZE}\r\n"
                     "Connection: close\r\n\r\n".encode())  # fmt: skip
        block = pattern(4 * MiB)
        for _ in range(SIZE // len(block)):
            sock.sendall(block)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    out["upload"] = response


def _rss(pids: list[int]) -> dict[int, int]:
    return {pid: psutil.Process(pid).memory_info().rss for pid in pids}


def test_slow_client_and_slow_app_keep_memory_bounded(tmp_path: Path) -> None:
    server = start_run(tmp_path, workers=1)
    try:
        pids = [p.pid for p in server.procs[0].descendants()]
        # Warm up so one-time allocations are in the baseline.
        with socket.create_connection(server.host_port) as sock:
            sock.sendall(b"GET /big?size=4194304 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            while sock.recv(1 << 20):
                pass
        baseline = _rss(pids)
        out: dict[str, object] = {}
        threads = [
            threading.Thread(target=_slow_download, args=(server.url, out)),
            threading.Thread(target=_fast_upload, args=(server.host_port, out)),
        ]
        for t in threads:
            t.start()
        peak = dict(baseline)
        deadline = time.monotonic() + SIZE / RATE * 2 + 120
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            for pid, rss in _rss(pids).items():
                peak[pid] = max(peak[pid], rss)
            time.sleep(0.25)
        for t in threads:
            t.join(1)
        growth = {pid: (peak[pid] - baseline[pid]) // 1024 for pid in pids}
        print("RSS growth KiB per process:", growth)
        expected = hashlib.sha256()
        for offset in range(0, SIZE, 4 * MiB):
            expected.update(pattern(4 * MiB, offset))
        assert out.get("download") == expected.hexdigest()
        upload = out.get("upload", b"")
        assert isinstance(upload, bytes) and f'"length": {SIZE}'.encode() in upload
        for pid in pids:
            assert peak[pid] - baseline[pid] < BUDGET, (pid, growth)
    finally:
        stop(server)
