"""A zasgi cluster on network-namespace hosts, run like the compose services.

Front ends and app servers are started with the docker-compose.yml services'
``command`` and ``environment`` (``zasgi frontend`` / ``zasgi appserver``,
ZASGI_* only). Overrides, each for a stated reason: the probe app (its answers
carry the worker's pid), one worker per app server (2 cores), and a 1 s resolve
interval (so joining and forgetting front ends fits the time budget). App
servers find the front ends through the compose name ``frontend``, which each
app-server host's hosts file maps to every front-end address.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.helpers.processes import REPO, Proc, zasgi

from . import netns

APP_OVERRIDES = {
    "ZASGI_APP": "tests.apps.probe:app",  # answers with the worker's pid
    "ZASGI_WORKERS": "1",
    "ZASGI_RESOLVE_INTERVAL": "1",
}
READY_FRONTEND = r"zasgi-ready frontend"
READY_APPSERVER = r"zasgi appserver ready"
START_TIMEOUT_S = 60.0


def compose_service(name: str) -> tuple[list[str], dict[str, str]]:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][name]
    return list(service["command"]), {k: str(v) for k, v in service["environment"].items()}


@dataclass
class AppServer:
    name: str
    host: str
    proc: Proc

    @property
    def worker_pids(self) -> set[int]:
        """The pool's worker processes (spawned children; not the resource tracker)."""
        pids = set()
        for child in self.proc.descendants():
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    pids.add(child.pid)
            except psutil.Error:
                continue
        return pids


@dataclass
class Cluster:
    log_dir: Path
    net: netns.Network = field(default_factory=netns.Network)
    frontends: dict[str, Proc] = field(default_factory=dict)
    appservers: dict[str, AppServer] = field(default_factory=dict)
    app_hosts: set[str] = field(default_factory=set)
    retired: list[Proc] = field(default_factory=list)  # exited or stopped; closed at teardown

    def __post_init__(self) -> None:
        self.fe_command, self.fe_env = compose_service("frontend")
        self.app_command, app_env = compose_service("appserver")
        self.app_env = {**app_env, **APP_OVERRIDES}
        self.http_port = int(self.fe_env["ZASGI_PORT"])
        self._starts = 0

    # ------------------------------------------------------------ topology

    def url(self, frontend: str) -> str:
        return f"http://{self.net.hosts[frontend]}:{self.http_port}"

    def backend(self, frontend: str) -> str:
        port = self.fe_env["ZASGI_BACKEND"].rsplit(":", 1)[1]
        return f"tcp://{self.net.hosts[frontend]}:{port}"

    def worker_pids(self) -> set[int]:
        return {pid for app in self.appservers.values() for pid in app.worker_pids}

    def resolve_frontend_to(self, frontends: list[str]) -> None:
        """What the name `frontend` resolves to on every app-server host."""
        addresses = [self.net.hosts[fe] for fe in frontends]
        for host in self.app_hosts:
            self.net.write_hosts(host, {"frontend": addresses})

    # ------------------------------------------------------------ processes

    def start_frontends(self, hosts: list[str]) -> None:
        procs = {}
        for host in hosts:
            if host not in self.net.hosts:
                self.net.add_host(host)
            self._starts += 1
            if host in self.frontends:
                self.retired.append(self.frontends.pop(host))
            argv = self.net.exec_argv(host, zasgi(*self.fe_command))
            procs[host] = Proc(f"{host}-{self._starts}", argv, self.log_dir, self.fe_env)
        self.frontends.update(procs)
        for proc in procs.values():
            proc.wait_for(READY_FRONTEND, START_TIMEOUT_S)

    def add_app_hosts(self, hosts: list[str], frontends: list[str]) -> None:
        for host in hosts:
            self.net.add_host(host)
            self.app_hosts.add(host)
        self.resolve_frontend_to(frontends)

    def start_appservers(self, placed: list[tuple[str, str]]) -> list[AppServer]:
        """Start app servers (name, host) at once; return them once all are ready."""
        started = []
        for name, host in placed:
            argv = self.net.exec_argv(host, zasgi(*self.app_command))
            app = AppServer(name, host, Proc(name, argv, self.log_dir, self.app_env))
            self.appservers[name] = app
            started.append(app)
        for app in started:
            app.proc.wait_for(READY_APPSERVER, START_TIMEOUT_S)
        return started

    def remove_appserver(self, name: str) -> AppServer:
        app = self.appservers.pop(name)
        self.retired.append(app.proc)
        return app

    def logs(self) -> str:
        procs = [*self.frontends.values(), *(a.proc for a in self.appservers.values())]
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in procs)

    def close(self) -> None:
        procs = [*self.frontends.values(), *(a.proc for a in self.appservers.values()), *self.retired]
        for proc in procs:  # all at once: they drain in parallel
            proc.signal(signal.SIGTERM)
        for proc in procs:
            proc.kill_tree(grace_s=5)
        self.net.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        netns.probe()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"multi-host cluster test skipped: {exc}")
    netns.sweep_stale()
    made = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        made.start_frontends(["fe1", "fe2"])
        made.add_app_hosts(["as1", "as2", "as3"], ["fe1", "fe2"])
        made.start_appservers([("as1", "as1"), ("as2", "as2"), ("as3", "as3")])
        yield made
    finally:
        made.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: Any, call: Any) -> None:
    """On a failure, attach the cluster's process logs to the report."""
    if call.excinfo is not None and "cluster" in getattr(item, "funcargs", {}):
        item.add_report_section(call.when, "cluster logs", item.funcargs["cluster"].logs())
