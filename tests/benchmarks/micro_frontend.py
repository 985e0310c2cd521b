#!/usr/bin/env python3
"""The front end's own Python per request, without sockets: a microbenchmark for its hot path.

    python tests/benchmarks/micro_frontend.py [--requests 200000] [--batch 16]

One ``Connection`` (our HTTP/1 protocol on aiohttp's C parser) on a fake
transport, the real request path (``services.Services``) and ``Dispatcher`` with the ZeroMQ channel
replaced by a list: each round parses ``--batch`` keep-alive GETs (one per
connection, as wrk sends them), encodes the REQUESTs the dispatcher posted
(``wire.codec.encode``, as the channel would), then decodes one message of
whole RESPONSEs (``wire.codec.decode``) and hands it to the dispatcher, which
writes each response to its connection. What it leaves out is the kernel and
ZeroMQ: the client socket's read and write, the event loop's wake-ups, pyzmq's
send/recv and the I/O thread (``bench.py`` and ``profile_hot_path.py`` see
those). The app server's side of each message (building the RESPONSEs) is
timed apart and subtracted.

Prints µs of CPU per request (best of ``--repeat``) and which build ran (``ZASGI_PURE=1``: pure Python); compare two checkouts by running
it from each with ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import zmq  # noqa: E402

from frontend.config import Backend, FrontendConfig  # noqa: E402
from frontend.connection import Connection  # noqa: E402
from frontend.dispatch import Dispatcher  # noqa: E402
from frontend.services import Services  # noqa: E402
from frontend.pool import WorkerRecord  # noqa: E402
from frontend.server import HttpServer  # noqa: E402
from wire import codec, compiled  # noqa: E402
from wire import events as ev  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"  # what wrk sends
PEER = b"worker-1"


class _Transport:
    """Enough of an asyncio transport for ``Connection``: writes are counted, not sent."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.written += len(part)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class _Channel:
    """The dispatcher's channel, as a list: what it posts is encoded like the real one."""

    def __init__(self) -> None:
        self.posted: list[Any] = []

    def post(self, event: Any, peer: Any = None) -> None:
        self.posted.append(event)

    def flush(self) -> None: ...
    def discard(self, peer: Any = None) -> list[Any]:
        return []

    def close(self) -> None: ...
    def share_reader(self, peer: Any, reader: Any) -> None: ...
    def share_writer(self, peer: Any, writer: Any) -> None: ...
    def unshare(self, peer: Any) -> None: ...


def _responses(requests: list[Any]) -> list[Any]:
    """The app server's part: a whole RESPONSE for each REQUEST (hello world's)."""
    headers = ((b"content-type", b"text/plain"), (b"content-length", b"13"))
    return codec.encode(
        [ev.Response(r.stream_id, 200, headers, b"Hello, world!", False, False) for r in requests]
    )


def on_a_list(capacity: int) -> tuple[zmq.Context[Any], Dispatcher, _Channel, HttpServer]:
    """The front end with its channel a list and one READY worker (``PEER``) of ``capacity``
    (in a running loop; the caller terms the context): this benchmark's set-up and walk_get.py's."""
    config = FrontendConfig(port=0, backend=Backend(endpoint="ipc:///tmp/unused"), access_log=False)
    ctx: zmq.Context[Any] = zmq.Context()
    dispatcher = Dispatcher(config, ctx)
    dispatcher._loop = asyncio.get_running_loop()
    channel = _Channel()
    dispatcher._channel = channel
    record = WorkerRecord(peer=PEER, worker_id="w1", pid=1, capacity=capacity, window_bytes=1 << 20,
                          features=frozenset({"http"}), now=0.0)  # fmt: skip
    dispatcher.pool.add(record)
    dispatcher.pool.welcome(PEER, 0.0)
    return ctx, dispatcher, channel, HttpServer(config, Services(config, dispatcher))


async def _run(requests: int, batch: int, repeat: int) -> None:
    ctx, dispatcher, channel, server = on_a_list(capacity=10_000)
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(batch):
        conn = Connection(server.shared, loop)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        conns.append(conn)
    rounds = max(1, requests // batch)

    def fe_round() -> None:
        for conn in conns:
            conn.data_received(REQUEST)
        frames = codec.encode(channel.posted)
        channel.posted.clear()
        answers = _responses(codec.decode(frames))
        dispatcher._on_events(PEER, codec.decode(answers))

    host = ((b"host", b"x"),)

    def app_side_only() -> None:  # the same round's app-server share, to subtract
        requests = [
            ev.Request(i, "GET", "http", "1.1", b"/", b"", "", host, None, None, b"", False, False, {})
            for i in range(1, batch + 1)
        ]
        _responses(codec.decode(codec.encode(requests)))

    for fn in (fe_round, app_side_only):  # warm up
        for _ in range(200):
            fn()
    gc.collect()
    gc.freeze()
    best_fe = best_app = float("inf")
    for _ in range(repeat):  # CPU time of this thread: the shared machine's other load is not ours
        t0 = time.thread_time()
        for _ in range(rounds):
            fe_round()
        t1 = time.thread_time()
        for _ in range(rounds):
            app_side_only()
        t2 = time.thread_time()
        best_fe, best_app = min(best_fe, t1 - t0), min(best_app, t2 - t1)
    n = rounds * batch
    print(f"front end Python per request: {(best_fe - best_app) / n * 1e6:.2f} µs "
          f"(round {best_fe / n * 1e6:.2f}, app-server share {best_app / n * 1e6:.2f}; batch {batch}, "
          f"{n} requests, best of {repeat}; {compiled.describe()})")  # fmt: skip
    if dispatcher.streams_open or sum(c.transport.written == 0 for c in conns):  # type: ignore[attr-defined]
        raise SystemExit("not every request was answered")
    ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_run(args.requests, args.batch, args.repeat))


if __name__ == "__main__":
    main()
