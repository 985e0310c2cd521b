"""Quart (a route, a JSON POST, a WebSocket) and Litestar (typed routes, JSON) through zasgi."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.conftest import Server

from .conftest import MODES, framework_server, ws_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=MODES)
def quart(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from framework_server(request.param, tmp_path_factory, "tests.apps.fw_quart:app")


@pytest.fixture(scope="module", params=MODES)
def litestar(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from framework_server(request.param, tmp_path_factory, "tests.apps.fw_litestar:app")


def test_quart_routes(quart: Server) -> None:
    with httpx.Client(base_url=quart.url, timeout=20) as client:
        assert client.get("/").text == "hello quart"
        assert client.post("/echo", json={"a": [1, "b"]}).json() == {"json": {"a": [1, "b"]}}
        assert client.get("/missing").status_code == 404


def test_quart_websocket(quart: Server) -> None:
    with connect(ws_url(quart, "/ws")) as ws:
        for text in ("one", "two"):
            ws.send(text)
            assert ws.recv(timeout=10) == f"quart: {text}"


def test_litestar_routes(litestar: Server) -> None:
    with httpx.Client(base_url=litestar.url, timeout=20) as client:
        hello = client.get("/")
        assert (hello.status_code, hello.text) == (200, "hello litestar")
        assert client.get("/books/12").json() == {"book_id": 12}
        assert client.get("/books/twelve").status_code == 404  # no route for a non-int
        added = client.post("/books", json={"title": "Dune"})
        assert (added.status_code, added.json()) == (201, {"added": {"title": "Dune"}})
