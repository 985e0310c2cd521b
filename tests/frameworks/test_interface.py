"""Interface selection (auto, asgi3, asgi2, wsgi) and the WSGI adapter, in process,
plus the CLI's answer to an interface the app cannot have."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import flask
import pytest

from appserver.loader import AppLoadError, ASGI2Adapter, Interface, detect_interface, load_app
from appserver.stream import ClientDisconnected
from appserver.wsgi import WSGIAdapter
from tests.helpers.processes import REPO, free_tcp_port, zasgi

FLASK = "tests.apps.fw_flask:app"


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None: ...


class ASGI3Object:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class ASGI2Class:
    def __init__(self, scope: Any) -> None: ...

    async def __call__(self, receive: Any, send: Any) -> None: ...


class AwaitableClass:
    def __init__(self, scope: Any, receive: Any, send: Any) -> None: ...

    def __await__(self) -> Iterator[None]:
        yield


def asgi2_function(scope: Any) -> Any: ...


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


def sync_three(scope: Any, receive: Any, send: Any) -> Any:  # an undecorated wrapper returning a coroutine
    return asgi3_function(scope, receive, send)


def varargs(*args: Any) -> Any: ...


class WSGIObject:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (asgi3_function, Interface.ASGI3),
        (ASGI3Object(), Interface.ASGI3),
        (functools.partial(asgi3_function), Interface.ASGI3),
        (AwaitableClass, Interface.ASGI3),
        (sync_three, Interface.ASGI3),
        (ASGI2Class, Interface.ASGI2),
        (asgi2_function, Interface.ASGI2),
        (varargs, Interface.ASGI2),  # ambiguous: uvicorn's answer
        (wsgi_function, Interface.WSGI),
        (WSGIObject(), Interface.WSGI),
        (flask.Flask("x"), Interface.WSGI),
        (flask.Flask("y").wsgi_app, Interface.WSGI),
    ],
    ids=lambda v: v.value if isinstance(v, Interface) else None,
)
def test_auto_detection(app: Any, expected: Interface) -> None:
    assert detect_interface(app) is expected


def test_auto_wraps_by_interface() -> None:
    assert isinstance(load_app(FLASK), WSGIAdapter)
    assert isinstance(load_app(f"{__name__}:ASGI2Class"), ASGI2Adapter)
    assert load_app(f"{__name__}:asgi3_function") is asgi3_function


def test_explicit_interface() -> None:
    assert isinstance(load_app(FLASK, interface="wsgi"), WSGIAdapter)
    assert isinstance(load_app(f"{__name__}:varargs", interface="wsgi"), WSGIAdapter)  # undecidable: trusted
    assert load_app(f"{__name__}:varargs", interface="asgi3") is varargs


def test_factory_returning_a_wsgi_app() -> None:
    assert isinstance(load_app(f"{__name__}:make_flask", factory=True), WSGIAdapter)


def make_flask() -> flask.Flask:
    return flask.Flask("factory")


@pytest.mark.parametrize(
    ("spec", "interface", "message"),
    [
        (
            FLASK,
            "asgi3",
            f"app {FLASK!r} does not fit --interface asgi3: it takes 2 positional arguments, "
            "not (scope, receive, send); it looks like wsgi (--interface wsgi)",
        ),
        (
            f"{__name__}:asgi3_function",
            "wsgi",
            f"app '{__name__}:asgi3_function' is async, not a WSGI app; "
            "it looks like asgi3 (--interface asgi3)",
        ),
        (
            f"{__name__}:wsgi_function",
            "asgi2",
            f"app '{__name__}:wsgi_function' does not fit --interface asgi2: "
            "it takes 2 positional arguments, not (scope); it looks like wsgi (--interface wsgi)",
        ),
        (
            f"{__name__}:ASGI2Class",
            "asgi3",
            f"app '{__name__}:ASGI2Class' does not fit --interface asgi3: it takes 1 positional argument, "
            "not (scope, receive, send); it looks like asgi2 (--interface asgi2)",
        ),
    ],
)
def test_wrong_interface_is_one_line(spec: str, interface: str, message: str) -> None:
    with pytest.raises(AppLoadError) as info:
        load_app(spec, interface=interface)
    assert str(info.value) == message


def test_cli_wrong_interface_exits_4_with_one_line() -> None:
    argv = zasgi(
        "appserver", FLASK, "--interface", "asgi3", "--connect", f"tcp://127.0.0.1:{free_tcp_port()}"
    )
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "does not fit --interface asgi3" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_cli_unknown_interface_is_a_usage_error() -> None:
    done = subprocess.run(
        zasgi("appserver", FLASK, "--connect", "tcp://127.0.0.1:1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ZASGI_INTERFACE": "cgi"},
    )
    assert done.returncode == 2 and "'cgi' is not one of" in done.stderr


# --- the WSGI adapter, driven with hand-made receive/send -------------------------------------


class Fake:
    """An ASGI peer: queued request messages in, sent messages out; send fails once 'gone'."""

    def __init__(self, *bodies: bytes, fail_after: int | None = None) -> None:
        self.inbox = [{"type": "http.request", "body": b, "more_body": True} for b in bodies]
        self.inbox[-1]["more_body"] = False
        self.sent: list[dict[str, Any]] = []
        self.fail_after = fail_after

    async def receive(self) -> dict[str, Any]:
        return self.inbox.pop(0) if self.inbox else {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ClientDisconnected("the client went away")
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def http_scope(path: str, method: str = "GET", headers: list[Any] | None = None) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": headers or [], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def test_chunked_body_reaches_flask() -> None:
    adapter = WSGIAdapter(flask_app())
    peer = Fake(b'{"a": ', b"[1, 2]", b"}")
    scope = http_scope("/json", "POST", [(b"content-type", b"application/json")])
    await adapter(scope, peer.receive, peer.send)
    assert peer.sent[0]["status"] == 200 and peer.body == b'{"a":[1,2]}\n'


async def test_client_gone_stops_an_endless_response() -> None:
    closed = threading.Event()
    adapter = WSGIAdapter(flask_app(closed))
    peer = Fake(b"", fail_after=3)
    started = time.monotonic()
    await asyncio.wait_for(adapter(http_scope("/forever"), peer.receive, peer.send), timeout=30)
    assert closed.wait(10), "the response iterable was never closed"
    assert len(peer.sent) == 3 and time.monotonic() - started < 30


async def test_lifespan_and_websocket_scopes() -> None:
    adapter = WSGIAdapter(flask_app())
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await adapter({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    await adapter({**http_scope("/ws"), "type": "websocket"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


def flask_app(closed: threading.Event | None = None) -> flask.Flask:
    app = flask.Flask("adapter")

    @app.post("/json")
    def json_body() -> Any:
        return flask.jsonify(flask.request.get_json())

    @app.get("/forever")
    def forever() -> flask.Response:
        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    yield b"x"
            finally:
                if closed is not None:
                    closed.set()

        return flask.Response(chunks())

    return app
