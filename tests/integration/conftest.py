"""Servers for the integration tests: ``zasgi run`` and the split over TCP.

Module-scoped: one server per mode serves a module's tests, and is killed
(whole process tree, by PID) at teardown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.processes import Proc, free_tcp_port, zasgi

PROBE = "tests.apps.probe:app"
READY_RUN = r"zasgi running on (http://\S+)"
READY_FRONTEND = r"zasgi-ready frontend (http://\S+)"
READY_APPSERVER = r"zasgi appserver ready"


@dataclass
class Server:
    url: str
    probe_dir: Path
    procs: list[Proc] = field(default_factory=list)

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def wait_recorded(self, name: str, tag: str, timeout_s: float = 15.0) -> None:
        """Poll the probe's record file ``name`` until ``tag`` appears in it."""
        path = self.probe_dir / name
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists() and tag in path.read_text().splitlines():
                return
            time.sleep(0.02)
        raise AssertionError(f"probe never recorded {tag!r} in {name}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.procs)


def start_run(
    tmp: Path, *extra: str, workers: int = 2, env: dict[str, str] | None = None, app: str = PROBE
) -> Server:
    """``zasgi run`` with one front end unless ``extra`` names ``--frontends``: these tests read
    one front end's log, metrics and admin endpoint (test_fleet.py covers several, and auto),
    whatever the default is."""
    probe_dir = tmp / "probe"
    probe_dir.mkdir(exist_ok=True)
    env = {"PROBE_DIR": str(probe_dir), **(env or {})}
    fleet = () if "--frontends" in extra else ("--frontends", "1")
    proc = Proc("run", zasgi("run", app, "--port", "0", "--workers", str(workers), *fleet, *extra), tmp, env)
    server = Server("", probe_dir, [proc])
    try:
        server.url = proc.wait_for(READY_RUN, 60).group(1)
    except BaseException:
        proc.kill_tree()
        raise
    return server


def start_split(
    tmp: Path, *, appservers: int = 2, env: dict[str, str] | None = None, app: str = PROBE
) -> Server:
    probe_dir = tmp / "probe"
    probe_dir.mkdir(exist_ok=True)
    env = {"PROBE_DIR": str(probe_dir), **(env or {})}
    backend = f"tcp://127.0.0.1:{free_tcp_port()}"
    server = Server("", probe_dir)
    try:
        fe = Proc("frontend", zasgi("frontend", "--port", "0", "--backend", backend), tmp, env)
        server.procs.append(fe)
        server.url = fe.wait_for(READY_FRONTEND, 60).group(1)
        for i in range(appservers):
            proc = Proc(f"appserver{i}", zasgi("appserver", app, "--connect", backend), tmp, env)
            server.procs.append(proc)
        for proc in server.procs[1:]:
            proc.wait_for(READY_APPSERVER, 60)
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: Server) -> None:
    # App servers first would make in-flight requests fail; the front end first is the graceful order.
    for proc in server.procs:
        proc.kill_tree()


@pytest.fixture(scope="module", params=["run", "split"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    srv = start_run(tmp) if request.param == "run" else start_split(tmp)
    yield srv
    stop(srv)
