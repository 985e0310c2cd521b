"""Lifespan: complete, failed (message carried), unsupported, state propagated."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from appserver.config import LifespanMode
from appserver.lifespan import Lifespan, LifespanFailure, Phase

from .helpers import CycleHarness


def lifespan_app(events: list[str], *, fail_startup: str | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        assert message["type"] == "lifespan.startup"
        events.append("startup")
        if fail_startup is not None:
            await send({"type": "lifespan.startup.failed", "message": fail_startup})
            return
        scope["state"]["pool"] = "connected"
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        events.append("shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    return app


async def test_startup_and_shutdown_complete() -> None:
    events: list[str] = []
    lifespan = Lifespan(lifespan_app(events), mode=LifespanMode.AUTO, state={})
    await asyncio.wait_for(lifespan.startup(), 5)
    assert events == ["startup"] and lifespan.phase is Phase.STARTED
    await asyncio.wait_for(lifespan.shutdown(), 5)
    assert events == ["startup", "shutdown"] and lifespan.phase is Phase.STOPPED


async def test_state_dict_reaches_request_scopes() -> None:
    state: dict[str, Any] = {}
    lifespan = Lifespan(lifespan_app([]), mode=LifespanMode.ON, state=state)
    await lifespan.startup()
    assert state == {"pool": "connected"}
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"])
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    await CycleHarness(state=lifespan.state).run(app)
    assert seen == [{"pool": "connected"}]
    await lifespan.shutdown()


@pytest.mark.parametrize("mode", [LifespanMode.AUTO, LifespanMode.ON])
async def test_startup_failed_carries_the_apps_message(mode: LifespanMode) -> None:
    lifespan = Lifespan(lifespan_app([], fail_startup="database\nunreachable"), mode=mode, state={})
    with pytest.raises(LifespanFailure) as info:
        await asyncio.wait_for(lifespan.startup(), 5)
    assert str(info.value) == "database unreachable"
    await lifespan.shutdown()  # nothing to shut down; must not hang


async def test_exception_during_startup_is_a_failure_even_in_auto(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise ConnectionRefusedError("redis down")

    lifespan = Lifespan(app, mode=LifespanMode.AUTO, state={})
    with pytest.raises(LifespanFailure, match="ConnectionRefusedError: redis down"):
        await asyncio.wait_for(lifespan.startup(), 5)


async def test_unsupported_app_still_runs_in_auto(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "http only"

    caplog.set_level(logging.INFO, logger="appserver.lifespan")
    lifespan = Lifespan(app, mode=LifespanMode.AUTO, state={})
    await asyncio.wait_for(lifespan.startup(), 5)
    assert lifespan.phase is Phase.UNSUPPORTED
    assert any("unsupported" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await lifespan.shutdown()


async def test_app_returning_at_once_is_unsupported_in_auto() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return

    lifespan = Lifespan(app, mode=LifespanMode.AUTO, state={})
    await asyncio.wait_for(lifespan.startup(), 5)
    assert lifespan.phase is Phase.UNSUPPORTED


async def test_unsupported_app_fails_when_lifespan_is_on() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise TypeError("unknown scope type")

    lifespan = Lifespan(app, mode=LifespanMode.ON, state={})
    with pytest.raises(LifespanFailure, match="lifespan is on, but the app raised TypeError"):
        await asyncio.wait_for(lifespan.startup(), 5)


async def test_off_never_calls_the_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("called")

    lifespan = Lifespan(app, mode=LifespanMode.OFF, state={})
    await lifespan.startup()
    await lifespan.shutdown()


async def test_shutdown_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})

    lifespan = Lifespan(app, mode=LifespanMode.AUTO, state={})
    await lifespan.startup()
    await asyncio.wait_for(lifespan.shutdown(), 5)
    assert any("flush failed" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_shutdown_times_out_on_a_stuck_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.Event().wait()

    lifespan = Lifespan(app, mode=LifespanMode.AUTO, state={})
    await lifespan.startup()
    await asyncio.wait_for(lifespan.shutdown(timeout_s=0.05), 5)
