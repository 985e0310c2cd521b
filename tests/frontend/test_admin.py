"""The admin endpoint in process: health, readiness, metrics that move with traffic, /workers, request ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from frontend import config as cfg
from tests.frontend.conftest import Frontend
from wire import events as ev

pytestmark = pytest.mark.timeout(30)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@contextlib.asynccontextmanager
async def _answering(worker: Any, status: int = 200, body: bytes = b"hello") -> AsyncIterator[list[Any]]:
    """A task that answers every request ``worker`` gets; yields the REQUESTs seen."""
    seen: list[Any] = []

    async def loop() -> None:
        while True:
            req = await worker.request(timeout=30)
            seen.append(req)
            worker.respond(req.stream_id, status, ((b"content-type", b"text/plain"),), body)

    task = asyncio.ensure_future(loop())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def test_healthz_and_readyz_follow_the_workers(start_admin: Any, worker_for: Any) -> None:
    fe, admin = await start_admin()
    async with httpx.AsyncClient(base_url=admin) as client:
        assert (await client.get("/healthz")).status_code == 200
        resp = await client.get("/readyz")
        assert resp.status_code == 503 and "no ready worker" in resp.text
        await worker_for(fe)
        resp = await client.get("/readyz")
        assert resp.status_code == 200 and "ready: 1 worker" in resp.text


async def test_metrics_move_with_traffic(start_admin: Any, worker_for: Any) -> None:
    fe, admin = await start_admin()
    w = await worker_for(fe)
    n = 7
    async with httpx.AsyncClient(base_url=admin) as client:
        before = _samples((await client.get("/metrics")).text)
        async with _answering(w), httpx.AsyncClient() as http:
            for _ in range(n):
                resp = await http.post(fe.url + "/x", content=b"12345")
                assert resp.status_code == 200 and resp.text == "hello"
        resp = await client.get("/metrics")
        assert resp.headers["content-type"].startswith("text/plain")
        after = _samples(resp.text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("zasgi_http_requests_total", status="200") == n
    assert delta("zasgi_http_request_duration_seconds_count") == n
    assert delta("zasgi_queue_wait_seconds_count") == n
    assert delta("zasgi_http_received_bytes_total") == 5 * n
    assert delta("zasgi_http_sent_bytes_total") > 5 * n  # heads included
    assert after[("zasgi_workers", (("state", "ready"),))] == 1
    assert after[("zasgi_worker_joins_total", ())] == 1
    assert after[("zasgi_http_capacity", ())] == w.capacity
    assert after[("zasgi_http_requests_in_flight", ())] == 0
    assert after[("zasgi_queue_depth", (("kind", "http"),))] == 0


async def test_no_worker_503_counts_its_wait_and_a_lost_worker_counts(
    start_admin: Any, worker_for: Any
) -> None:
    fe, admin = await start_admin(queue=cfg.Queue(size=10, timeout_s=0.2))
    async with httpx.AsyncClient() as http:
        resp = await http.get(fe.url + "/nobody")
        assert resp.status_code == 503 and resp.headers["x-request-id"]
        w = await worker_for(fe)
        w.close()  # kill: the front end notices the disconnect (or the silence)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            text = (await http.get(admin + "/metrics")).text
            if _samples(text)[("zasgi_worker_losses_total", ())] == 1:
                break
            await asyncio.sleep(0.05)
    samples = _samples(text)
    assert samples[("zasgi_http_requests_total", (("status", "503"),))] == 1
    assert samples[("zasgi_queue_wait_seconds_bucket", (("le", "0.1"),))] == 0  # it waited the timeout
    assert samples[("zasgi_queue_wait_seconds_count", ())] == 1
    assert samples[("zasgi_worker_joins_total", ())] == 1
    assert samples[("zasgi_worker_losses_total", ())] == 1
    assert samples[("zasgi_workers", (("state", "ready"),))] == 0


async def test_workers_json(start_admin: Any, worker_for: Any) -> None:
    fe, admin = await start_admin()
    w = await worker_for(fe, capacity=5)
    async with _answering(w), httpx.AsyncClient() as http:
        for _ in range(3):
            assert (await http.get(fe.url + "/")).status_code == 200
        data = (await http.get(admin + "/workers")).json()
    assert data["frontend"]["url"] == fe.url
    assert data["frontend"]["backend"] == fe.endpoint
    assert data["frontend"]["ready"] is True
    [worker] = data["workers"]
    assert worker["id"] == w.worker_id
    assert worker["state"] == "ready"
    assert (worker["capacity"], worker["in_flight"], worker["served"]) == (5, 0, 3)
    assert worker["uptime_s"] >= 0
    assert {"host", "pid", "ws_in_flight", "ws_capacity", "features"} <= set(worker)


async def test_request_id_kept_or_made_and_sent_back(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    async with _answering(w) as seen, httpx.AsyncClient() as http:
        given = await http.get(fe.url + "/", headers={"X-Request-ID": "trace-1.2:3"})
        made = await http.get(fe.url + "/")
        bad = await http.get(fe.url + "/", headers={"X-Request-ID": "no spaces allowed"})
    assert given.headers["x-request-id"] == "trace-1.2:3" == seen[0].ext["request_id"]
    assert made.headers["x-request-id"] == seen[1].ext["request_id"]
    assert len(made.headers["x-request-id"]) == 16 and int(made.headers["x-request-id"], 16) >= 0
    assert bad.headers["x-request-id"] == seen[2].ext["request_id"] != "no spaces allowed"


async def test_the_apps_own_request_id_header_wins(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    async with httpx.AsyncClient() as http:
        pending = asyncio.ensure_future(http.get(fe.url + "/"))
        req = await w.request()
        w.respond(req.stream_id, 200, ((b"X-Request-Id", b"from-app"),), b"")
        resp = await pending
    assert resp.headers.get_list("x-request-id") == ["from-app"]


async def test_readyz_503_once_shutdown_begins(start_admin: Any, worker_for: Any) -> None:
    fe, admin = await start_admin()
    await worker_for(fe)
    async with httpx.AsyncClient() as http:
        pending = asyncio.ensure_future(http.get(fe.url + "/slow"))  # keeps the drain going
        req = await fe.workers[0].request()
        fe.shutdown.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline:
            resp = await http.get(admin + "/readyz")
            if resp.status_code == 503:
                break
            await asyncio.sleep(0.02)
        assert resp.status_code == 503 and "shutting down" in resp.text
        fe.workers[0].respond(req.stream_id, 200, (), b"done")
        assert (await pending).status_code == 200


async def test_busy_admin_port(start_admin: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"admin endpoint 127.0.0.1:{port}"):
            await start_admin(admin=cfg.Admin(port=port))
        fe, admin = await start_admin(
            admin=cfg.Admin(port=port, required=False), queue=cfg.Queue(size=10, timeout_s=0.1)
        )  # a defaulted port: just off
        assert admin is None
        async with httpx.AsyncClient() as http:
            assert (await http.get(fe.url + "/")).status_code == 503  # serving all the same


async def test_websocket_sessions_closed_by_the_client_are_counted(start_admin: Any, worker_for: Any) -> None:
    """Issue 21: zasgi_websocket_sessions_total stayed 0 when clients closed their sessions."""
    import aiohttp

    from wire import events as ev

    from .ws_helpers import WS_FEATURES, connect

    fe, admin = await start_admin()
    w = await worker_for(fe, ws_capacity=4, features=WS_FEATURES)
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            ws, _conn = await connect(session, fe, w)
            await ws.close(code=1000)
            await w.expect(ev.WsClose)
    key = ("zasgi_websocket_sessions_total", ())
    async with httpx.AsyncClient() as http:
        for _ in range(100):  # counted as the server side of each session ends
            if _samples((await http.get(admin + "/metrics")).text).get(key) == 2:
                break
            await asyncio.sleep(0.05)
        assert _samples((await http.get(admin + "/metrics")).text).get(key) == 2


async def test_the_admin_fields_follow_the_http_ones(start_admin: Any, worker_for: Any) -> None:
    """Server, Date and --header as on the client-facing port; not aiohttp's Server field (Python and
    aiohttp versions)."""
    on = cfg.Headers(extra=(("X-Frame-Options", "DENY"),))
    off = cfg.Headers(server=False, date=False)
    for fields, server, date, frame in ((on, "zasgi", True, "DENY"), (off, None, False, None)):
        fe, admin = await start_admin(headers=fields)
        w = await worker_for(fe)
        async with httpx.AsyncClient() as http, _answering(w):
            for url in (admin + "/healthz", admin + "/metrics", admin + "/no-such-page", fe.url + "/"):
                headers = (await http.get(url)).headers
                seen = (headers.get("server"), "date" in headers, headers.get("x-frame-options"))
                assert seen == (server, date, frame), (url, headers)
        fe.shutdown.set()  # (one front end at a time: both load http1's module-wide fields)
        await asyncio.wait_for(fe.task, 10)


async def test_a_request_the_admin_parser_refuses_is_a_400_and_one_log_line(
    start_admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp answers it (its own fields, but Server: zasgi) and would log a traceback."""
    _, admin = await start_admin()
    host, port = admin.removeprefix("http://").rsplit(":", 1)
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer
    assert b"\r\nServer: zasgi\r\n" in answer and b"Python" not in answer
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert record.getMessage() == "admin endpoint: bad request from 127.0.0.1 (400 Invalid header token:)"


@pytest.fixture
def start_admin(start_frontend: Any) -> Any:
    """``await start_admin(**config_overrides)`` -> (Frontend, admin URL or None): start_frontend's,
    with the admin endpoint on a free port unless told otherwise."""

    async def start(**overrides: Any) -> tuple[Frontend, str | None]:
        overrides.setdefault("admin", cfg.Admin(port=0))
        fe = await start_frontend(**overrides)
        return fe, fe.admin

    return start


async def test_a_busy_worker_in_workers_json_and_metrics(start_admin: Any, worker_for: Any) -> None:
    """PULSE (Rule 9a): /workers shows the busy worker and what blocks it; the stall, once its loop
    runs again, lands in zasgi_worker_loop_blocked_seconds."""
    fe, admin = await start_admin()
    w = await worker_for(fe, features=("http", "pulse"))
    pulser = await worker_for(fe, hello=False)
    peer = f"{w.worker_id}-{os.getpid()}".encode()  # (ScriptedWorker's routing id)
    async with httpx.AsyncClient() as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            pulser.send(ev.Pulse(0, peer, 2500, 0, "r-9", "GET", "/report"))
            [worker] = (await http.get(admin + "/workers")).json()["workers"]
            if worker["state"] == "busy" or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert worker["state"] == "busy"
        assert worker["blocked_s"] >= 2.5 and worker["blocked_by"] == "r-9 GET /report"
        pulser.send(ev.Pulse(0, peer, 0, 3100, "", "", ""))
        while True:
            samples = _samples((await http.get(admin + "/metrics")).text)
            if samples.get(("zasgi_worker_loop_blocked_seconds_count", ())) or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        [worker] = (await http.get(admin + "/workers")).json()["workers"]
    assert samples[("zasgi_worker_loop_blocked_seconds_count", ())] == 1
    assert samples[("zasgi_worker_loop_blocked_seconds_bucket", (("le", "2.5"),))] == 0
    assert samples[("zasgi_worker_loop_blocked_seconds_bucket", (("le", "5.0"),))] == 1
    assert (worker["state"], worker["blocked_s"], worker["blocked_by"]) == ("ready", None, None)
