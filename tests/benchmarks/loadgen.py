#!/usr/bin/env python3
"""Load shapes wrk cannot give: per-status latency, one-shot bursts, slow uploads (issue 17).

    loadgen.py closed PORT PATH CONNS SECONDS   every connection keeps one request in flight;
                                                counts by status, p50/p99 of the 2xx and the rest
    loadgen.py burst PORT PATH CONNS            CONNS keep-alive connections, then one request on
                                                each at once: how many got which status, how fast
    loadgen.py slow-upload PORT SLOW GETS       SLOW connections trickling a POST body at 1 byte/s,
                                                then GETS ordinary GETs (5 s timeout each)

One JSON object on stdout. A raw asyncio protocol on uvloop with a minimal HTTP/1.1 response
reader (Content-Length bodies only: what bench_app.py and zasgi's own errors send), so the
client costs little next to the servers. Raises RLIMIT_NOFILE to its hard limit for 10k sockets.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from typing import Any


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Client(asyncio.Protocol):
    """One keep-alive connection: ``ask()`` sends a request, ``on_response(status, latency)`` fires."""

    def __init__(self, request: bytes, on_response: Any) -> None:
        self.request = request
        self.on_response = on_response
        self.buf = b""
        self.sent_at = 0.0
        self.need = -1  # bytes of the current response still to come (-1: head not parsed)
        self.status = 0
        self.retry_after = False  # the current response has a Retry-After header
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connected.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.sent_at:
            self.sent_at = 0.0
            self.on_response(self, -1, 0.0)  # reset/closed mid-request

    def ask(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                head, sep, rest = self.buf.partition(b"\r\n\r\n")
                if not sep:
                    return
                self.status = int(head[9:12])
                length, self.retry_after = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"retry-after":
                        self.retry_after = True
                self.buf, self.need = rest, length
            if len(self.buf) < self.need:
                return
            self.buf, self.need = self.buf[self.need :], -1
            latency, self.sent_at = time.perf_counter() - self.sent_at, 0.0
            self.on_response(self, self.status, latency)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


async def connect_all(port: int, n: int, make: Any) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    sem = asyncio.Semaphore(500)  # a SYN flood would overflow the listen backlog

    async def one() -> None:
        async with sem:
            _, c = await loop.create_connection(make, "127.0.0.1", port)
            clients.append(c)

    await asyncio.gather(*(one() for _ in range(n)))
    return clients


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    values = sorted(values)
    q = lambda f: values[min(len(values) - 1, int(len(values) * f))] * 1e3  # noqa: E731
    return {"p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": values[-1] * 1e3}


async def closed(port: int, path: str, conns: int, seconds: float) -> dict[str, Any]:
    by_status: dict[int, int] = {}
    ok: list[float] = []
    other: list[float] = []
    retry_after = [0]  # 503s that carried Retry-After
    state = {"on": False, "stop": False}

    def on_response(c: Client, status: int, latency: float) -> None:
        if state["on"]:
            by_status[status] = by_status.get(status, 0) + 1
            (ok if 200 <= status < 300 else other).append(latency)
            retry_after[0] += status == 503 and c.retry_after
        if not state["stop"] and not c.closed:
            c.ask()

    request = get(path)
    clients = await connect_all(port, conns, lambda: Client(request, on_response))
    for c in clients:
        c.ask()
    await asyncio.sleep(min(1.0, seconds / 5))  # warm-up: every client is going
    state["on"], t0 = True, time.perf_counter()
    await asyncio.sleep(seconds)
    state["on"], state["stop"] = False, True
    now = time.perf_counter()
    elapsed = now - t0
    # Requests still unanswered count too, at their age so far: a server that starves some
    # connections must not look fast because their requests never finish.
    waiting = [now - c.sent_at for c in clients if c.sent_at]
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    total = sum(by_status.values())
    good = sum(n for s, n in by_status.items() if 200 <= s < 300)
    return {
        "seconds": elapsed,
        "responses": total,
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "goodput": good / elapsed,
        "rate": total / elapsed,
        "non2xx": total - good,
        "ok": quantiles(ok),
        "other": quantiles(other),
        "all": quantiles(ok + other + waiting),
        "unanswered_over_1s": sum(1 for age in waiting if age > 1.0),
        "retry_after_503": retry_after[0],
    }


async def burst(port: int, path: str, conns: int, timeout_s: float = 60.0) -> dict[str, Any]:
    by_status: dict[int, int] = {}
    latencies: list[float] = []
    done = asyncio.get_running_loop().create_future()
    left = [conns]

    def on_response(c: Client, status: int, latency: float) -> None:
        by_status[status] = by_status.get(status, 0) + 1
        latencies.append(latency)
        left[0] -= 1
        if not left[0] and not done.done():
            done.set_result(None)

    request = get(path)
    clients = await connect_all(port, conns, lambda: Client(request, on_response))
    await asyncio.sleep(0.5)  # the server accepted them all
    t0 = time.perf_counter()
    for c in clients:
        c.ask()
    try:
        await asyncio.wait_for(done, timeout_s)
    except TimeoutError:
        pass
    elapsed = time.perf_counter() - t0
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return {
        "seconds": elapsed,
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "ok": by_status.get(200, 0),
        "unanswered": left[0],
        "all": quantiles(latencies),
    }


async def slow_upload(
    port: int, slow: int, gets: int, body_bytes: int = 100, get_timeout_s: float = 5.0
) -> dict[str, Any]:
    """``slow`` connections each POST a ``body_bytes`` body at one byte a second; while they
    trickle, ``gets`` GETs of / (one connection each, 10 at a time) must answer within the timeout."""
    loop = asyncio.get_running_loop()
    head = (f"POST /slow-upload HTTP/1.1\r\nHost: bench\r\nContent-Length: {body_bytes}\r\n\r\n").encode()
    socks: list[socket.socket] = []
    sem = asyncio.Semaphore(200)

    async def open_one() -> None:
        async with sem:
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", port))
            await loop.sock_sendall(s, head + b"x")
            socks.append(s)

    await asyncio.gather(*(open_one() for _ in range(slow)))
    stop = asyncio.Event()

    async def trickle() -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            for s in socks:
                try:
                    s.send(b"x")
                except OSError:
                    pass

    trickler = asyncio.ensure_future(trickle())
    await asyncio.sleep(1.0)
    timeouts, statuses, lat = 0, {}, []  # type: ignore[var-annotated]
    gsem = asyncio.Semaphore(10)

    async def one_get() -> None:
        nonlocal timeouts
        async with gsem:
            t0 = time.perf_counter()
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), get_timeout_s)
                w.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                data = await asyncio.wait_for(r.read(), get_timeout_s)
                w.close()
                status = int(data[9:12]) if data else -1
                statuses[status] = statuses.get(status, 0) + 1
                lat.append(time.perf_counter() - t0)
            except (TimeoutError, OSError):
                timeouts += 1

    await asyncio.gather(*(one_get() for _ in range(gets)))
    stop.set()
    trickler.cancel()
    for s in socks:
        s.close()
    by_status = {str(k): v for k, v in statuses.items()}
    return {"slow": slow, "gets": gets, "timeouts": timeouts, "by_status": by_status, "get": quantiles(lat)}


def main() -> None:
    raise_fd_limit()
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "closed":
        out = run(closed(port, sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
    elif mode == "burst":
        out = run(burst(port, sys.argv[3], int(sys.argv[4])))
    elif mode == "slow-upload":
        out = run(slow_upload(port, int(sys.argv[3]), int(sys.argv[4])))
    else:
        sys.exit(f"unknown mode {mode!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
