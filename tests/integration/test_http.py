"""HTTP end to end through real processes: ``zasgi run`` and the split over TCP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.apps.probe import pattern

from .conftest import Server

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def raw_exchange(server: Server, data: bytes, *, until: bytes | None = None, timeout_s: float = 10.0) -> bytes:
    """Send raw bytes, read until ``until`` is seen or the server closes."""
    with socket.create_connection(server.host_port, timeout=timeout_s) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (until is None or until not in received):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


# ------------------------------------------------------------------ scope


@pytest.mark.parametrize(
    ("target", "path", "raw_path", "query"),
    [
        ("/scope/a%20b", "/scope/a b", "/scope/a%20b", ""),
        ("/scope/%C3%A9t%C3%A9", "/scope/été", "/scope/%C3%A9t%C3%A9", ""),
        ("/scope/x%2Fy", "/scope/x/y", "/scope/x%2Fy", ""),
        ("/scope?a=1&a=2&b=&c", "/scope", "/scope", "a=1&a=2&b=&c"),
        ("/scope?q=%20%26%3D&&x==y", "/scope", "/scope", "q=%20%26%3D&&x==y"),
    ],
)
def test_scope_paths_and_query_strings(server: Server, target: str, path: str, raw_path: str, query: str) -> None:
    response = raw_exchange(server, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    scope = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert scope["path"] == path
    assert scope["raw_path"] == raw_path
    assert scope["query_string"] == query


def test_raw_non_ascii_target_is_a_clear_400(server: Server, client: httpx.Client) -> None:
    # RFC 9112: the request target is ASCII; clients percent-encode (previous test).
    response = raw_exchange(server, "GET /scope/ü HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    assert response.split(b"\r\n", 1)[0].endswith(b"400 Bad Request"), response[:200]
    assert client.get("/scope/%C3%BC").json()["path"] == "/scope/ü"


def test_full_scope(server: Server, client: httpx.Client) -> None:
    headers = [("X-Dup", "1"), ("x-dup", "2"), ("X-Mixed-Case", "V")]
    scope = client.get("/scope", headers=headers).json()
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1" and scope["method"] == "GET" and scope["scheme"] == "http"
    assert [v for k, v in scope["headers"] if k == "x-dup"] == ["1", "2"]
    assert ["x-mixed-case", "V"] in scope["headers"]
    assert all(k == k.lower() for k, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == [server.host_port[0], server.host_port[1]]
    assert scope["root_path"] == ""
    assert scope["state"] == {"greeting": "hello from lifespan"}
    assert {"http.response.trailers", "http.response.pathsend"} <= set(scope["extensions"])


def test_http_10(server: Server) -> None:
    response = raw_exchange(server, b"GET /stream?n=3 HTTP/1.0\r\nHost: t\r\n\r\n")
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()  # close-delimited on 1.0
    assert body == b"chunk 0\nchunk 1\nchunk 2\nend\n"


# ------------------------------------------------------------------ bodies


@pytest.mark.parametrize("size", [0, 1, MiB, 50 * MiB], ids=["0B", "1B", "1MiB", "50MiB"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_body_arrives_intact(client: httpx.Client, size: int, framing: str) -> None:
    data = pattern(size)
    if framing == "chunked":
        body: object = (data[i : i + 256 * 1024] for i in range(0, max(size, 1), 256 * 1024))
    else:
        body = data
    response = client.post("/digest", content=body)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert response.json() == {"sha256": hashlib.sha256(data).hexdigest(), "length": size}


def test_50mib_streamed_response_arrives_intact(client: httpx.Client) -> None:
    size = 50 * MiB
    h, n = hashlib.sha256(), 0
    with client.stream("GET", f"/big?size={size}") as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        for chunk in response.iter_raw():
            h.update(chunk)
            n += len(chunk)
    assert n == size and h.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()


def test_streaming_response_is_incremental(client: httpx.Client) -> None:
    # 1,000 chunks, 2 ms apart: the app needs >= 2 s; the first chunk must arrive long before.
    start = time.monotonic()
    with client.stream("GET", "/stream?n=1000&delay=0.002") as response:
        lines = response.iter_lines()
        assert next(lines) == "chunk 0"
        first_at = time.monotonic() - start
        rest = list(lines)
    total = time.monotonic() - start
    assert rest[-1] == "end" and len(rest) == 1000
    assert first_at < total / 2, (first_at, total)


# ------------------------------------------------------------------ connections


def test_100_requests_on_one_keepalive_connection(server: Server) -> None:
    with socket.create_connection(server.host_port, timeout=10) as sock:
        reader = sock.makefile("rb")
        for i in range(100):
            sock.sendall(f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len(str(i))}\r\n\r\n{i}".encode())
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert reader.read(length) == str(i).encode()


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    requests = b"".join(
        f"GET /stream?n=1&delay={0.05 if i % 2 else 0} HTTP/1.1\r\nHost: t\r\nX-I: {i}\r\n\r\n".encode()
        for i in range(10)
    )
    requests += b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast"
    response = raw_exchange(server, requests, timeout_s=20)
    assert response.count(b"HTTP/1.1 200") == 11
    assert response.endswith(b"last")


def test_head_has_headers_and_no_body(server: Server) -> None:
    response = raw_exchange(server, b"HEAD /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 2" in head.lower()
    assert body == b""


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(server: Server, code: int) -> None:
    """Nothing follows the head on the kept-alive connection: the next response starts right after it
    (a second request, pipelined, ends the exchange instead of a read timeout)."""
    requests = (f"GET /status?code={code} HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /status?code=200 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    response = raw_exchange(server, requests)
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {code}".encode())
    assert rest.startswith(b"HTTP/1.1 200"), rest[:200]
    assert b"transfer-encoding" not in head.lower()


def test_duplicate_response_headers_are_kept(client: httpx.Client) -> None:
    response = client.get("/headers")
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.text == "ok"


def test_expect_100_continue(server: Server) -> None:
    with socket.create_connection(server.host_port, timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b"hello")
        response = b""
        while not response.endswith(b"hello"):
            chunk = sock.recv(1024)
            assert chunk
            response += chunk
    assert b"HTTP/1.1 200" in response


def test_trailers_when_client_accepts_them(server: Server) -> None:
    response = raw_exchange(
        server, b"GET /trailers HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n"
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"4\r\nbody\r\n0\r\nx-digest: abc\r\n\r\n"


def test_pathsend(server: Server, client: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("files") / "file.bin"
    data = pattern(3 * MiB + 17)
    path.write_bytes(data)
    response = client.get("/pathsend", params={"path": str(path)})
    assert response.status_code == 200 and response.content == data


# ------------------------------------------------------------------ disconnects, concurrency


def test_disconnect_reaches_the_app(server: Server) -> None:
    tag = f"t{time.monotonic_ns()}"
    sock = socket.create_connection(server.host_port, timeout=10)
    sock.sendall(f"GET /wait-disconnect?tag={tag} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    server.wait_recorded("arrivals", tag)  # the app is now waiting in receive()
    sock.close()
    server.wait_recorded("disconnects", tag)


def test_200_concurrent_slow_requests(server: Server) -> None:
    async def go() -> list[int]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as c:
            responses = await asyncio.gather(*(c.get("/slow?s=0.5") for _ in range(200)))
        return [r.status_code for r in responses]

    start = time.monotonic()
    statuses = asyncio.run(go())
    elapsed = time.monotonic() - start
    assert statuses == [200] * 200
    # Concurrent, not one after another (that would take 100 s); the bound leaves room for a loaded
    # machine and for the adaptive limit's ramp from its start value (appserver/limiter.py).
    assert elapsed < 20, elapsed


# ------------------------------------------------------------------ app errors


def test_exception_before_start_is_500(client: httpx.Client) -> None:
    response = client.get("/crash-before-start")
    assert response.status_code == 500


def test_returning_without_response_is_500(client: httpx.Client) -> None:
    assert client.get("/no-response").status_code == 500


def test_exception_after_start_aborts_the_connection(server: Server) -> None:
    response = raw_exchange(server, b"GET /crash-mid-body HTTP/1.1\r\nHost: t\r\n\r\n", timeout_s=5)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"partial" in body
    assert not body.endswith(b"0\r\n\r\n")  # never a clean end of a chunked body


def test_server_still_serves_after_errors(client: httpx.Client) -> None:
    assert client.get("/state").json() == {"greeting": "hello from lifespan"}
