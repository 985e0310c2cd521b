"""Fixtures for the appserver tests: a leak-checking ZeroMQ context, a scripted front end."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from appserver.connection import FrontendConnection

from .scripted import Factory, ScriptedFrontend, echo_path_app

TERM_TIMEOUT_S = 5.0


class TrackingContext(zmq.Context):  # type: ignore[type-arg]
    """Remembers every socket made from it, so teardown can name leaks."""

    made: list[zmq.Socket[Any]]  # declared: pyzmq treats unknown attributes as socket options

    def __init__(self) -> None:
        super().__init__()
        self.made = []

    def socket(self, socket_type: int, *args: Any, **kwargs: Any) -> Any:
        sock = super().socket(socket_type, *args, **kwargs)
        self.made.append(sock)
        return sock


@pytest.fixture
def zmq_ctx() -> Iterator[TrackingContext]:
    """One context per test. At teardown every socket must already be closed (fixtures that
    own sockets close theirs first); any left open is a leak: it is closed with linger 0 and
    the test fails. The context is terminated in a thread with a timeout, so a leak can fail
    a test but never hang the suite."""
    ctx = TrackingContext()
    yield ctx
    leaked = [sock for sock in ctx.made if not sock.closed]
    for sock in leaked:
        sock.close(linger=0)
    done = threading.Event()

    def term() -> None:
        ctx.term()
        done.set()

    threading.Thread(target=term, name="zmq-term", daemon=True).start()
    if not done.wait(TERM_TIMEOUT_S):
        pytest.fail(f"zmq context did not terminate within {TERM_TIMEOUT_S}s")
    if leaked:
        pytest.fail(f"{len(leaked)} zmq socket(s) left open by the code under test")


@pytest.fixture
def fe(zmq_ctx: zmq.Context[Any], tmp_path: Path) -> Iterator[ScriptedFrontend]:
    frontend = ScriptedFrontend(zmq_ctx, f"ipc://{tmp_path}/fe.sock")
    yield frontend
    frontend.close()


@pytest.fixture
async def connect(zmq_ctx: zmq.Context[Any], fe: ScriptedFrontend) -> AsyncIterator[Factory]:
    """Make FrontendConnections to ``fe`` (started); closed, their streams cancelled, at teardown."""
    made: list[FrontendConnection] = []

    def factory(app: Any = echo_path_app, **kwargs: Any) -> FrontendConnection:
        options = {"capacity": 8, "ws_capacity": 0, "window_bytes": 65536, "reconnect_max_s": 0.5} | kwargs
        conn = FrontendConnection(ctx=zmq_ctx, endpoint=fe.endpoint, worker_id="host-1-abc", app=app,
                                  state={}, info={"app": "test:app"}, **options)  # fmt: skip
        made.append(conn)
        conn.start()
        return conn

    yield factory
    for conn in made:
        conn.close()
        await conn.cancel_streams()
