"""Operating it, with real processes: admin endpoint, metrics, `zasgi status`, access log, request ids."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import Proc, free_tcp_port, zasgi
from tests.integration.conftest import READY_APPSERVER, READY_FRONTEND, Server, start_run, stop

pytestmark = pytest.mark.integration

ADMIN_IN_BANNER = r"\n  admin +(http://\S+)"
ADMIN_IN_READY_LINE = r"zasgi-ready frontend \S+ backend=\S+ admin=(http://\S+)"


async def log_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that logs through ``logging`` inside each request (the worker tags it with the request id)."""
    if scope["type"] != "http":
        return
    logging.getLogger("test_admin.app").warning("app handling %s", scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"logged"})


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(zasgi("status", *args), capture_output=True, text=True, timeout=60)


def _wait_until(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    server = start_run(tmp_path_factory.mktemp("admin"), workers=2)
    try:
        admin = server.procs[0].wait_for(ADMIN_IN_BANNER, 10).group(1)
        yield server, admin
    finally:
        stop(server)


def test_metrics_move_with_traffic(run: tuple[Server, str]) -> None:
    server, admin = run
    n = 20
    with httpx.Client(timeout=30) as client:
        assert client.get(admin + "/readyz").status_code == 200
        before = _samples(client.get(admin + "/metrics").text)
        for _ in range(n):
            assert client.post(server.url + "/echo", content=b"x" * 100).status_code == 200
        after = _samples(client.get(admin + "/metrics").text)
    key = 'zasgi_http_requests_total{status="200"}'
    assert after[key] - before.get(key, 0) == n
    assert (
        after["zasgi_http_request_duration_seconds_count"]
        - before["zasgi_http_request_duration_seconds_count"]
        == n
    )
    assert after["zasgi_http_received_bytes_total"] - before["zasgi_http_received_bytes_total"] == 100 * n
    assert after['zasgi_workers{state="ready"}'] == 2
    assert after["zasgi_worker_joins_total"] == 2 and after["zasgi_worker_losses_total"] == 0


def test_zasgi_status_lists_the_workers(run: tuple[Server, str]) -> None:
    server, admin = run
    pids = {p.pid for p in server.procs[0].descendants() if "frontend" not in " ".join(p.cmdline())}
    done = _status("--admin", admin)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.match(
        r"front end \S+ http://127\.0\.0\.1:\d+ \(admin http://\S+\): 2 workers, 2 ready", lines[0]
    )
    assert lines[1].split() == [
        "WORKER", "HOST", "PID", "STATE", "IN-FLIGHT", "LIMIT", "CAPACITY", "WEBSOCKETS", "UPTIME", "SERVED"
    ]  # fmt: skip
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 2 and all(row[3] == "ready" for row in rows)
    assert all(8 <= int(row[5]) <= int(row[6]) == 4096 for row in rows)  # LIMIT: floor..capacity
    assert {int(row[2]) for row in rows} <= pids
    data = json.loads(_status("--admin", admin, "--json").stdout)
    assert len(data[0]["workers"]) == 2


def test_zasgi_status_unreachable_is_one_line_and_nonzero() -> None:
    done = _status("--admin", f"127.0.0.1:{free_tcp_port()}", "--timeout", "5")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot read" in done.stderr
    assert "Traceback" not in done.stderr


def test_access_log_combined(run: tuple[Server, str]) -> None:
    server, _ = run
    with httpx.Client(timeout=30) as client:
        resp = client.get(
            server.url + "/scope?q=1", headers={"X-Request-ID": "combined-1", "User-Agent": "t/1"}
        )
    assert resp.headers["x-request-id"] == "combined-1"
    line = server.procs[0].wait_for(r'.*"GET /scope\?q=1 HTTP/1.1" 200 .*rid=combined-1.*', 10).group(0)
    assert re.search(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /scope\?q=1 HTTP/1.1" 200 \d+ "-" "t/1" ', line)
    assert re.search(r" worker=\S+-\d+-[0-9a-f]+ dur=\d+\.\d{6}$", line)


def test_split_readyz_json_access_log_and_request_id_on_the_app_server(tmp_path: Path) -> None:
    """--log-format json on a front end alone (/readyz 503), then an app server (200) whose app logs."""
    backend = f"tcp://127.0.0.1:{free_tcp_port()}"
    fe = Proc(
        "frontend", zasgi("frontend", "--port", "0", "--backend", backend, "--log-format", "json"), tmp_path
    )
    procs = [fe]
    try:
        url = fe.wait_for(READY_FRONTEND, 60).group(1)
        admin = fe.wait_for(ADMIN_IN_READY_LINE, 5).group(1)
        with httpx.Client(timeout=30) as client:
            assert client.get(admin + "/healthz").status_code == 200
            assert client.get(admin + "/readyz").status_code == 503
            app = Proc("appserver", zasgi("appserver", f"{__name__}:log_app", "--connect", backend), tmp_path)
            procs.append(app)
            app.wait_for(READY_APPSERVER, 60)
            assert _wait_until(lambda: client.get(admin + "/readyz").status_code == 200)
            resp = client.get(url + "/hello", headers={"X-Request-ID": "split-req-42"})
            assert resp.status_code == 200 and resp.headers["x-request-id"] == "split-req-42"
            made = client.get(url + "/second").headers["x-request-id"]
        app.wait_for(r"\[split-req-42\] app handling /hello", 10)
        app.wait_for(rf"\[{made}\] app handling /second", 10)
        entry = json.loads(fe.wait_for(r'\{[^\n]*"request_id":"split-req-42"[^\n]*\}', 10).group(0))
        assert entry["path"] == "/hello" and entry["status"] == 200 and entry["bytes_out"] > 0
        assert entry["worker"] and entry["duration_s"] >= 0 and entry["method"] == "GET"
        other = [json.loads(line) for line in fe.log().splitlines() if line.startswith('{"time"')]
        assert any(e.get("logger") == "frontend.dispatch" and "joined" in e["message"] for e in other)
    finally:
        for proc in procs:
            proc.kill_tree()
