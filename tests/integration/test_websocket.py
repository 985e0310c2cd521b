"""WebSocket end to end through real processes: ``zasgi run`` and the split over TCP."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .conftest import Server, start_run, start_split, stop

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def test_echo_text_and_bytes(server: Server) -> None:
    with connect(ws_url(server, "/ws/echo")) as ws:
        for message in ["hello", "héllo wörld ✓", b"\x00\x01binary", "", b""]:
            ws.send(message)
            assert ws.recv(timeout=10) == message


@pytest.mark.parametrize("size", [0, MiB], ids=["0B", "1MiB"])
def test_message_sizes(server: Server, size: int) -> None:
    data = os.urandom(size)
    with connect(ws_url(server, "/ws/echo"), max_size=2 * MiB) as ws:
        ws.send(data)
        assert ws.recv(timeout=20) == data
        ws.send("x" * size)
        assert ws.recv(timeout=20) == "x" * size


def test_scope(server: Server) -> None:
    with connect(ws_url(server, "/ws/echo?room=a%20b"), additional_headers={"X-Dup": "1"}) as ws:
        ws.send("scope")
        scope = json.loads(ws.recv(timeout=10))
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/ws/echo" and scope["query_string"] == "room=a%20b"
    assert scope["asgi"]["spec_version"] == "2.5"
    assert ["x-dup", "1"] in scope["headers"]
    assert scope["state"] == {"greeting": "hello from lifespan"}
    assert "websocket.http.response" in scope["extensions"]


def test_subprotocol_and_extra_headers(server: Server) -> None:
    with connect(ws_url(server, "/ws/echo?subprotocol=chat.v2"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers.get("x-extra") == "yes"
        ws.send("scope")
        assert json.loads(ws.recv(timeout=10))["subprotocols"] == ["chat.v1", "chat.v2"]


def test_app_initiated_close_code_and_reason(server: Server) -> None:
    with connect(ws_url(server, "/ws/echo")) as ws:
        ws.send("close 4001 app says bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4001 and ws.close_reason == "app says bye"


def test_client_initiated_close_code_reaches_the_app(server: Server) -> None:
    tag = f"c{time.monotonic_ns()}"
    with connect(ws_url(server, f"/ws/echo?tag={tag}")) as ws:
        ws.send("ping")
        ws.recv(timeout=10)
        ws.close(4002, "client says bye")
    server.wait_recorded("ws-disconnects", f"{tag}:4002:client says bye")


def test_vanished_client_is_1006_for_the_app(server: Server) -> None:
    tag = f"v{time.monotonic_ns()}"
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(server.host_port, timeout=10) as sock:
        sock.sendall(f"GET /ws/echo?tag={tag} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    # socket closed with no close frame
    server.wait_recorded("ws-disconnects", f"{tag}:1006:")


def test_close_before_accept_is_403(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/ws/reject"))
    assert info.value.response.status_code == 403


def test_denial_response(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/ws/deny"))
    response = info.value.response
    assert response.status_code == 401
    assert response.headers.get("x-denied") == "1"
    assert response.body == b"no entry"


def test_oversize_message_is_closed_with_1009(server: Server) -> None:
    with connect(ws_url(server, "/ws/echo")) as ws:
        ws.send(b"x" * (16 * MiB + 1))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
        assert ws.close_code == 1009
    with connect(ws_url(server, "/ws/echo")) as ws:  # and the server goes on
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"


# ------------------------------------------------------------------ scale and memory


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


@pytest.mark.slow
def test_1000_concurrent_websockets_through_the_split(tmp_path: Path) -> None:
    _raise_fd_limit()  # before the servers start: they inherit it
    server = start_split(tmp_path, appservers=2)
    try:
        counts = asyncio.run(_many_clients(ws_url(server, "/ws/echo"), clients=1000, messages=100))
        assert counts == [100] * 1000, server.logs()
    finally:
        stop(server)


async def _many_clients(url: str, *, clients: int, messages: int) -> list[int]:
    sem = asyncio.Semaphore(200)  # connect in waves; all 1,000 stay open at once

    async def one(i: int, all_open: asyncio.Barrier) -> int:
        async with sem:
            ws = await aconnect(url, open_timeout=60, ping_interval=None)
        try:
            await asyncio.wait_for(all_open.wait(), 120)
            for n in range(messages):
                await ws.send(f"{i}:{n}")
            ok = 0
            for n in range(messages):
                if await asyncio.wait_for(ws.recv(), 60) == f"{i}:{n}":
                    ok += 1
            return ok
        finally:
            await ws.close()

    barrier = asyncio.Barrier(clients)
    return list(await asyncio.gather(*(one(i, barrier) for i in range(clients))))


# 8x the memory bound below: enough to show it holds, and done within seconds (the sender below
# outruns the app by far, so the run takes what the app takes to read it: FLOOD_MIB x FLOOD_DELAY_S).
FLOOD_MIB = 256
FLOOD_DELAY_S = 0.01
BUFFERED_MIB = 64  # what may sit in buffers on the way (sockets, the window, the app's message)


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame masked with the key 0000, which leaves the payload as it is: one
    frame is built once and sent again and again at memory speed. (A Python client masking
    1 MiB at a time sends ~16 MiB/s: slower than the app reads, so nothing would back up.)"""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + length + b"\0\0\0\0" + payload


def _recv_some(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes; the server closing is a failure, not an endless loop of empty reads."""
    data = sock.recv(n)
    assert data, "the server closed the connection"
    return data


def _read_text_frame(sock: socket.socket) -> str:
    """One unfragmented text frame from the server (unmasked, under 126 bytes: a byte count)."""
    head = b""
    while len(head) < 2:
        head += _recv_some(sock, 2 - len(head))
    assert head[0] == 0x81 and head[1] < 126, head
    body = b""
    while len(body) < head[1]:
        body += _recv_some(sock, head[1] - len(body))
    return body.decode()


@pytest.mark.slow
def test_flood_at_a_slow_app_keeps_memory_bounded(tmp_path: Path) -> None:
    """A client sending far faster than the app reads is held back (the front end stops reading
    once the window is spent): no process grows by more than 32 MiB, and the sender takes about
    as long as the app does to read it, not the fraction of a second its socket would."""
    server = start_run(tmp_path, workers=1)
    try:
        pids = [p.pid for p in server.procs[0].descendants()]
        with connect(ws_url(server, "/ws/echo"), max_size=4 * MiB) as ws:  # warm-up
            ws.send(b"x" * MiB)
            ws.recv(timeout=10)
        baseline = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
        peak = dict(baseline)
        result: dict[str, object] = {}

        def flood() -> None:
            key = base64.b64encode(os.urandom(16)).decode()
            frame = _client_frame(0x2, os.urandom(MiB))
            with socket.create_connection(server.host_port, timeout=60) as sock:
                sock.sendall(f"GET /ws/slow-reader?delay={FLOOD_DELAY_S} HTTP/1.1\r\nHost: t\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
                response = b""
                while b"\r\n\r\n" not in response:
                    response += _recv_some(sock, 4096)
                assert response.startswith(b"HTTP/1.1 101"), response
                began = time.monotonic()
                for _ in range(FLOOD_MIB):
                    sock.sendall(frame)
                result["send_s"] = time.monotonic() - began
                sock.sendall(_client_frame(0x1, b"done"))
                result["total"] = _read_text_frame(sock)

        thread = threading.Thread(target=flood)
        thread.start()
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            for pid in pids:
                peak[pid] = max(peak[pid], psutil.Process(pid).memory_info().rss)
            time.sleep(0.1)
        thread.join(1)
        growth = {pid: (peak[pid] - baseline[pid]) // 1024 for pid in pids}
        print("RSS growth KiB per process:", growth, "sent in", result.get("send_s"))
        assert result.get("total") == str(FLOOD_MIB * MiB)
        assert all(peak[pid] - baseline[pid] < 32 * MiB for pid in pids), growth
        # Held back: the app reads one MiB per FLOOD_DELAY_S, and only what buffers hold is ahead.
        send_s, held_s = result["send_s"], (FLOOD_MIB - BUFFERED_MIB) * FLOOD_DELAY_S
        assert isinstance(send_s, float) and send_s >= held_s, result
    finally:
        stop(server)


def test_run_passes_websocket_options_to_the_front_end(tmp_path: Path) -> None:
    server = start_run(tmp_path, "--ws-max-size", "100", "--no-ws-per-message-deflate", workers=1)
    try:
        with connect(ws_url(server, "/ws/echo")) as ws:
            ws.send("a" * 100)
            assert ws.recv(timeout=10) == "a" * 100
            ws.send("a" * 101)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1009
    finally:
        stop(server)
