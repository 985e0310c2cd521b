"""The shared stream plumbing: Wakeup, CreditGate, and the memory an idle WebSocket costs."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest

from appserver.stream import CreditGate, StreamSettings, Wakeup
from appserver.websocket import WebSocketCycle
from wire import events as ev

from .helpers import make_connect, settle, until

IDLE_WEBSOCKET_BUDGET_BYTES = 6 * 1024  # cycle + task + app frame + scope; measured ~3.9 KiB


async def test_wakeup_wakes_every_waiter_and_a_cancelled_one_disturbs_no_other() -> None:
    wakeup = Wakeup()
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await wakeup.wait()
        woken.append(name)

    tasks = [asyncio.create_task(waiter(name)) for name in "abc"]
    await settle()
    tasks[1].cancel()
    await settle()
    wakeup.set()
    await asyncio.wait_for(asyncio.gather(tasks[0], tasks[2]), 5)
    assert sorted(woken) == ["a", "c"] and tasks[1].cancelled()
    wakeup.set()  # nobody waiting: a no-op, not a stored flag


async def test_credit_gate_parks_senders_until_credit_or_the_stream_ends() -> None:
    gate = CreditGate(0)
    live = [True]
    task = asyncio.create_task(gate.wait(lambda: live[0]))
    await settle()
    assert not task.done()
    gate.grant(10)
    await asyncio.wait_for(task, 5)
    gate.spend(20)
    task = asyncio.create_task(gate.wait(lambda: live[0]))
    await settle()
    live[0] = False
    gate.release()
    await asyncio.wait_for(task, 5)
    assert not gate.open


async def _idle_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


@pytest.mark.parametrize("count", [2000])
async def test_an_idle_websocket_stays_within_its_memory_budget(count: int) -> None:
    settings = StreamSettings(
        request_window_bytes=256 * 1024, response_window_bytes=256 * 1024, ws_denial=True
    )
    sink: list[Any] = []
    connects = [make_connect(i) for i in range(1, count + 1)]  # the wire event is not ours to count
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cycles = [WebSocketCycle(c, emit=sink.append, settings=settings) for c in connects]
        tasks = [asyncio.create_task(cycle.run(_idle_app)) for cycle in cycles]
        await until(lambda: len(sink) == count)  # every one accepted
        for cycle in cycles:  # one message each, then idle again: no inbox left behind
            cycle.feed(ev.WsMessage(cycle.stream_id, True, b"hello"))
        await settle()
        sink.clear()
        gc.collect()
        per_websocket = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    for cycle in cycles:
        cycle.feed(ev.WsClose(cycle.stream_id, 1001, ""))
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert per_websocket < IDLE_WEBSOCKET_BUDGET_BYTES, f"{per_websocket:.0f} B per idle WebSocket"
