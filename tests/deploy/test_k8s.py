"""deploy/k8s/: valid against the Kubernetes schemas (offline, strict), with the probes,
drain and grace periods the app servers and front ends need."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from .roles import REPO, SUPERVISOR_MARGIN_S, check_env, tcp_host_port

K8S_VERSION = "1.30.0"
MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], Any]:
    found = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment)["env"]}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_schema_valid(path: Any) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_selectors_match_their_pods(objects: dict[tuple[str, str], Any]) -> None:
    deployments = [d for (kind, _), d in objects.items() if kind == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    frontend_labels = objects["Deployment", "zasgi-frontend"]["spec"]["template"]["metadata"]["labels"]
    for (kind, _), obj in objects.items():
        if kind == "Service":
            assert obj["spec"]["selector"].items() <= frontend_labels.items()
    assert len({container(d)["image"] for d in deployments}) == 1  # one image, both roles


@pytest.mark.parametrize("role", ["frontend", "appserver"])
def test_configured_by_zasgi_environment_only(objects: dict[tuple[str, str], Any], role: str) -> None:
    deployment = objects["Deployment", f"zasgi-{role}"]
    assert container(deployment)["args"] == [role] and "command" not in container(deployment)
    check_env(role, env_of(deployment))


def test_appserver_finds_front_ends_through_the_headless_service(objects: dict[tuple[str, str], Any]) -> None:
    headless = objects["Service", "zasgi-frontend-backend"]
    assert headless["spec"]["clusterIP"] == "None"
    (port,) = headless["spec"]["ports"]
    frontend = check_env("frontend", env_of(objects["Deployment", "zasgi-frontend"]))
    backend_port = tcp_host_port(frontend.backend.endpoint)[1]
    ports = container(objects["Deployment", "zasgi-frontend"])["ports"]
    named = {p["name"]: p["containerPort"] for p in ports}
    assert named[port["targetPort"]] == backend_port
    app = check_env("appserver", env_of(objects["Deployment", "zasgi-appserver"]))
    assert [tcp_host_port(e) for e in app.connect] == [("zasgi-frontend-backend", port["port"])]


def test_appserver_readiness_drain_and_grace(objects: dict[tuple[str, str], Any]) -> None:
    deployment = objects["Deployment", "zasgi-appserver"]
    spec, c = deployment["spec"]["template"]["spec"], container(deployment)
    assert c["readinessProbe"]["exec"]["command"] == ["python", "-m", "appserver.discovery", "--check"]
    assert "livenessProbe" not in c  # a front-end outage must not restart app servers
    pre_stop = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in pre_stop and "kill -0 1" in pre_stop  # drain, and wait for it
    app = check_env("appserver", env_of(deployment))
    grace = spec["terminationGracePeriodSeconds"]
    assert app.graceful_timeout_s + SUPERVISOR_MARGIN_S < grace <= app.graceful_timeout_s + 30


def test_frontend_probes_use_the_admin_endpoint(objects: dict[tuple[str, str], Any]) -> None:
    deployment = objects["Deployment", "zasgi-frontend"]
    c = container(deployment)
    config = check_env("frontend", env_of(deployment))
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named["http"] == config.port
    assert config.admin is not None and config.admin.required
    assert config.admin.host == "0.0.0.0" and named["admin"] == config.admin.port  # the kubelet reaches it
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.admin.port)
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/scrape"] == "true"


def test_admin_port_is_in_no_service(objects: dict[tuple[str, str], Any]) -> None:
    admin = check_env("frontend", env_of(objects["Deployment", "zasgi-frontend"])).admin
    for (kind, _), obj in objects.items():
        if kind == "Service":
            for port in obj["spec"]["ports"]:
                assert port["targetPort"] not in ("admin", admin.port) and port["port"] != admin.port


def test_backend_service_lists_front_ends_that_are_not_ready_yet(objects: dict[tuple[str, str], Any]) -> None:
    # A front end is ready (/readyz) only once a worker joined it; workers find it only by this name.
    assert objects["Service", "zasgi-frontend-backend"]["spec"]["publishNotReadyAddresses"] is True
    assert "publishNotReadyAddresses" not in objects["Service", "zasgi"]["spec"]  # clients: ready ones only


def test_frontend_grace(objects: dict[tuple[str, str], Any]) -> None:
    deployment = objects["Deployment", "zasgi-frontend"]
    spec, c = deployment["spec"]["template"]["spec"], container(deployment)
    config = check_env("frontend", env_of(deployment))
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert int(sleep[1]) + config.shutdown_timeout_s < spec["terminationGracePeriodSeconds"]
