#!/usr/bin/env python3
"""The walk of one keep-alive GET through the front end: which files it touches, how often it changes module.

    python tests/benchmarks/walk_get.py

The same set-up as ``micro_frontend.py`` (one ``Connection`` on a fake
transport, the real request path and dispatcher, the channel a list): one
GET is answered first (caches warm), then a second one is walked with
``sys.setprofile``: its bytes reach ``Connection.data_received``, the REQUEST
is encoded as the channel would, the worker's whole RESPONSE is decoded and
handed to the dispatcher, which writes it. Counted, for Python functions only
(C functions such as the parser are not seen):

* calls: every Python call, ours (frontend/, wire/) and others' (stdlib,
  aiohttp, multidict...), and the files they are in;
* module switches: calls from a function in one of our files into a function
  in another of our files; per file, how many times it was entered that way.

Compare two checkouts by running it from each with ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from micro_frontend import PEER, REQUEST, _responses, _Transport, on_a_list  # noqa: E402

from frontend.connection import Connection  # noqa: E402
from wire import codec  # noqa: E402

OURS = ("frontend/", "wire/")


def _where(filename: str) -> str:
    try:
        rel = str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        parts = Path(filename).parts
        for i, part in enumerate(parts):
            if part in ("site-packages", "lib-dynload") or part.startswith("python3."):
                return "/".join(parts[i + 1 : i + 3]) if part == "site-packages" else f"stdlib/{parts[-1]}"
        return filename
    return rel


async def _walk() -> None:
    ctx, dispatcher, channel, server = on_a_list(capacity=100)
    conn = Connection(server.shared, asyncio.get_running_loop())
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]

    def one_get() -> None:
        conn.data_received(REQUEST)
        frames = codec.encode(channel.posted)
        channel.posted.clear()
        sys.setprofile(None)  # the app server's part is not walked
        answers = _responses(codec.decode(frames))
        if walking:
            sys.setprofile(profile)
        dispatcher._on_events(PEER, codec.decode(answers))

    calls: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    stack: list[str] = []
    walking = False

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            where = _where(frame.f_code.co_filename)
            calls[where] += 1
            caller = stack[-1] if stack else None
            if where.startswith(OURS) and caller is not None and caller.startswith(OURS) and caller != where:
                entries[where] += 1
            stack.append(where)
        elif event == "return" and stack:
            stack.pop()

    one_get()  # warm
    walking = True
    written = transport.written
    sys.setprofile(profile)
    one_get()
    sys.setprofile(None)
    if transport.written == written:
        raise SystemExit("the GET was not answered")
    ours = {k: v for k, v in calls.items() if k.startswith(OURS)}
    print(f"calls: {sum(calls.values())} ({sum(ours.values())} in our code), files touched: {len(calls)} "
          f"({len(ours)} ours), module switches: {sum(entries.values())}")  # fmt: skip
    for where, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {n:4d} calls  {entries.get(where, 0):3d} entries  {where}")
    ctx.term()


if __name__ == "__main__":
    asyncio.run(_walk())
