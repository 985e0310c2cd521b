"""HTTP/2 through ``zasgi run`` with real clients: curl (TLS + ALPN, and h2c prior knowledge),
httpx with http2=True, h2load. Certificates from trustme; curl and h2load skip with a reason when
missing (Debian: curl, nghttp2-client)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.apps.probe import pattern
from tests.helpers.processes import Proc, zasgi

from .conftest import PROBE, Server, start_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@pytest.fixture(scope="module")
def h2c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_run(tmp_path_factory.mktemp("h2c"), workers=2)
    try:
        yield server
    finally:
        for proc in server.procs:
            proc.kill_tree()


@pytest.fixture(scope="module")
def h2tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("h2tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    (tmp / "probe").mkdir()
    env = {"PROBE_DIR": str(tmp / "probe"), "ZASGI_SSL_CERTFILE": str(tmp / "server.pem")}
    proc = Proc("run", zasgi("run", PROBE, "--port", "0", "--workers", "1"), tmp, env)
    try:
        url = proc.wait_for(r"zasgi running on (https://\S+)", 60).group(1)
        yield url, tmp / "ca.pem"
    finally:
        proc.kill_tree()


def curl(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run([CURL, "-sS", "--max-time", str(timeout_s), *args], capture_output=True,
                          timeout=timeout_s + 10, check=True)  # fmt: skip


@needs_curl
def test_curl_http2_over_tls_negotiates_h2_by_alpn(h2tls: tuple[str, Path]) -> None:
    url, ca = h2tls
    out = curl("--http2", "--cacert", str(ca), "-w", "\n%{http_version}", url + "/scope")
    body, _, version = out.stdout.rpartition(b"\n")
    assert version == b"2"
    scope = json.loads(body)
    assert (scope["http_version"], scope["scheme"]) == ("2", "https")
    assert scope["extensions"]["tls"]["tls_version"] in (0x0303, 0x0304)


@needs_curl
def test_curl_http11_on_the_same_tls_port(h2tls: tuple[str, Path]) -> None:
    url, ca = h2tls
    out = curl("--http1.1", "--cacert", str(ca), "-w", "\n%{http_version}", url + "/scope")
    body, _, version = out.stdout.rpartition(b"\n")
    assert version == b"1.1" and json.loads(body)["http_version"] == "1.1"


@needs_curl
def test_curl_prior_knowledge_h2c(h2c: Server, tmp_path: Path) -> None:
    body = pattern(300_000)
    (tmp_path / "body").write_bytes(body)
    out = curl("--http2-prior-knowledge", "--data-binary", f"@{tmp_path / 'body'}", h2c.url + "/digest")
    assert json.loads(out.stdout) == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    out = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", h2c.url + "/big?size=3000000")
    data, _, version = out.stdout.rpartition(b"\n")
    assert version == b"2" and data == pattern(3_000_000)


@needs_curl
def test_curl_sees_trailers_and_pathsend(h2c: Server, tmp_path: Path) -> None:
    out = curl("--http2-prior-knowledge", "-i", h2c.url + "/trailers")
    assert out.stdout.endswith(b"\r\n\r\nbodyx-digest: abc\r\n")  # (curl -i prints trailers after the body)
    data = pattern(200_000)
    (tmp_path / "file").write_bytes(data)
    out = curl("--http2-prior-knowledge", h2c.url + f"/pathsend?path={tmp_path / 'file'}")
    assert out.stdout == data


async def test_httpx_many_concurrent_streams_on_one_connection(h2c: Server) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=60) as client:
        responses = await asyncio.gather(*(client.get(h2c.url + f"/scope?i={i}") for i in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["http_version"] for r in responses} == {"2"}
    assert sorted(r.json()["query_string"] for r in responses) == sorted(f"i={i}" for i in range(200))


async def test_httpx_streamed_response_and_client_cancel(h2c: Server) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=60) as client:
        async with client.stream("GET", h2c.url + "/stream?n=5&delay=0.05") as resp:
            lines = [line async for line in resp.aiter_lines()]
        assert lines[-1] == "end" and len(lines) == 6
        # A stream the client abandons half way (RST_STREAM): the connection goes on serving.
        async with client.stream("GET", h2c.url + "/stream?n=100&delay=0.05") as resp:
            async for _ in resp.aiter_bytes():
                break
        again = await client.get(h2c.url + "/scope")
        assert again.json()["http_version"] == "2"


@pytest.mark.skipif(H2LOAD is None, reason="h2load is not installed (Debian: nghttp2-client)")
def test_h2load_smoke(h2c: Server) -> None:
    assert H2LOAD is not None
    out = subprocess.run([H2LOAD, "-n", "2000", "-c", "4", "-m", "16", h2c.url + "/scope"],
                         capture_output=True, text=True, timeout=90)  # fmt: skip
    assert "2000 succeeded" in out.stdout, out.stdout + out.stderr


async def test_rolling_restart_loses_no_h2_request(tmp_path: Path) -> None:
    """SIGHUP rolls both workers while HTTP/2 clients keep requesting: every request answered."""
    import signal
    import time

    server = start_run(tmp_path, workers=2)
    run = server.procs[0]
    try:
        before = run.worker_pids()
        assert len(before) == 2
        statuses: list[int] = []
        failures: list[str] = []
        stop = asyncio.Event()

        async def client_loop(i: int) -> None:
            async with httpx.AsyncClient(http1=False, http2=True, timeout=60) as client:
                n = 0
                while not stop.is_set():
                    streams = [client.get(server.url + f"/slow?s=0.05&c={i}-{n}-{j}") for j in range(8)]
                    n += 1
                    for result in await asyncio.gather(*streams, return_exceptions=True):
                        if isinstance(result, BaseException):
                            failures.append(repr(result))
                        else:
                            statuses.append(result.status_code)

        clients = [asyncio.ensure_future(client_loop(i)) for i in range(4)]
        await asyncio.sleep(1.0)
        run.signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until both workers are replacements
            await asyncio.sleep(0.5)
            now = run.worker_pids()
            if len(now) == 2 and not now & before:
                break
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 60)
        assert not (run.worker_pids() & before), server.logs()
        assert not failures, failures[:5]
        assert statuses and set(statuses) == {200}, (len(statuses), set(statuses))
    finally:
        for proc in server.procs:
            proc.kill_tree()
