"""Lifecycle transitions and WorkerConfig validation."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from appserver.config import LifespanMode, WorkerConfig
from appserver.lifecycle import TRANSITIONS, IllegalTransition, Lifecycle, WorkerPhase

# ---------------------------------------------------------------- lifecycle


async def test_forward_path_sets_each_event() -> None:
    lifecycle = Lifecycle()
    waiter = asyncio.ensure_future(lifecycle.reached(WorkerPhase.READY))
    await asyncio.sleep(0)
    assert not waiter.done()
    lifecycle.to(WorkerPhase.READY)
    await asyncio.wait_for(waiter, 5)
    lifecycle.to(WorkerPhase.DRAINING)
    lifecycle.to(WorkerPhase.STOPPED)
    assert lifecycle.phase is WorkerPhase.STOPPED


async def test_reached_releases_waiters_for_phases_skipped() -> None:
    lifecycle = Lifecycle()
    lifecycle.to(WorkerPhase.STOPPED)  # e.g. the app failed to load
    await asyncio.wait_for(lifecycle.reached(WorkerPhase.READY), 5)
    assert lifecycle.has_reached(WorkerPhase.DRAINING)


@pytest.mark.parametrize(
    "path",
    [[old, new] for old in WorkerPhase for new in WorkerPhase if new not in TRANSITIONS[old]],
    ids=lambda p: f"{p[0].name}->{p[1].name}",
)
def test_illegal_moves_raise_and_change_nothing(path: list[WorkerPhase]) -> None:
    old, new = path
    lifecycle = Lifecycle()
    route = {
        WorkerPhase.STARTING: [],
        WorkerPhase.READY: [WorkerPhase.READY],
        WorkerPhase.DRAINING: [WorkerPhase.READY, WorkerPhase.DRAINING],
        WorkerPhase.LINGERING: [WorkerPhase.READY, WorkerPhase.DRAINING, WorkerPhase.LINGERING],
        WorkerPhase.STOPPED: [WorkerPhase.STOPPED],
    }[old]
    for phase in route:
        lifecycle.to(phase)
    with pytest.raises(IllegalTransition):
        lifecycle.to(new)
    assert lifecycle.phase is old


# ---------------------------------------------------------------- config


def test_config_defaults_and_pickling() -> None:
    config = WorkerConfig(app="main:app", connect=["ipc:///tmp/fe.sock"], log_level="DEBUG")
    assert config.connect == ("ipc:///tmp/fe.sock",)
    assert config.lifespan is LifespanMode.AUTO and config.log_level == "debug"
    assert (config.capacity, config.window_bytes, config.graceful_timeout_s) == (4096, 1024 * 1024, 30.0)
    assert (config.adaptive, config.capacity_floor) == (True, 16)
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    "field, value",
    [
        ("app", ""),
        ("connect", ()),
        ("connect", ("localhost:7000",)),
        ("capacity", 0),
        ("capacity", 1.5),
        ("ws_capacity", -1),
        ("window_bytes", 0),
        ("graceful_timeout_s", -1),
        ("reconnect_max_s", 0),
        ("factory", "yes"),
        ("lifespan", "sometimes"),
        ("log_level", "chatty"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: Any) -> None:
    options: dict[str, Any] = {"app": "main:app", "connect": ("ipc:///x",), field: value}
    with pytest.raises(ValueError, match=f"^{field}: "):
        WorkerConfig(**options)
