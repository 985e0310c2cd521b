#!/usr/bin/env python3
"""10,000 concurrent idle WebSockets: zasgi (one front end + one worker) and uvicorn, in one run.

Opens N connections to an echo app, then for a few rounds sends one message on
every connection (spread over the round) and times each echo. The client speaks
WebSocket at the frame level on uvloop (``EchoSocket``): a library client was
the bottleneck at this scale. Reports the RSS
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
from typing import Any

import psutil
import uvloop

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


_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key: the server's answer is not checked
_MASK = os.urandom(4)  # one key for every frame: the server unmasks, and nothing here is secret


def masked(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires of clients) of under 126 bytes."""
    assert len(payload) < 126
    body = bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + _MASK + body


PING_FRAME = masked(0x1, b"ping")  # a text message "ping": the echo app sends it back
CLOSE_FRAME = masked(0x8, b"\x03\xe8")  # close, 1000


class EchoSocket(asyncio.Protocol):
    """One WebSocket driven at the frame level: the handshake, then a text frame out and the
    server's echo timed in ``data_received``, as it arrives. The websockets library's client
    spent ~100% of a core in bursts at 10,000 connections and one echo each per 3 s, and its
    own delays landed in both servers' p99 (2026-12-07); this one does a few µs a message."""

    def __init__(self, request: bytes, rtts: list[float], on_answer: Any) -> None:
        self.request = request
        self.rtts = rtts
        self.on_answer = on_answer
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.upgraded = False
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1")))
                return
            self.upgraded = True
            self.opened.set_result(None)
        while len(buf) >= 2:
            size, at = buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, at = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + size:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[at : at + size])
            del buf[: at + size]
            if opcode == 0x1 and payload == b"ping" and self.sent_at:
                self.rtts.append((time.perf_counter() - self.sent_at) * 1000)
                self.sent_at = 0.0
                self.on_answer()

    def ping(self) -> None:
        if self.transport is not None:
            self.sent_at = time.perf_counter()
            self.transport.write(PING_FRAME)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.write(CLOSE_FRAME)
            self.transport.close()


async def hold(url: str, n: int, rounds: int, spread_s: float, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    """Open ``n`` WebSockets, let them idle, then ``rounds`` rounds of one echo on each, sent evenly
    over ``spread_s``. A connection that fails to open is counted (``open`` < n), not fatal; RSS
    growth is divided by those opened. An echo not back 30 s after its round's last send is lost."""
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.partition(":")
    request = (f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()  # fmt: skip
    loop = asyncio.get_running_loop()
    roles = processes(proc)
    base = rss(roles)
    sem = asyncio.Semaphore(500)
    sockets: list[EchoSocket] = []
    rtts: list[float] = []
    answered = 0
    round_done = asyncio.Event()
    expected = 0

    def on_answer() -> None:
        nonlocal answered
        answered += 1
        if answered >= expected:
            round_done.set()

    async def open_one() -> None:
        async with sem:
            sock = EchoSocket(request, rtts, on_answer)
            await loop.create_connection(lambda: sock, host, int(port))
            await asyncio.wait_for(sock.opened, 120)
            sockets.append(sock)

    await asyncio.gather(*(open_one() for _ in range(n)), return_exceptions=True)
    await asyncio.sleep(2)
    held = rss(roles)
    # The echo times must not measure this client's own collector: with 10,000 sockets' objects in
    # it, its full collections took 0.4-0.6 s each (gc.callbacks, 2026-12-07). Frozen, they are
    # left out of every collection while the rounds run.
    gc.collect()
    gc.freeze()
    try:
        for _ in range(rounds):
            expected += len(sockets)
            round_done.clear()
            start = loop.time() + 0.01
            for i, sock in enumerate(sockets):
                loop.call_at(start + spread_s * i / max(len(sockets), 1), sock.ping)
            try:
                await asyncio.wait_for(round_done.wait(), spread_s + 30)
            except asyncio.TimeoutError:
                expected = answered  # the lost ones stay lost: the next round counts afresh
    finally:
        gc.unfreeze()
    for sock in sockets:
        sock.close()
    await asyncio.sleep(0.5)
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
            result = uvloop.run(hold(f"ws://127.0.0.1:{port}/ws/echo", args.connections, args.rounds,
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
