#!/usr/bin/env python3
"""The wire hop alone: REQUEST -> RESPONSE round trips between two processes, and their CPU.

    python tests/benchmarks/bench_wire.py                          # ZeroMQ, 64 in flight
    python tests/benchmarks/bench_wire.py --in-flight 1 --transport both

Two processes (front-end role and worker role) exchange hello world's events,
encoded by ``wire.codec``, each batch of one loop iteration leaving as one
message, as zasgi does. Prints round trips per second and the CPU each
process spent per round trip (every thread: ZeroMQ's I/O thread counts).

``--transport``:

* ``zmq`` (what zasgi runs): ``wire.channel.Channel`` on ROUTER <-> DEALER
  over ``ipc://``. Each message crosses four threads: the sender's, its
  context's I/O thread, the receiver's I/O thread, the receiver's.
* ``unix``: the same batches as length-prefixed frames on a Unix stream
  socket read and written by each process's uvloop (no thread but the
  loop's): what the hop would cost without ZeroMQ's I/O threads. A
  measuring stick for the design question, not a transport zasgi has.

``--in-flight 1`` is a request at rest (every message wakes its receiver);
64 is a loaded server's (batches of up to 32 events, the channel's
``BATCH_MAX_EVENTS``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import uvloop
import zmq

from wire import codec
from wire import events as ev
from wire.channel import BATCH_MAX_EVENTS, Channel, configure_dealer, configure_router

HEADERS = ((b"Host", b"127.0.0.1:8000"), (b"User-Agent", b"wrk"), (b"Accept", b"*/*"))
RESPONSE_HEADERS = ((b"content-type", b"text/plain"),)
_U32 = struct.Struct("!I")
OnEvents = Callable[[list[Any]], None]


def _answer(post: Callable[[Any], None], events: list[Any], done: Callable[[], None]) -> None:
    """The worker's part: a whole RESPONSE for each REQUEST."""
    for e in events:
        if type(e) is ev.Request:
            post(ev.Response(e.stream_id, 200, RESPONSE_HEADERS, b"Hello, world!"))
        elif type(e) is ev.Bye:
            done()


class _StreamLink(asyncio.Protocol):
    """``--transport unix``: a batch per loop iteration, as ``[frame count][length, frame]...``
    (u32 big-endian) on a stream socket; what arrives is decoded with ``wire.codec``."""

    def __init__(self, on_events: OnEvents) -> None:
        self._on_events = on_events
        self._transport: asyncio.Transport | None = None
        self._outbox: list[Any] = []
        self._buffer = b""
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self.ready.set_result(None)

    def post(self, event: Any) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self.flush)
        self._outbox.append(event)
        if len(self._outbox) >= BATCH_MAX_EVENTS:
            self.flush()

    def flush(self) -> None:
        if not self._outbox or self._transport is None:
            return
        frames = codec.encode(self._outbox)
        self._outbox = []
        parts = [_U32.pack(len(frames))]
        for frame in frames:
            parts += (_U32.pack(len(frame)), frame)
        self._transport.write(b"".join(parts))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while True:
            frames = self._message(buffer, at)
            if frames is None:
                break
            at, message = frames
            self._on_events(codec.decode(message))
        self._buffer = buffer[at:]

    @staticmethod
    def _message(buffer: bytes, at: int) -> tuple[int, list[bytes]] | None:
        """The message starting at ``at`` and where the next starts, or None if not all here."""
        if len(buffer) - at < 4:
            return None
        (count,) = _U32.unpack_from(buffer, at)
        at += 4
        frames = []
        for _ in range(count):
            if len(buffer) - at < 4:
                return None
            (n,) = _U32.unpack_from(buffer, at)
            if len(buffer) - at - 4 < n:
                return None
            frames.append(buffer[at + 4 : at + 4 + n])
            at += 4 + n
        return at, frames


def worker(transport: str, endpoint: str) -> None:
    async def over_zmq() -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        configure_dealer(sock, routing_id=b"w1")
        sock.connect(endpoint)
        done = asyncio.Event()
        channel = Channel(
            sock, routed=False, on_events=lambda _, events: _answer(channel.post, events, done.set),
            on_bad_message=print,
        )  # fmt: skip
        channel.post(ev.Heartbeat())
        await done.wait()
        channel.close()
        ctx.term()

    async def over_unix() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        link: _StreamLink = _StreamLink(lambda events: _answer(link.post, events, done.set))
        for _ in range(100):  # (the front end may not be listening yet: 10 s at most)
            try:
                await loop.create_unix_connection(lambda: link, endpoint)
                break
            except OSError:
                await asyncio.sleep(0.1)
        await done.wait()

    uvloop.run(over_zmq() if transport == "zmq" else over_unix())


def _cpu_s(pid: int) -> float:
    """A process's user + system CPU so far, every thread (/proc: clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def frontend(
    transport: str, endpoint: str, worker_pid: int, in_flight: int, seconds: float
) -> dict[str, float]:
    count = 0
    next_id = 1
    joined = asyncio.Event()
    post: Callable[[Any], None]

    def send_one() -> None:
        nonlocal next_id
        post(ev.Request(next_id, "GET", "http", "1.1", b"/", b"", "", HEADERS, ("127.0.0.1", 5), None))
        next_id += 1

    def on_events(events: list[Any]) -> None:
        nonlocal count
        for e in events:
            if type(e) is ev.Heartbeat:
                joined.set()
            elif type(e) is ev.Response:
                count += 1
                send_one()

    ctx: zmq.Context[Any] | None = None
    link: _StreamLink | None = None
    if transport == "zmq":
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        configure_router(sock)
        sock.bind(endpoint)
        peer: list[bytes] = []

        def on_channel(p: bytes, events: list[Any]) -> None:
            if not peer:
                peer.append(p)
            on_events(events)

        channel = Channel(sock, routed=True, on_events=on_channel, on_bad_message=print)
        post = lambda event: channel.post(event, peer[0])  # noqa: E731
        await asyncio.wait_for(joined.wait(), 30)
    else:
        link = _StreamLink(on_events)
        server = await asyncio.get_running_loop().create_unix_server(lambda: link, endpoint)
        await asyncio.wait_for(link.ready, 30)
        post = link.post
    await asyncio.sleep(0.2)
    for _ in range(in_flight):
        send_one()
    await asyncio.sleep(0.5)  # warm: every message in flight
    start, own0, theirs0 = time.perf_counter(), _own_cpu_s(), _cpu_s(worker_pid)
    count = 0
    await asyncio.sleep(seconds)
    n, elapsed = count, time.perf_counter() - start
    own, theirs = _own_cpu_s() - own0, _cpu_s(worker_pid) - theirs0
    post(ev.Bye(0, "done"))
    if link is not None:
        link.flush()
        server.close()
    else:
        channel.flush()
        await asyncio.sleep(0.1)
        channel.close()
        assert ctx is not None
        ctx.term()
    return {"rate": n / elapsed, "fe_us": own / n * 1e6, "wk_us": theirs / n * 1e6}


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def run(transport: str, in_flight: int, seconds: float) -> dict[str, float]:
    where = tempfile.mkdtemp()
    endpoint = f"ipc://{where}/bench.sock" if transport == "zmq" else f"{where}/bench.sock"
    proc = multiprocessing.get_context("spawn").Process(target=worker, args=(transport, endpoint))
    proc.start()
    try:
        assert proc.pid is not None
        return uvloop.run(frontend(transport, endpoint, proc.pid, in_flight, seconds))
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--transport", choices=("zmq", "unix", "both"), default="zmq")
    args = parser.parse_args()
    for transport in ("zmq", "unix") if args.transport == "both" else (args.transport,):
        r = run(transport, args.in_flight, args.seconds)
        label = "ROUTER<>DEALER over ipc" if transport == "zmq" else "a Unix stream socket"
        print(f"wire round trips: {r['rate']:,.0f}/s with {args.in_flight} in flight, {label}; "
              f"CPU per round trip: front end {r['fe_us']:.1f} µs, worker {r['wk_us']:.1f} µs "
              f"(every thread)", file=sys.stdout)  # fmt: skip


if __name__ == "__main__":
    main()
