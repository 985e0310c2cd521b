"""docker-compose.yml, checked without a Docker engine: Debian's docker-compose validates
it against the compose spec, and every setting is parsed as the two CLIs would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.processes import Proc, free_tcp_port, zasgi

from .roles import REPO, SUPERVISOR_MARGIN_S, check_env, duration_s, tcp_host_port

COMPOSE_FILE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_docker_compose_accepts_it(tmp_path: Any) -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose; .ci/run installs it)")
    result = subprocess.run(
        [exe, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_one_image_for_both_roles(services: dict[str, Any]) -> None:
    assert set(services) == {"frontend", "appserver"}
    images = {s["image"] for s in services.values()}
    builds = {(s["build"]["context"], s["build"]["dockerfile"]) for s in services.values()}
    assert len(images) == 1 and builds == {(".", "deploy/Dockerfile")}
    assert (REPO / "deploy" / "Dockerfile").is_file()


@pytest.mark.parametrize("role", ["frontend", "appserver"])
def test_configured_by_zasgi_environment_only(services: dict[str, Any], role: str) -> None:
    service = services[role]
    assert service["command"] == [role]  # the image's entrypoint is `zasgi`; no flags
    assert "entrypoint" not in service and "env_file" not in service
    check_env(role, service["environment"])


def test_appserver_scales_and_finds_every_front_end_by_name(services: dict[str, Any]) -> None:
    app = services["appserver"]
    for key in ("ports", "container_name", "hostname"):  # any of these stops --scale
        assert key not in app, key
    # started, not healthy: the front end is healthy only once a worker joined it
    assert app["depends_on"] == {"frontend": {"condition": "service_started"}}
    config = check_env("appserver", app["environment"])
    frontend = check_env("frontend", services["frontend"]["environment"])
    (connect,) = config.connect
    assert tcp_host_port(connect) == ("frontend", tcp_host_port(frontend.backend.endpoint)[1])
    assert config.app == "examples.hello:app" and (REPO / "examples" / "hello.py").is_file()


def test_frontend_publishes_http_not_the_backend_nor_admin(services: dict[str, Any]) -> None:
    frontend = services["frontend"]
    config = check_env("frontend", frontend["environment"])
    published = [str(p).rsplit(":", 1)[-1] for p in frontend["ports"]]
    assert published == [str(config.port)]
    assert config.host == "0.0.0.0"
    assert config.admin is not None and config.admin.host == "127.0.0.1"  # inside the container only
    assert config.admin.required  # a busy admin port fails the start, not the healthcheck


def frontend_healthcheck(services: dict[str, Any]) -> list[str]:
    """The front end's healthcheck argv, checked to ask its own admin endpoint's /readyz."""
    admin = check_env("frontend", services["frontend"]["environment"]).admin
    test = services["frontend"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]  # no shell, no curl in the slim image
    assert f"'http://127.0.0.1:{admin.port}/readyz'" in test[-1]
    return test[1:]


def test_healthchecks(services: dict[str, Any]) -> None:
    frontend_healthcheck(services)
    probe = ["CMD", "python", "-m", "appserver.discovery", "--check"]
    assert services["appserver"]["healthcheck"]["test"] == probe
    for service in services.values():
        assert duration_s(service["healthcheck"]["timeout"]) < duration_s(service["healthcheck"]["interval"])


def test_stop_grace_period_covers_the_drain(services: dict[str, Any]) -> None:
    app = check_env("appserver", services["appserver"]["environment"])
    grace = duration_s(services["appserver"]["stop_grace_period"])
    assert app.graceful_timeout_s + SUPERVISOR_MARGIN_S < grace <= app.graceful_timeout_s + 30
    frontend = check_env("frontend", services["frontend"]["environment"])
    grace = duration_s(services["frontend"]["stop_grace_period"])
    assert frontend.shutdown_timeout_s < grace <= frontend.shutdown_timeout_s + 30


def test_frontend_healthcheck_follows_readyz(services: dict[str, Any], tmp_path: Path) -> None:
    """The healthcheck command itself, against a real front end: unhealthy until a worker joins."""
    argv = frontend_healthcheck(services)
    backend = f"tcp://127.0.0.1:{free_tcp_port()}"
    procs = [Proc("frontend", zasgi("frontend", "--port", "0", "--backend", backend), tmp_path)]
    try:
        admin = procs[0].wait_for(r"zasgi-ready frontend \S+ backend=\S+ admin=(http://\S+)", 60).group(1)
        check = [sys.executable, *argv[1:-1], argv[-1].replace("http://127.0.0.1:9000", admin)]
        assert check[-1] != argv[-1]
        run = lambda: subprocess.run(check, capture_output=True, text=True, timeout=30)  # noqa: E731
        unhealthy = run()
        assert unhealthy.returncode == 1 and "503" in unhealthy.stderr  # no worker yet
        app = zasgi("appserver", "examples.hello:app", "--connect", backend)
        procs.append(Proc("appserver", app, tmp_path))
        procs[1].wait_for(r"zasgi appserver ready", 60)
        deadline = time.monotonic() + 30
        while (result := run()).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert result.returncode == 0, result.stderr
    finally:
        for proc in procs:
            proc.kill_tree()
