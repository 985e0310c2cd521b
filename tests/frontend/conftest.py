"""Fixtures: a ZeroMQ context that fails a test on leaks, an in-process front end, scripted workers."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import zmq

from frontend import config as cfg
from frontend.server import serve
from tests.frontend import rawh2, rawhttp
from tests.frontend.scripted_worker import ScriptedWorker

TERM_TIMEOUT_S = 5.0
IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux
# A worker silent for interval x liveness is gone. The default here is tolerant: the CI machine is
# a loaded 2-core box, where a test process can stall for a second or more, and a tight one would
# lose a healthy worker (a 502 or a replay where the test expects neither). Tests about liveness
# itself (a silent worker, a busy one) ask for the tight one: ``start_frontend(heartbeat=TIGHT_HEARTBEAT)``,
# or a module overrides the ``heartbeat`` fixture. (A worker that disconnects is noticed at once
# either way: test_worker_loss.)
TOLERANT_HEARTBEAT = cfg.Heartbeat(interval_ms=1000, liveness=5)
TIGHT_HEARTBEAT = cfg.Heartbeat(interval_ms=100, liveness=3)  # silent 0.3 s: gone


@pytest.fixture(autouse=True)
async def _raw_connections_closed() -> AsyncIterator[None]:
    """In the test's loop, before it closes: raw connections a test left open (rawhttp, rawh2)."""
    yield
    rawhttp.close_all()
    rawh2.close_all()


@pytest.fixture
def zmq_ctx() -> Iterator[zmq.Context[Any]]:
    """A context per test; leaked sockets are closed (linger 0) and fail the test."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    leaked = [s for s in list(ctx._sockets) if not s.closed]
    for sock in leaked:
        sock.close(linger=0)
    term = threading.Thread(target=ctx.term, daemon=True)
    term.start()
    term.join(TERM_TIMEOUT_S)
    if term.is_alive():
        pytest.fail(f"zmq context did not terminate within {TERM_TIMEOUT_S}s")
    if leaked:
        pytest.fail(f"{len(leaked)} zmq socket(s) left open: {leaked}")


@dataclass
class Frontend:
    config: cfg.FrontendConfig
    url: str
    endpoint: str
    shutdown: asyncio.Event
    task: asyncio.Task[None]
    workers: list[ScriptedWorker] = field(default_factory=list)
    admin: str | None = None  # the admin endpoint's URL, when it is on

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _ipc_dir(tmp_path: Path) -> str:
    if len(str(tmp_path)) < IPC_PATH_MAX - 20:
        return str(tmp_path)
    return tempfile.mkdtemp(prefix="zfe-")  # tmp_path too long for an ipc:// path


def make_config(
    tmp_path: Path, *, backend_kw: dict[str, Any] | None = None, **overrides: Any
) -> cfg.FrontendConfig:
    base = cfg.FrontendConfig(
        port=0,
        backend=cfg.Backend(endpoint=f"ipc://{_ipc_dir(tmp_path)}/fe.sock", **(backend_kw or {})),
        heartbeat=TOLERANT_HEARTBEAT,
        queue=cfg.Queue(size=100, timeout_s=2.0),
        shutdown_timeout_s=2.0,
    )
    return replace(base, **overrides)


StartFrontend = Callable[..., Awaitable[Frontend]]


@pytest.fixture
def heartbeat() -> cfg.Heartbeat:
    """``start_frontend``'s heartbeat unless a test gives one; a module about liveness overrides it."""
    return TOLERANT_HEARTBEAT


@pytest.fixture
async def start_frontend(
    tmp_path: Path, zmq_ctx: zmq.Context[Any], heartbeat: cfg.Heartbeat
) -> AsyncIterator[StartFrontend]:
    """``await start_frontend(**config_overrides)`` -> a running in-process Frontend."""
    running: list[Frontend] = []

    async def start(**overrides: Any) -> Frontend:
        overrides.setdefault("heartbeat", heartbeat)
        config = make_config(tmp_path, **overrides)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        shutdown = asyncio.Event()
        task = asyncio.ensure_future(
            serve(config, ready=ready.set_result, shutdown=shutdown, zmq_context=zmq_ctx)
        )
        await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises what serve() raised
        fields = ready.result().split(" ")  # zasgi-ready frontend http://H:P backend=E [admin=URL]
        fe = Frontend(config, fields[2], fields[3].removeprefix("backend="), shutdown, task)
        if len(fields) > 4:
            fe.admin = fields[4].removeprefix("admin=")
        running.append(fe)
        return fe

    yield start
    for fe in running:
        for worker in fe.workers:
            worker.close()
        fe.shutdown.set()
        await asyncio.wait_for(fe.task, 10)


@pytest.fixture
def worker_for(zmq_ctx: zmq.Context[Any]) -> Callable[..., Awaitable[ScriptedWorker]]:
    """``await worker_for(fe, **kw)``: a ScriptedWorker connected and welcomed (closed by teardown)."""

    async def make(fe: Frontend, *, hello: bool = True, **kwargs: Any) -> ScriptedWorker:
        worker = ScriptedWorker(zmq_ctx, fe.endpoint, **kwargs)
        fe.workers.append(worker)
        if hello:
            await worker.hello()
        return worker

    return make
