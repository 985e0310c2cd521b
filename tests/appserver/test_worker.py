"""The worker process logic against scripted front ends: in-process, plus one real process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from appserver.config import WorkerConfig
from appserver.lifecycle import WorkerPhase
from appserver.worker import EXIT_APP_LOAD, EXIT_BOOT, EXIT_OK, Worker
from wire import ResetCode
from wire import events as ev

from .helpers import settle, until
from .scripted import WS_FEATURES, ScriptedFrontend, ws_connect

APP_SOURCE = """
import asyncio, os
GATE = asyncio.Event()
LOG = []

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            LOG.append(message["type"])
            if os.environ.get("ZASGI_TEST_LIFESPAN_FAIL") and message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": "cache unreachable"})
                return
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            pass
        LOG.append(f"websocket.disconnect {message['code']}")
        return
    await receive()
    if scope["path"] == "/gate":
        await GATE.wait()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})
"""


@pytest.fixture
def app_module(tmp_path: Path) -> Iterator[str]:
    name = f"zasgi_worker_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP_SOURCE)
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


@pytest.fixture
def frontends(zmq_ctx: zmq.Context[Any], tmp_path: Path) -> Iterator[list[ScriptedFrontend]]:
    made = [ScriptedFrontend(zmq_ctx, f"ipc://{tmp_path}/fe{i}.sock") for i in range(2)]
    yield made
    for frontend in made:
        frontend.close()


def config_for(app_module: str, tmp_path: Path, endpoints: list[str], **kwargs: Any) -> WorkerConfig:
    options: dict[str, Any] = {"graceful_timeout_s": 5.0, "reconnect_max_s": 0.5} | kwargs
    return WorkerConfig(app=f"{app_module}:app", app_dir=str(tmp_path), connect=tuple(endpoints), **options)


class Running:
    """A Worker running as a task on the test's loop."""

    def __init__(self, config: WorkerConfig, parent_fd: int | None = None) -> None:
        self.ready_calls = 0
        self.worker = Worker(config, ready=self._ready, parent_fd=parent_fd)
        self.task = asyncio.get_running_loop().create_task(self.worker.run())

    def _ready(self) -> None:
        self.ready_calls += 1

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.task, 10)


async def welcome(fe: ScriptedFrontend) -> ev.Hello:
    hello = await fe.expect(ev.Hello)
    fe.welcome(heartbeat_ms=200)
    return hello


def request(stream_id: int, path: bytes = b"/") -> ev.Request:
    return ev.Request(stream_id, "GET", "http", "1.1", path, b"", "", (), None, None, b"", False, False, {})


async def test_serve_then_drain_on_stop(
    app_module: str, tmp_path: Path, frontends: list[ScriptedFrontend]
) -> None:
    fe = frontends[0]
    running = Running(config_for(app_module, tmp_path, [fe.endpoint]))
    hello = await welcome(fe)
    assert hello.worker_id.startswith(f"{os.uname().nodename}-{os.getpid()}-")
    await asyncio.wait_for(running.worker.lifecycle.reached(WorkerPhase.READY), 5)
    assert running.ready_calls == 1
    fe.send(request(1, b"/gate"))
    await until(lambda: running.worker.connections[0].open_streams == 1)
    running.worker.request_stop()
    await fe.expect(ev.Drain)
    sys.modules[app_module].GATE.set()  # the in-flight request still finishes
    assert (await fe.expect(ev.Response)).body == b"ok"
    await fe.expect(ev.Bye)
    assert await running.exit_code() == EXIT_OK
    assert sys.modules[app_module].LOG == ["lifespan.startup", "lifespan.shutdown"]


async def test_drain_closes_websockets_with_1012_after_the_grace(
    app_module: str, tmp_path: Path, frontends: list[ScriptedFrontend]
) -> None:
    fe = frontends[0]
    running = Running(config_for(app_module, tmp_path, [fe.endpoint], graceful_timeout_s=0.05))
    await fe.expect(ev.Hello)
    fe.welcome(heartbeat_ms=200, features=WS_FEATURES)
    fe.send(ws_connect(1))
    await fe.expect(ev.WsAccept)
    running.worker.request_stop()
    await fe.expect(ev.Drain)
    assert await fe.expect(ev.WsClose) == ev.WsClose(1, 1012, "service restart")
    await fe.expect(ev.Bye)
    assert await running.exit_code() == EXIT_OK
    log = sys.modules[app_module].LOG
    assert log == ["lifespan.startup", "websocket.disconnect 1012", "lifespan.shutdown"]


async def test_ready_only_once_every_front_end_welcomed(
    app_module: str, tmp_path: Path, frontends: list[ScriptedFrontend]
) -> None:
    running = Running(config_for(app_module, tmp_path, [fe.endpoint for fe in frontends]))
    await welcome(frontends[0])
    await frontends[1].expect(ev.Hello)
    await asyncio.wait_for(running.worker.connections[0].welcomed.wait(), 5)
    await settle()
    assert running.ready_calls == 0 and running.worker.lifecycle.phase is WorkerPhase.STARTING
    frontends[1].welcome()
    await asyncio.wait_for(running.worker.lifecycle.reached(WorkerPhase.READY), 5)
    assert running.ready_calls == 1
    running.worker.request_stop()
    for fe in frontends:
        await fe.expect(ev.Drain)
        await fe.expect(ev.Bye)
    assert await running.exit_code() == EXIT_OK


async def test_second_stop_request_stops_at_once(
    app_module: str, tmp_path: Path, frontends: list[ScriptedFrontend]
) -> None:
    fe = frontends[0]
    running = Running(config_for(app_module, tmp_path, [fe.endpoint], graceful_timeout_s=60.0))
    await welcome(fe)
    fe.send(request(1, b"/gate"))
    await until(lambda: running.worker.connections[0].open_streams == 1)
    running.worker.request_stop()
    await fe.expect(ev.Drain)
    running.worker.request_stop()
    reset = await fe.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (1, ResetCode.CANCELLED)
    await fe.expect(ev.Bye)
    assert await running.exit_code() == EXIT_OK
    assert sys.modules[app_module].LOG == ["lifespan.startup"]  # no lifespan shutdown when forced


async def test_parent_gone_drains_and_exits(
    app_module: str, tmp_path: Path, frontends: list[ScriptedFrontend]
) -> None:
    fe = frontends[0]
    read_fd, write_fd = os.pipe()
    try:
        running = Running(config_for(app_module, tmp_path, [fe.endpoint]), parent_fd=read_fd)
        await welcome(fe)
        # Ready first: a parent that dies during the handshake leaves nothing to drain (no DRAIN sent).
        await asyncio.wait_for(running.worker.lifecycle.reached(WorkerPhase.READY), 10)
        os.close(write_fd)  # the parent died: EOF
        write_fd = -1
        await fe.expect(ev.Drain)
        await fe.expect(ev.Bye)
        assert await running.exit_code() == EXIT_OK
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


async def test_refuse_exits_with_boot_error(
    app_module: str, tmp_path: Path, frontends: list[ScriptedFrontend], caplog: pytest.LogCaptureFixture
) -> None:
    fe = frontends[0]
    running = Running(config_for(app_module, tmp_path, [fe.endpoint]))
    await fe.expect(ev.Hello)
    fe.send(ev.Refuse(0, "not authorized"))
    assert await running.exit_code() == EXIT_BOOT
    assert any("not authorized" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_bad_app_exits_4_with_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = WorkerConfig(app="zasgi_missing_module:app", connect=("ipc:///nonexistent",))
    assert await Running(config).exit_code() == EXIT_APP_LOAD
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["cannot load app: no module named 'zasgi_missing_module'"]


async def test_lifespan_failure_exits_4_with_the_apps_message(
    app_module: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZASGI_TEST_LIFESPAN_FAIL", "1")
    config = config_for(app_module, tmp_path, ["ipc:///nonexistent"])
    assert await Running(config).exit_code() == EXIT_APP_LOAD
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["lifespan startup failed: cache unreachable"]


# ---------------------------------------------------------------- a real process


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    return proc.wait(timeout=timeout_s)


async def test_real_process_sigterm_drains_and_exits_0(
    app_module: str, tmp_path: Path, frontends: list[ScriptedFrontend]
) -> None:
    fe = frontends[0]
    code = (
        "import sys; from appserver.config import WorkerConfig; from appserver.worker import run_worker;"
        f"sys.exit(run_worker(WorkerConfig(app={app_module + ':app'!r}, app_dir={str(tmp_path)!r},"
        f" connect=({fe.endpoint!r},), log_level='debug'), ready=lambda: print('ready', flush=True)))"
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log_file, stderr=log_file,
                                cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    try:
        await welcome(fe)
        fe.send(request(1))
        assert (await fe.expect(ev.Response)).body == b"ok"
        proc.send_signal(signal.SIGTERM)
        await fe.expect(ev.Drain)
        await fe.expect(ev.Bye)
        returncode = await asyncio.get_running_loop().run_in_executor(None, _wait, proc, 10)
        output = log_path.read_text()
        assert returncode == 0, output
        assert "ready" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
