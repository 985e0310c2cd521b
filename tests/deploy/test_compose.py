"""docker-compose.yml, checked without a Docker engine: Debian's docker-compose validates
it against the compose spec, and every setting is parsed as the two CLIs would."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

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
    assert app["depends_on"] == {"frontend": {"condition": "service_healthy"}}
    config = check_env("appserver", app["environment"])
    frontend = check_env("frontend", services["frontend"]["environment"])
    (connect,) = config.connect
    assert tcp_host_port(connect) == ("frontend", tcp_host_port(frontend.backend.endpoint)[1])
    assert config.app == "examples.hello:app" and (REPO / "examples" / "hello.py").is_file()


def test_frontend_publishes_http_not_the_backend(services: dict[str, Any]) -> None:
    frontend = services["frontend"]
    config = check_env("frontend", frontend["environment"])
    published = [str(p).rsplit(":", 1)[-1] for p in frontend["ports"]]
    assert published == [str(config.port)]
    assert config.host == "0.0.0.0"


def test_healthchecks(services: dict[str, Any]) -> None:
    port = check_env("frontend", services["frontend"]["environment"]).port
    frontend_check = services["frontend"]["healthcheck"]["test"]
    assert frontend_check[0] == "CMD" and f", {port})" in frontend_check[-1]
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
