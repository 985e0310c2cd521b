#!/usr/bin/env python3
"""Each process's own Python per WebSocket echo message, without sockets: a microbenchmark.

    python tests/benchmarks/micro_ws.py [--connections 100] [--rounds 2000]

* Front end: ``--connections`` open sessions (the real upgrade path: our
  HTTP/1 protocol, the bridge, WS_CONNECT / WS_ACCEPT) on fake transports,
  the dispatcher's ZeroMQ channel replaced by a list (micro_frontend.py's
  set-up). A round: a masked client text frame on every connection
  (``WsConnection.data_received``: parse, unmask, WS_MESSAGE posted), the
  WS_MESSAGEs encoded as the channel would, the worker's echoes decoded and
  handed to the dispatcher (the stream, the session, the frame written).
* App server: ``WebSocketCycle`` running ``bench_app``'s echo app on one task
  per socket, the WS_MESSAGEs decoded and fed in, the app's WS_MESSAGEs
  emitted and encoded.

Each side's number includes its own encoding and decoding (``wire.codec``).

What it leaves out is the transport: the client socket's read and write, ZeroMQ
(pyzmq's send and receive, its I/O threads, the wake-ups), the event loop's
polling. ``bench.py --cases ws`` measures the whole; the difference is what the
transport costs (tests/benchmarks/README.md, "Session 12").

Prints µs of CPU per message (best of ``--repeat``) and which build ran (``ZASGI_PURE=1``: pure Python).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import uvloop  # noqa: E402
from bench_app import app  # noqa: E402
from micro_frontend import PEER, _Transport, on_a_list  # noqa: E402

from appserver.stream import StreamSettings  # noqa: E402
from appserver.websocket import IdleCredit, WebSocketCycle  # noqa: E402
from frontend.connection import Connection  # noqa: E402
from wire import codec, compiled  # noqa: E402
from wire import events as ev  # noqa: E402

TEXT = b"hello, echo 0123"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def masked_text_frame(payload: bytes) -> bytes:
    """A client's frame (RFC 6455 §5.3: clients mask), payload under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _SwitchingTransport(_Transport):
    """The upgrade hands the transport to the WebSocket protocol (``set_protocol``)."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def abort(self) -> None: ...


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _best(fn: Any, rounds: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):  # CPU time of this thread: the shared machine's other load is not ours
        t0 = time.thread_time()
        for _ in range(rounds):
            fn()
        best = min(best, time.thread_time() - t0)
    return best


async def front_end(conns: int, rounds: int, repeat: int) -> float:
    ctx, dispatcher, channel, server = on_a_list(capacity=10_000)
    record = dispatcher.pool.get(PEER)
    assert record is not None
    record.ws_capacity = 10_000
    record.features = frozenset({"http", "websocket"})
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(conns):
        transport = _SwitchingTransport()
        conn = Connection(server.shared, loop)
        transport.set_protocol(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(UPGRADE)
        transports.append(transport)
    await _settle()
    connects = [e for e in channel.posted if type(e) is ev.WsConnect]
    if len(connects) != conns:
        raise SystemExit(f"{len(connects)} of {conns} upgrades reached the worker")
    channel.posted.clear()
    dispatcher._on_events(PEER, [ev.WsAccept(c.stream_id, None, ()) for c in connects])
    await _settle()
    sessions = [t.protocol for t in transports]
    if any(getattr(s, "stream", None) is None for s in sessions):
        raise SystemExit("a WebSocket session did not open")
    frame = masked_text_frame(TEXT)

    def one_round() -> None:
        for session in sessions:
            session.data_received(frame)
        messages = codec.decode(codec.encode(channel.posted))  # what the channel would send
        channel.posted.clear()
        echoes = codec.encode([ev.WsMessage(m.stream_id, m.text, m.data) for m in messages])  # the worker's
        dispatcher._on_events(PEER, codec.decode(echoes))
        channel.posted.clear()  # (CREDITs)

    batch = codec.encode([ev.WsMessage(i, True, TEXT) for i in range(1, conns + 1)])

    def codec_only() -> None:  # the worker's part of the round: decode the messages, encode the echoes
        messages = codec.decode(batch)
        codec.encode([ev.WsMessage(m.stream_id, m.text, m.data) for m in messages])

    for fn in (one_round, codec_only):  # warm up
        for _ in range(200):
            fn()
    gc.collect()
    gc.freeze()
    written = [t.written for t in transports]
    per_round = _best(one_round, rounds, repeat) - _best(codec_only, rounds, repeat)
    if any(t.written == w for t, w in zip(transports, written, strict=True)):
        raise SystemExit("a session wrote no echo")
    gc.unfreeze()
    ctx.term()
    return per_round / (rounds * conns) * 1e6


async def app_server(conns: int, rounds: int, repeat: int) -> float:
    loop = asyncio.get_running_loop()
    emitted: list[Any] = []
    settings = StreamSettings(request_window_bytes=1 << 20, response_window_bytes=1 << 20)
    idle_credit = IdleCredit(loop)
    cycles = []
    for i in range(1, conns + 1):
        connect = ev.WsConnect(i, "ws", "1.1", b"/ws", b"", "", ((b"host", b"x"),), None, None)
        cycle = WebSocketCycle(connect, emit=emitted.append, settings=settings, idle_credit=idle_credit)
        cycle.task = loop.create_task(cycle.run(app))
        cycle.feed(ev.Credit(i, 1 << 40))  # never waits for credit here
        cycles.append(cycle)
    await _settle()
    emitted.clear()
    batch = codec.encode([ev.WsMessage(c.stream_id, True, TEXT) for c in cycles])  # as the front end sends

    async def some_rounds(n: int) -> None:
        for _ in range(n):
            for cycle, message in zip(cycles, codec.decode(batch), strict=True):
                cycle.feed(message)
            await asyncio.sleep(0)  # each app task takes its message and sends the echo
            await asyncio.sleep(0)
            if sum(type(e) is ev.WsMessage for e in emitted) != conns:
                raise SystemExit("an app did not echo")
            codec.encode(emitted)  # as the channel would
            emitted.clear()

    await some_rounds(200)
    gc.collect()
    gc.freeze()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        await some_rounds(rounds)
        best = min(best, time.thread_time() - t0)
    gc.unfreeze()
    for cycle in cycles:
        assert cycle.task is not None
        cycle.task.cancel()
    await _settle()
    return best / (rounds * conns) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    fe = uvloop.run(front_end(args.connections, args.rounds, args.repeat))
    wk = uvloop.run(app_server(args.connections, args.rounds, args.repeat))
    print(f"Python per WebSocket echo message: front end {fe:.2f} µs, app server {wk:.2f} µs "
          f"({args.connections} connections, best of {args.repeat}; {compiled.describe()})")  # fmt: skip


if __name__ == "__main__":
    main()
