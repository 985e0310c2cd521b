"""A rogue worker cannot crash, hang or stall the front end (PROTOCOL.md §10, §11).

A real front end process runs with --log-level error; a well-behaved worker (a
thread answering 200 "good") serves beside a rogue DEALER driven by
hypothesis: per example the rogue says HELLO, HTTP and WebSocket clients
open streams (spread over both workers by the dispatcher), and the rogue
answers its streams with generated event sequences -- mostly well-formed
events of the worker's kinds with some fields or stream ids wrong, plus
garbage frames, oversize frames and wrong control events -- then vanishes.
Every client must get an answer or a close within a deadline, every stream
the good worker got must come back 200, and the front end logs no error.

Examples: ZASGI_FUZZ_EXAMPLES (default 200, ~12 s here; the on-demand run is
``ZASGI_FUZZ_EXAMPLES=100000 python -m pytest tests/frontend/test_rogue_worker.py``,
see tests/benchmarks/README.md).
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wire
from tests.helpers.processes import Proc
from wire import codec
from wire import events as ev
from wire.channel import configure_dealer

EXAMPLES = int(os.environ.get("ZASGI_FUZZ_EXAMPLES", "200"))
CLIENT_DEADLINE_S = 30.0  # a loaded 2-core machine; a real hang blows through any of these
MAX_PAYLOAD = 8 * 1024  # small, so oversize frames are cheap to make
K = ev.Kind


# ---------------------------------------------------------------- the front end


@dataclass
class Env:
    host: str
    port: int
    endpoint: str
    ctx: zmq.Context[Any]
    proc: Proc
    good: GoodWorker


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # A real `python -m frontend` process: its own interpreter, so nothing it does (its use of
    # `random`, a crash) leaks into hypothesis' bookkeeping; errors only show up in its log.
    directory = tmp_path_factory.mktemp("rogue")
    ipc = directory if len(str(directory)) < 80 else Path(tempfile.mkdtemp(prefix="zrogue-"))
    argv = [sys.executable, "-m", "frontend", "--port", "0", "--backend", f"ipc://{ipc}/fe.sock",
            "--max-payload-bytes", str(MAX_PAYLOAD), "--heartbeat-ms", "1000", "--liveness", "5",
            "--queue-timeout", "0.5", "--shutdown-timeout", "2", "--log-level", "error"]  # fmt: skip
    # (--liveness 5: the good worker is a thread of this loaded test process, which may stall for
    # seconds; a vanished rogue is noticed at once all the same, by the ROUTER's monitor.)
    proc = Proc("frontend", argv, directory)
    ctx: zmq.Context[Any] = zmq.Context()
    good: GoodWorker | None = None
    try:
        match = proc.wait_for(r"zasgi-ready frontend http://(\S+):(\d+) backend=(\S+)", 60)
        good = GoodWorker(ctx, match.group(3))
        good.start()
        yield Env(match.group(1), int(match.group(2)), match.group(3), ctx, proc, good)
    finally:
        if good is not None:
            good.stop()
        proc.kill_tree()
        ctx.term()


# ---------------------------------------------------------------- the good worker


class GoodWorker(threading.Thread):
    """Answers every REQUEST 200 "good" and rejects every WS_CONNECT, heartbeats; a plain thread."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        super().__init__(name="good-worker", daemon=True)
        self.sock = ctx.socket(zmq.DEALER)
        configure_dealer(self.sock, routing_id=b"good")
        self.sock.connect(endpoint)
        self.welcomed = threading.Event()
        self.opened = 0  # streams given to it (only this thread writes)
        self._halt = threading.Event()

    def start(self) -> None:
        super().start()
        assert self.welcomed.wait(30), "the good worker was not welcomed"

    def run(self) -> None:
        hello = ev.Hello(0, wire.PROTOCOL_VERSION, "good", os.getpid(), 64, 64, 256 * 1024,
                         ("http", "websocket"), {})  # fmt: skip
        self._send([hello])
        last_sent = time.monotonic()
        while not self._halt.is_set():
            if self.sock.poll(100):
                out: list[Any] = []
                for event in codec.decode(self.sock.recv_multipart()):
                    kind = type(event)
                    if kind is ev.Welcome:
                        self.welcomed.set()
                    elif kind is ev.UnknownPeer:
                        out.append(hello)
                    elif kind is ev.Request or kind is ev.WsConnect:
                        self.opened += 1
                    if kind is ev.Request:
                        out.append(ev.Response(event.stream_id, 200, ((b"x-worker", b"good"),), b"good",
                                               False, False))  # fmt: skip
                        if event.more_body:  # stop the rest of the body: the response is complete
                            out.append(ev.Reset(event.stream_id, ev.ResetCode.CANCELLED, "done"))
                    elif kind is ev.WsConnect:
                        out.append(ev.WsClose(event.stream_id, 1000, "good says no"))
                if out:
                    self._send(out)
                    last_sent = time.monotonic()
            if time.monotonic() - last_sent > 0.3:
                self._send([ev.Heartbeat()])
                last_sent = time.monotonic()

    def _send(self, events: list[Any]) -> None:
        self.sock.send_multipart(codec.encode(events))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.sock.close(linger=0)


# ---------------------------------------------------------------- clients


@dataclass
class Client:
    sock: socket.socket
    websocket: bool
    received: bytes = b""
    done: bool = False

    def finished(self) -> bool:
        """The front end answered: the connection closed, or a WebSocket saw its close frame."""
        if self.done:
            return True
        if self.websocket and b" 101 " in self.received.split(b"\r\n", 1)[0]:
            return b"\x88" in self.received.partition(b"\r\n\r\n")[2]  # a close frame arrived
        return False


def _open_client(env: Env, kind: str, n: int) -> Client:
    sock = socket.create_connection((env.host, env.port), timeout=30)
    if kind == "ws":
        request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
    else:
        body = b"b" * (n * 997 % 20_000)
        method = b"POST" if kind == "post" else b"GET"
        request = (method + b" /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    sock.sendall(request)
    sock.setblocking(False)
    return Client(sock, websocket=kind == "ws")


def _await_clients(clients: list[Client], deadline_s: float) -> list[Client]:
    """Read until every client is finished; return the ones that were not by the deadline."""
    sel = selectors.DefaultSelector()
    for client in clients:
        sel.register(client.sock, selectors.EVENT_READ, client)
    deadline = time.monotonic() + deadline_s
    try:
        while any(not c.finished() for c in clients) and time.monotonic() < deadline:
            for key, _ in sel.select(0.05):
                client = key.data
                try:
                    chunk = client.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    client.received += chunk
                else:
                    client.done = True
                    sel.unregister(client.sock)
    finally:
        sel.close()
        for client in clients:
            client.sock.close()
    return [c for c in clients if not c.finished()]


# ---------------------------------------------------------------- the rogue


class Rogue:
    def __init__(self, ctx: zmq.Context[Any], endpoint: str, n: int) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        configure_dealer(self.sock, routing_id=f"rogue-{n}".encode())
        self.sock.connect(endpoint)
        self.opened: list[int] = []  # stream ids the front end gave us
        self.ws: set[int] = set()

    def hello(self) -> None:
        hello = ev.Hello(0, wire.PROTOCOL_VERSION, "rogue", 1, 64, 64, 256 * 1024,
                         ("http", "websocket", "ws-denial", "trailers", "pathsend", "handoff"), {})  # fmt: skip
        self.sock.send_multipart(codec.encode([hello]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.receive(0.1)
            if self.welcomed:
                return
        raise AssertionError("the rogue was not welcomed")

    welcomed = False

    def receive(self, timeout_s: float) -> None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for event in codec.decode(frames):
                if type(event) is ev.Welcome:
                    self.welcomed = True
                elif type(event) in (ev.Request, ev.WsConnect, ev.WsResume):
                    self.opened.append(event.stream_id)
                    if type(event) is not ev.Request:
                        self.ws.add(event.stream_id)

    def send(self, frames: list[bytes]) -> None:
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self) -> None:
        self.sock.close(linger=0)


# Worker-side kinds, with the field values a plausible worker would send; hypothesis mixes in junk.
_headers = st.lists(st.tuples(st.sampled_from([b"content-type", b"x-a", b"content-length", b"Transfer-Encoding",
                                               b"", b"bad name\r\n"]),
                              st.sampled_from([b"1", b"text/plain", b"chunked", b"\r\n", b"99999999"])),
                    max_size=3)  # fmt: skip
_junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8),
                  st.binary(max_size=8), st.floats(), st.lists(st.integers(-9, 2**40), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2))  # fmt: skip
_payload = st.one_of(st.binary(max_size=300), st.integers(1, 3), st.just(b"p" * (MAX_PAYLOAD + 1)))
_FIELDS: dict[int, list[st.SearchStrategy[Any]]] = {
    K.RESPONSE: [st.integers(99, 1000), _headers, _payload, st.booleans(), st.booleans()],
    K.BODY: [_payload, st.booleans()],
    K.TRAILERS: [_headers, st.booleans()],
    K.PATHSEND: [st.sampled_from(["/nonexistent", "/", "relative", "", os.path.abspath(__file__)])],
    K.RESET: [st.integers(0, 7), st.text(max_size=10)],
    K.CREDIT: [st.integers(0, 2**63 - 1)],
    K.WS_ACCEPT: [st.one_of(st.none(), st.sampled_from(["chat", "x y"])), _headers],
    K.WS_MESSAGE: [st.booleans(), st.one_of(st.binary(max_size=100), st.just("é".encode()), st.just(b"\xff"),
                                              st.integers(1, 2))],
    K.WS_CLOSE: [st.integers(999, 5000), st.text(max_size=130)],
    K.WS_HANDOFF: [_junk],
    K.DRAIN: [], K.HEARTBEAT: [], K.BYE: [st.text(max_size=5)],
    K.HELLO: [st.integers(0, 2), st.text(max_size=5), st.integers(0, 5), st.integers(0, 3), st.integers(0, 3),
              st.integers(0, 10), st.just(["http"]), st.just({})],
    K.REQUEST: [st.just("GET")], K.WS_CONNECT: [st.just("ws")], K.DISCONNECT: [], K.UNKNOWN_PEER: [],
    K.WELCOME: [st.just("x")], K.REFUSE: [st.just("no")], K.WS_RESUME: [st.just([])],
}  # fmt: skip
_STREAM_KINDS = [K.RESPONSE, K.BODY, K.TRAILERS, K.PATHSEND, K.RESET, K.CREDIT, K.WS_ACCEPT, K.WS_MESSAGE,
                 K.WS_CLOSE, K.WS_HANDOFF]  # fmt: skip


def _event(data: st.DataObject, rogue: Rogue) -> list[Any]:
    kind = data.draw(st.sampled_from(_STREAM_KINDS) | st.sampled_from(list(K)) | st.integers(0, 50), "kind")
    # Draws never depend on what the front end did (hypothesis replays them): indices, mapped here.
    opened = rogue.opened or [1]
    choice = data.draw(st.integers(0, 15), "stream")
    if choice == 0 and kind in (K.HEARTBEAT, K.DRAIN, K.BYE, K.HELLO):
        stream_id = 0
    elif choice < 10:
        stream_id = opened[-1 - choice % len(opened)]  # mostly streams it was given
    else:
        stream_id = [0, 1, max(opened) + 1, 2**63 - 1, -1, 2**64 - 1][choice - 10]
    fields = [data.draw(s) for s in _FIELDS.get(kind, [])]
    if fields and data.draw(st.integers(0, 9)) == 0:  # one wrong field, or one missing, or one extra
        i = data.draw(st.integers(0, len(fields) - 1))
        how = data.draw(st.sampled_from(["junk", "drop", "extra"]))
        if how == "junk":
            fields[i] = data.draw(_junk)
        elif how == "drop":
            fields.pop()
        else:
            fields.append(data.draw(_junk))
    return [kind, stream_id, *fields]


def _message(data: st.DataObject, rogue: Rogue) -> list[bytes]:
    shape = data.draw(st.integers(0, 19), "shape")
    if shape == 0:  # not msgpack, or not an array of events
        return data.draw(st.lists(st.binary(max_size=40), min_size=1, max_size=3), "garbage")
    if shape == 1:  # an ext type inside an otherwise fine event
        return [msgpack.packb([[K.BODY, max(rogue.opened, default=1), msgpack.ExtType(1, b"x"), False]])]
    if shape == 2:  # an oversize payload frame
        return [msgpack.packb([[K.BODY, max(rogue.opened, default=1), 1, False]]), b"o" * (MAX_PAYLOAD + 1)]
    events = [_event(data, rogue) for _ in range(data.draw(st.integers(1, 4), "batch"))]
    frames = [msgpack.packb(events, use_bin_type=True)]
    frames += [b"f" * n for n in data.draw(st.lists(st.integers(0, 200), max_size=3), "frames")]
    return frames


def _check(env: Env) -> None:
    assert env.proc.popen.poll() is None, f"the front end died:\n{env.proc.log()[-4000:]}"
    log = env.proc.log()  # --log-level error: anything here is a failure (a traceback, an error)
    assert "zasgi-ready" in log and not log.split("\n", 1)[1].strip(), f"the front end logged:\n{log[-4000:]}"


_counter = iter(range(10**9))


@pytest.mark.timeout(60 + EXAMPLES)  # ~20 ms each; generous for a loaded machine
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_a_rogue_worker_cannot_crash_hang_or_stall_the_front_end(env: Env, data: st.DataObject) -> None:
    n = next(_counter)
    rogue = Rogue(env.ctx, env.endpoint, n)
    clients: list[Client] = []
    try:
        rogue.hello()
        kinds = data.draw(st.lists(st.sampled_from(["get", "post", "ws"]), min_size=1, max_size=4), "clients")
        clients = [_open_client(env, kind, n + i) for i, kind in enumerate(kinds)]
        given_good = env.good.opened
        # Until every stream is with one of the two workers (one may go to the previous rogue, not
        # yet noticed gone: it is replayed or failed without us, hence the short cap).
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline and len(rogue.opened) + env.good.opened - given_good < len(kinds):
            rogue.receive(0.002)
        for _ in range(data.draw(st.integers(1, 6), "messages")):
            rogue.send(_message(data, rogue))
            rogue.receive(0.001)
        if data.draw(st.booleans(), "linger"):
            rogue.receive(0.01)
        if data.draw(st.booleans(), "bye"):
            rogue.send(codec.encode([ev.Bye(0, "rogue out")]))
        rogue.close()  # it vanishes: whatever it left open must be failed or replayed
        stuck = _await_clients(clients, CLIENT_DEADLINE_S)
    finally:
        rogue.close()
        for client in clients:
            client.sock.close()
    assert not stuck, f"clients got no answer: {[c.received[:200] for c in stuck]}"
    for client in clients:
        # The good worker's answer is known by its header: in the head only, since a rogue may
        # PATHSEND any local file as its body (this test's source, which spells the header out).
        head = client.received.partition(b"\r\n\r\n")[0]
        if b"\r\nx-worker: good\r\n" in head + b"\r\n":
            assert client.received.startswith(b"HTTP/1.1 200 "), client.received[:200]
    _check(env)


def test_the_good_worker_still_serves_after_the_rogues(env: Env) -> None:
    clients = [_open_client(env, "get", i) for i in range(20)]
    assert not _await_clients(clients, CLIENT_DEADLINE_S)
    for client in clients:
        assert client.received.startswith(b"HTTP/1.1 200 ") and client.received.endswith(b"good"), client.received
    _check(env)
