"""The front end's request path leaves no reference cycles: what a request allocates is freed by
reference counting when it ends. wire/gcpolicy.py's large young generation relies on it (with
cycles per request, garbage would pile up between collections)."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from wire import events as ev

from .rawhttp import RawConn, status_of

pytestmark = pytest.mark.timeout(30)

REQUESTS = 200


def _ours(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] in ("frontend", "wire")


async def test_keep_alive_requests_with_and_without_a_body_leave_no_cyclic_garbage(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)

    async def exchange(n: int) -> None:
        for i in range(n):
            if i % 2:
                await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            else:  # a body that came with the head
                await conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            req = await w.expect(ev.Request)
            w.respond(req.stream_id, 200, ((b"content-length", b"2"),), b"ok")
            assert status_of(await conn.read_head()) == 200 and await conn.read_exactly(2) == b"ok"

    await exchange(20)  # warm: lazily built state (a connection's first request) is not per request
    gc.collect()
    gc.disable()
    try:
        await exchange(REQUESTS)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leftovers = [type(o).__qualname__ for o in gc.garbage if _ours(o)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    conn.close()
    # A few objects from the client/worker side of this test may be cyclic; per request, none of ours.
    assert len(leftovers) < REQUESTS // 10, sorted(set(leftovers))
