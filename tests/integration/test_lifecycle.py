"""Process lifecycle: lifespan, startup failures, bad app strings, graceful stop, no orphans."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.processes import Proc, zasgi

from .conftest import start_run, start_split, stop

pytestmark = pytest.mark.integration


def _wait_gone(pids: list[int], timeout_s: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.05)
    return alive


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_gracefully_with_lifespan_shutdown_and_no_orphans(tmp_path: Path, signum: int) -> None:
    server = start_run(tmp_path, workers=2)
    proc = server.procs[0]
    try:
        children = [p.pid for p in proc.descendants()]
        assert len(children) >= 3  # front end + 2 workers
        lifespan = (server.probe_dir / "lifespan").read_text().split("\n")
        assert sum(line.startswith("startup") for line in lifespan) == 2
        assert httpx.get(server.url + "/state").json() == {"greeting": "hello from lifespan"}
        proc.signal(signum)
        assert proc.wait_exit(30) == 0
        assert _wait_gone(children) == []
        lifespan = (server.probe_dir / "lifespan").read_text()
        assert lifespan.count("shutdown") == 2
    finally:
        stop(server)


def test_in_flight_request_finishes_during_graceful_stop(tmp_path: Path) -> None:
    server = start_run(tmp_path, workers=1)
    proc = server.procs[0]
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            import threading

            result: dict[str, object] = {}
            thread = threading.Thread(target=lambda: result.setdefault("r", client.get("/slow?s=1.5&tag=inflight")))
            thread.start()
            server.wait_recorded("arrivals", "inflight")
            proc.signal(signal.SIGTERM)
            thread.join(20)
        response = result["r"]
        assert isinstance(response, httpx.Response) and response.status_code == 200
        assert response.text == "slept"
        assert proc.wait_exit(30) == 0
    finally:
        stop(server)


def test_killed_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    server = start_run(tmp_path, workers=2)
    proc = server.procs[0]
    try:
        children = [p.pid for p in proc.descendants()]
        proc.signal(signal.SIGKILL)
        assert _wait_gone(children, 40) == [], "children outlived a killed supervisor"
    finally:
        stop(server)


def test_lifespan_startup_failure_exits_4_with_the_apps_message(tmp_path: Path) -> None:
    proc = Proc("run", zasgi("run", "tests.apps.probe:app", "--port", "0"), tmp_path, {"PROBE_LIFESPAN_FAIL": "1"})
    try:
        assert proc.wait_exit(60) == 4
        assert "database unreachable (probe)" in proc.log()
        assert "Traceback" not in proc.log()
    finally:
        proc.kill_tree()


def test_split_appserver_lifespan_failure_exits_4(tmp_path: Path) -> None:
    proc = Proc("appserver", zasgi("appserver", "tests.apps.probe:app", "--connect", "tcp://127.0.0.1:1"),
                tmp_path, {"PROBE_LIFESPAN_FAIL": "1"})  # fmt: skip
    try:
        assert proc.wait_exit(60) == 4
        assert "database unreachable (probe)" in proc.log()
    finally:
        proc.kill_tree()


@pytest.mark.parametrize(
    ("app", "code", "message"),
    [
        ("nosuchmodule:app", 4, "nosuchmodule"),
        ("tests.apps.probe:nosuchattr", 4, "nosuchattr"),
        ("tests.apps.probe:CHUNK", 4, "not callable"),
        ("no-colon", 2, "module:attribute"),
    ],
)
def test_bad_app_string_is_one_clear_line(tmp_path: Path, app: str, code: int, message: str) -> None:
    proc = Proc("run", zasgi("run", app, "--port", "0"), tmp_path)
    try:
        assert proc.wait_exit(60) == code
        log = proc.log()
        assert message in log
        assert "Traceback" not in log
        lines = [line for line in log.splitlines() if message in line]
        assert len(lines) >= 1
    finally:
        proc.kill_tree()


def test_bad_cli_option_is_a_usage_error(tmp_path: Path) -> None:
    proc = Proc("run", zasgi("run", "tests.apps.probe:app", "--workers", "zero"), tmp_path)
    try:
        assert proc.wait_exit(30) == 2
        assert "Traceback" not in proc.log()
    finally:
        proc.kill_tree()


def test_options_from_environment(tmp_path: Path) -> None:
    env = {"ZASGI_WORKERS": "1", "ZASGI_PORT": "0", "ZASGI_ROOT_PATH": "/mount", "ZASGI_APP": "tests.apps.probe:app"}
    proc = Proc("run", [sys.executable, "-m", "appserver.cli", "run"], tmp_path, env)
    try:
        url = proc.wait_for(r"zasgi running on (http://\S+) \(1 worker\)", 60).group(1)
        scope = httpx.get(url + "/scope").json()
        assert scope["root_path"] == "/mount"
    finally:
        proc.kill_tree()


def test_split_survives_and_serves_with_two_appservers(tmp_path: Path) -> None:
    server = start_split(tmp_path, appservers=2)
    try:
        pids = {httpx.get(server.url + "/scope").json()["pid"] for _ in range(30)}
        assert len(pids) == 2, "requests should be balanced over both app servers"
    finally:
        stop(server)
