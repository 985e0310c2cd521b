"""Flask through ``--interface wsgi`` (a2wsgi's thread pool): GET, form and JSON POSTs,
a streamed response, an app error, and a client leaving an endless stream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import Server

from .conftest import MODES, framework_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # run: the option; split: the environment variable.
    yield from framework_server(
        request.param,
        tmp_path_factory,
        "tests.apps.fw_flask:app",
        "--interface",
        "wsgi",
        env={"ZASGI_INTERFACE": "wsgi"},
    )


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def test_get_runs_in_the_wsgi_thread_pool(client: httpx.Client) -> None:
    assert client.get("/", params={"name": "zasgi"}).text == "hello flask zasgi"
    body = client.get("/users/3").json()
    assert body["user_id"] == 3 and body["thread"].startswith("WSGI") and body["root"] == ""
    assert client.get("/users/x").status_code == 404
    assert client.post("/").status_code == 405


def test_form_post(client: httpx.Client) -> None:
    response = client.post("/form", data={"name": "Zoë"}, files={"upload": ("a.txt", b"hello")})
    assert response.json() == {"form": {"name": "Zoë"}, "files": ["upload"]}


def test_json_post(client: httpx.Client) -> None:
    payload = {"items": list(range(1000)), "text": "é" * 50_000}
    response = client.post("/json", json=payload)
    body = response.json()
    assert body["json"] == payload and body["length"] == len(response.request.content)


def test_chunked_request_body(client: httpx.Client) -> None:
    def parts() -> Iterator[bytes]:
        yield b'{"chunked": '
        yield b"true}"

    response = client.post("/json", content=parts(), headers={"content-type": "application/json"})
    assert response.json()["json"] == {"chunked": True}


def test_streamed_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream") as response:
        assert response.read() == b"".join(f"chunk {i}\n".encode() for i in range(5))


def test_app_error_is_500(client: httpx.Client) -> None:
    response = client.get("/boom")
    assert response.status_code == 500
    assert client.get("/").status_code == 200  # the worker carries on


def test_client_leaving_an_endless_stream_frees_the_thread(server: Server, client: httpx.Client) -> None:
    tag = f"forever-{time.monotonic_ns()}"
    with client.stream("GET", "/forever", params={"tag": tag}) as response:
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > 64 * 1024:
                break  # closing the stream here drops the connection mid-body
    server.wait_recorded("closed", tag, timeout_s=30)
