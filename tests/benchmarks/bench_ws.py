#!/usr/bin/env python3
"""10,000 concurrent idle WebSockets: zasgi (one front end + one worker) and uvicorn, in one run.

Opens N connections to an echo app, then for a few rounds sends one message on
every connection (spread over the round) and times each echo. Reports the RSS
per connection of the front end and of the app server (growth over the idle
server), echo round-trip p50/p99, and how many echoes came back. bench.py's
``ws-10k`` case runs the same client (``hold``) against its servers.

Run from the repository root: ``python tests/benchmarks/bench_ws.py [--connections 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[2]
APP = "tests.apps.probe:app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(n * 2 + 1024, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start(kind: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    if kind == "zasgi":
        argv = [sys.executable, "-m", "appserver.cli", "run", APP, "--port", str(port), "--workers", "1",
                "--log-level", "warning"]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "uvicorn", APP, "--port", str(port), "--loop", "uvloop",
                "--ws", "websockets", "--log-level", "warning", "--no-access-log"]  # fmt: skip
    out = open(log, "wb")
    return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=out, start_new_session=True)


def wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(20).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not come up")


def processes(proc: subprocess.Popen[bytes]) -> dict[str, list[psutil.Process]]:
    """The server's processes by role: zasgi's front end and app servers; any other server's whole
    tree as one role, "all" (uvicorn --workers 2: its supervisor and both workers)."""
    root = psutil.Process(proc.pid)
    tree = [root, *root.children(recursive=True)]
    tree = [p for p in tree if "resource_tracker" not in " ".join(p.cmdline())]
    roles: dict[str, list[psutil.Process]] = {}
    for child in tree:
        cmd = " ".join(child.cmdline())
        if "-m frontend" in cmd:
            roles.setdefault("frontend", []).append(child)
        elif "multiprocessing" in cmd:
            roles.setdefault("appserver", []).append(child)
    return roles if "frontend" in roles else {"all": tree}


def rss(roles: dict[str, list[psutil.Process]]) -> dict[str, int]:
    return {k: sum(p.memory_info().rss for p in ps) for k, ps in roles.items()}


async def hold(url: str, n: int, rounds: int, spread_s: float, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    """Open ``n`` WebSockets, let them idle, then ``rounds`` rounds of one echo on each. A connection
    that fails to open is counted (``open`` < n), not fatal; RSS growth is divided by those opened."""
    roles = processes(proc)
    base = rss(roles)
    sem = asyncio.Semaphore(500)
    sockets = []

    async def open_one(i: int) -> None:
        async with sem:
            sockets.append(await connect(url, open_timeout=120, ping_interval=None, max_size=None))

    await asyncio.gather(*(open_one(i) for i in range(n)), return_exceptions=True)
    await asyncio.sleep(2)
    held = rss(roles)
    rtts: list[float] = []
    answered = 0

    async def echo(ws: object, delay: float) -> None:
        nonlocal answered
        await asyncio.sleep(delay)
        t0 = time.perf_counter()
        await ws.send("ping")  # type: ignore[attr-defined]
        if await asyncio.wait_for(ws.recv(), 30) == "ping":  # type: ignore[attr-defined]
            answered += 1
            rtts.append((time.perf_counter() - t0) * 1000)

    # The echo times must not measure this client's own collector: with 10,000 sockets' objects in
    # it, its full collections took 0.4-0.6 s each (gc.callbacks, 2026-12-07). Frozen, they are
    # left out of every collection while the rounds run.
    gc.collect()
    gc.freeze()
    try:
        for _ in range(rounds):
            await asyncio.gather(*(echo(ws, spread_s * i / n) for i, ws in enumerate(sockets)), return_exceptions=True)
    finally:
        gc.unfreeze()
    for ws in sockets:
        await ws.close()
    rtts.sort()
    opened = len(sockets)
    return {
        "open": opened,
        "answered": answered,
        "sent": opened * rounds,
        "kib_per_conn": {k: (held[k] - base[k]) / 1024 / max(opened, 1) for k in roles},
        "p50_ms": statistics.median(rtts) if rtts else float("nan"),
        "p99_ms": rtts[int(len(rtts) * 0.99) - 1] if rtts else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spread", type=float, default=3.0, help="seconds over which one round's messages go")
    args = parser.parse_args()
    raise_fd_limit(args.connections)
    log_dir = Path(tempfile.mkdtemp(prefix="zasgi-bench-ws-"))
    for kind in ("zasgi", "uvicorn"):
        port = free_port()
        proc = start(kind, port, log_dir / f"{kind}.log")
        try:
            wait_up(port, proc)
            result = asyncio.run(hold(f"ws://127.0.0.1:{port}/ws/echo", args.connections, args.rounds,
                                      args.spread, proc))  # fmt: skip
            print(f"{kind:8} {result}", flush=True)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    print(f"logs: {log_dir}")


if __name__ == "__main__":
    main()
