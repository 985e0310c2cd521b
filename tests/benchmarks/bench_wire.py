#!/usr/bin/env python3
"""The wire hop alone: REQUEST -> RESPONSE round trips over ROUTER<->DEALER, 64 in flight.

Two processes (front-end role and worker role) using wire.channel, as zasgi
does; prints round trips per second. Run: python tests/benchmarks/bench_wire.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import tempfile
import time

import uvloop
import zmq

from wire import events as ev
from wire.channel import Channel, configure_dealer, configure_router

IN_FLIGHT, SECONDS = 64, 3.0
HEADERS = ((b"Host", b"127.0.0.1:8000"), (b"User-Agent", b"wrk"), (b"Accept", b"*/*"))


def worker(endpoint: str) -> None:
    async def main() -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        configure_dealer(sock, routing_id=b"w1")
        sock.connect(endpoint)
        done = asyncio.Event()

        def on_events(peer: object, events: list[object]) -> None:
            for e in events:
                if isinstance(e, ev.Request):
                    channel.post(ev.Response(e.stream_id, 200, ((b"content-type", b"text/plain"),), b"Hello, world!"))
                elif isinstance(e, ev.Bye):
                    done.set()

        channel = Channel(sock, routed=False, on_events=on_events, on_bad_message=print)
        channel.post(ev.Heartbeat())
        await done.wait()
        channel.close()
        ctx.term()

    uvloop.run(main())


async def frontend(endpoint: str) -> float:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    configure_router(sock)
    sock.bind(endpoint)
    peer: list[bytes] = []
    joined = asyncio.Event()
    count = 0
    next_id = 1

    def send_one() -> None:
        nonlocal next_id
        channel.post(ev.Request(next_id, "GET", "http", "1.1", b"/", b"", "", HEADERS, ("127.0.0.1", 5), None), peer[0])
        next_id += 1

    def on_events(p: bytes, events: list[object]) -> None:
        nonlocal count
        for e in events:
            if isinstance(e, ev.Heartbeat):
                peer.append(p)
                joined.set()
            elif isinstance(e, ev.Response):
                count += 1
                send_one()

    channel = Channel(sock, routed=True, on_events=on_events, on_bad_message=print)
    await joined.wait()
    for _ in range(IN_FLIGHT):
        send_one()
    start = time.perf_counter()
    await asyncio.sleep(SECONDS)
    rate = count / (time.perf_counter() - start)
    channel.post(ev.Bye(0, "done"), peer[0])
    channel.flush()
    await asyncio.sleep(0.1)
    channel.close()
    ctx.term()
    return rate


def main() -> None:
    endpoint = f"ipc://{tempfile.mkdtemp()}/bench.sock"
    proc = multiprocessing.get_context("spawn").Process(target=worker, args=(endpoint,))
    proc.start()
    rate = uvloop.run(frontend(endpoint))
    proc.join(5)
    print(f"wire round trips: {rate:,.0f}/s with {IN_FLIGHT} in flight", file=sys.stdout)


if __name__ == "__main__":
    main()
