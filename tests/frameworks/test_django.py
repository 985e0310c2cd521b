"""Django through zasgi, settings configured in-module: its ASGI handler (auto-detected)
and its WSGI handler through ``--interface wsgi`` (``ZASGI_INTERFACE=wsgi`` in the split)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.conftest import Server

from .conftest import framework_server, ws_url

pytestmark = pytest.mark.integration

VARIANTS = ["asgi-run", "asgi-split", "wsgi-run", "wsgi-split"]


@pytest.fixture(scope="module", params=VARIANTS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    interface, mode = request.param.split("-")
    if interface == "asgi":
        yield from framework_server(mode, tmp_path_factory, "tests.apps.fw_django:application")
    else:
        yield from framework_server(
            mode,
            tmp_path_factory,
            "tests.apps.fw_django:wsgi_application",
            "--interface",
            "wsgi",
            env={"ZASGI_INTERFACE": "wsgi"},
        )


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def test_view(client: httpx.Client) -> None:
    response = client.get("/", params={"name": "zasgi"})
    assert (response.status_code, response.text) == (200, "hello django zasgi")
    assert response.headers["content-type"] == "text/plain"


def test_json_view_sees_the_request(client: httpx.Client) -> None:
    response = client.get("/info/5/", params={"a": "1 2"}, headers={"X-Probe": "yes"})
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert {k: body[k] for k in ("number", "method", "path", "query", "header")} == {
        "number": 5,
        "method": "GET",
        "path": "/info/5/",
        "query": {"a": "1 2"},
        "header": "yes",
    }


def test_url_routing(client: httpx.Client) -> None:
    assert client.get("/info/five/").status_code == 404
    redirect = client.get("/info/5")  # CommonMiddleware's APPEND_SLASH
    assert (redirect.status_code, redirect.headers["location"]) == (301, "/info/5/")
    assert client.get("/submit/").status_code == 405


def test_post_form_and_json(client: httpx.Client) -> None:
    form = client.post("/submit/", data={"name": "Zoë", "n": "3"})
    assert form.json() == {"form": {"name": "Zoë", "n": "3"}}
    payload = {"list": [1, 2, 3], "text": "x" * 100_000}
    assert client.post("/submit/", json=payload).json() == {"json": payload}


def test_streaming_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream/") as response:
        assert response.read() == b"chunk 0\nchunk 1\nchunk 2\n"


def test_websocket_is_refused(server: Server, request: pytest.FixtureRequest) -> None:
    # a2wsgi closes before accepting (403); Django's ASGI handler raises for non-HTTP scopes (500).
    expected = 403 if request.node.callspec.params["server"].startswith("wsgi") else 500
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/"), open_timeout=10)
    assert info.value.response.status_code == expected
