"""FastAPI through zasgi: validation errors, path params, a dependency, StreamingResponse,
BackgroundTasks after the response, a sync route (thread pool), a WebSocket."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.conftest import Server

from .conftest import MODES, framework_server, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from framework_server(request.param, tmp_path_factory, "tests.apps.fw_fastapi:app")


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def test_path_and_query_params(client: httpx.Client) -> None:
    assert client.get("/items/7", params={"q": "ünï"}).json() == {"item_id": 7, "q": "ünï"}


def test_validation_errors_are_422(client: httpx.Client) -> None:
    bad_path = client.get("/items/seven")
    assert bad_path.status_code == 422
    assert bad_path.json()["detail"][0]["loc"] == ["path", "item_id"]
    bad_body = client.post("/items", json={"name": "pen"})
    assert bad_body.status_code == 422
    assert bad_body.json()["detail"][0]["loc"] == ["body", "price"]
    not_json = client.post("/items", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422


def test_json_body(client: httpx.Client) -> None:
    response = client.post("/items", json={"name": "pen", "price": 1.25})
    assert response.json() == {"name": "pen", "price_cents": 125}


def test_dependency(client: httpx.Client) -> None:
    assert client.get("/me", headers={"X-Token": "secret"}).json() == {"user": "alice"}
    denied = client.get("/me", headers={"X-Token": "wrong"})
    assert (denied.status_code, denied.json()) == (401, {"detail": "bad token"})


def test_sync_route_in_thread_pool(client: httpx.Client) -> None:
    assert client.get("/sync").json() == {"sync": "ok"}


def test_streaming_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream", params={"n": 200}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines == [f"line {i}" for i in range(200)]


def test_background_task_runs_after_the_response(server: Server, client: httpx.Client) -> None:
    tag = f"job-{time.monotonic_ns()}"
    response = client.post(f"/jobs/{tag}")
    assert (response.status_code, response.json()) == (202, {"queued": tag})
    # The task finishes only once we hold the response: it did not delay it, and it still runs.
    (server.probe_dir / f"release-{tag}").touch()
    server.wait_recorded("background", f"{tag} released")


def test_websocket_with_path_param(server: Server) -> None:
    with connect(ws_url(server, "/ws/lobby")) as ws:
        ws.send('{"n": 1}')
        assert ws.recv(timeout=10) == '{"room":"lobby","echo":{"n":1}}'
        ws.send('{"n": 2}')
        assert '"n":2' in str(ws.recv(timeout=10))


def test_unknown_websocket_route_is_refused(server: Server) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/nope"), open_timeout=10)
    assert info.value.response.status_code == 403
