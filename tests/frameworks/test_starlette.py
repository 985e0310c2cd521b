"""Starlette through zasgi: routing, path params, forms, lifespan state, streaming, WebSocket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.conftest import Server

from .conftest import MODES, framework_server, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from framework_server(request.param, tmp_path_factory, "tests.apps.fw_starlette:app")


def test_routes_and_path_params(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=20) as client:
        hello = client.get("/")
        assert (hello.status_code, hello.text) == (200, "hello starlette")
        assert hello.headers["content-type"].startswith("text/plain")
        assert client.get("/users/42", params={"q": "x y"}).json() == {"user_id": 42, "q": "x y"}
        assert client.get("/users/abc").status_code == 404
        assert client.get("/echo").status_code == 405


def test_form_post_sees_lifespan_state(server: Server) -> None:
    lifespan = (server.probe_dir / "lifespan").read_text()  # ready means startup has run
    assert lifespan.startswith("startup ")
    response = httpx.post(f"{server.url}/echo", data={"a": "1", "b": "two"}, timeout=20)
    assert response.json() == {"form": {"a": "1", "b": "two"}, "greeting": "hello from starlette lifespan"}


def test_streaming_response(server: Server) -> None:
    with httpx.stream("GET", f"{server.url}/stream", timeout=20) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        assert response.read() == b"0\n1\n2\n3\n4\n"


def test_websocket(server: Server) -> None:
    with connect(ws_url(server, "/ws")) as ws:
        for text in ("hi", "héllo"):
            ws.send(text)
            assert ws.recv(timeout=10) == f"starlette: {text}"
