"""Hostile clients against ``zasgi run`` (real processes, raw sockets): malformed heads,
smuggling, oversize heads and bodies, a slowloris, 1,000 connections dropped abruptly.
After each test the server still serves and the worker is the same process (no restart).
The byte-exact matrix of every variant is tests/frontend/test_limits.py; here the
point is the whole stack surviving them.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Server, start_run, stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

HEADER_TIMEOUT_S = 1.0
MAX_BODY = 100_000
GET = b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLED = b"GET /status?code=299 HTTP/1.1\r\nHost: x\r\n\r\n"  # must never be answered


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {  # `zasgi run` hands its environment to the front end
        "ZASGI_TIMEOUT_REQUEST_HEADER": str(HEADER_TIMEOUT_S),
        "ZASGI_LIMIT_MAX_BODY_SIZE": str(MAX_BODY),
        "ZASGI_LIMIT_MAX_HEADER_SIZE": "4096",
    }
    srv = start_run(tmp_path_factory.mktemp("hostile"), workers=1, env=env)
    yield srv
    stop(srv)


def _pid(server: Server) -> int:
    resp = httpx.get(server.url + "/scope", timeout=30)
    assert resp.status_code == 200
    return int(resp.json()["pid"])


@pytest.fixture(scope="module")
def worker_pid(server: Server) -> int:
    return _pid(server)


@pytest.fixture(autouse=True)
def still_serving(server: Server, worker_pid: int) -> Iterator[None]:
    yield
    assert _pid(server) == worker_pid, "the worker was restarted\n" + server.logs()


def exchange(server: Server, data: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send ``data``, read until the server closes (it must)."""
    with socket.create_connection(server.host_port, timeout=timeout_s) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                return received
            received += chunk
    raise AssertionError(f"connection not closed within {timeout_s}s; got {received[:200]!r}")


def status_and_close(data: bytes) -> tuple[int, bool]:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return int(head.split(b" ", 2)[1]), b"\r\nconnection: close" in head


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /\r\n",
        b"GET / HTTP/2.7\r\n",
        b"G\x00T / HTTP/1.1\r\n",
        b"GET /a b HTTP/1.1\r\n",
        b"\r\n\r\n\r\n\x16\x03",
    ],
)
def test_malformed_request_line(server: Server, request_line: bytes) -> None:
    data = exchange(server, request_line + b"Host: x\r\n\r\n")
    assert status_and_close(data) == (400, True)


@pytest.mark.parametrize(
    "attack",
    [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: x,\r\n chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n",
        b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["cl-te", "duplicate-cl", "obs-fold-te", "bad-chunk-size", "te-in-http10"],
)
def test_smuggling_is_400_and_the_smuggled_request_is_never_served(server: Server, attack: bytes) -> None:
    data = exchange(server, attack + SMUGGLED)
    assert status_and_close(data) == (400, True)
    assert data.count(b"HTTP/1.") == 1 and b" 299 " not in data


def test_bad_chunk_mid_body_is_400(server: Server) -> None:
    with socket.create_connection(server.host_port, timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)  # the request is at the worker, its body streaming
        sock.sendall(b"5x\r\nworld\r\n0\r\n\r\n" + SMUGGLED)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert status_and_close(data) == (400, True) and data.count(b"HTTP/1.") == 1


def test_oversize_header_is_431(server: Server) -> None:
    data = exchange(server, b"GET /scope HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 5000 + b"\r\n\r\n")
    assert status_and_close(data) == (431, True)


def test_body_over_the_limit_is_413(server: Server) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    with socket.create_connection(server.host_port, timeout=10) as sock:
        sock.sendall(head)  # the answer comes before the body: the client need not send it
        data = b""
        while b"\r\n\r\n" not in data and (more := sock.recv(65536)):
            data += more
    assert status_and_close(data) == (413, True)
    with socket.create_connection(server.host_port, timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (20_000, b"z" * 20_000)
        data = b""
        for _ in range(MAX_BODY // 20_000 + 2):  # grows past the limit while streaming
            try:
                sock.sendall(chunk)
            except ConnectionError:
                break
        sock.settimeout(10)
        while b"\r\n\r\n" not in data and (more := sock.recv(65536)):
            data += more
    assert status_and_close(data) == (413, True)


def test_slowloris_gets_408_and_does_not_stop_other_clients(server: Server) -> None:
    result: dict[str, bytes] = {}

    def trickle() -> None:
        with socket.create_connection(server.host_port, timeout=10) as sock:
            for byte in GET[:-2]:  # a byte every 100 ms: the head would take 3 s
                try:
                    sock.sendall(bytes([byte]))
                except ConnectionError:
                    break
                time.sleep(0.1)
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
            result["data"] = data

    started = time.monotonic()
    slow = threading.Thread(target=trickle, daemon=True)
    slow.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while slow.is_alive() and time.monotonic() - started < 20:
            assert client.get("/scope").status_code == 200  # served meanwhile
            time.sleep(0.05)
    slow.join(20)
    assert status_and_close(result["data"]) == (408, True)


def test_a_thousand_connections_dropped_abruptly(server: Server) -> None:
    rst = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
    payloads = [
        b"",
        b"GET /scope HTTP/1.1\r\nHo",
        GET,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc",
    ]
    for batch in range(4):
        socks = []
        for i in range(250):
            sock = socket.create_connection(server.host_port, timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, rst)
            if payloads[(batch + i) % 4]:
                sock.sendall(payloads[(batch + i) % 4])
            socks.append(sock)
        for sock in socks:
            sock.close()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(20):
            assert client.get("/scope").status_code == 200
    assert "Traceback" not in server.logs()
