#!/usr/bin/env python3
"""A reference row for bench.py: aiohttp's low-level server answering hello world itself.

No forwarding at all: the floor of a front end built on aiohttp's web layer (web.Server,
BaseRequest, Response), on uvloop, as zasgi's front end runs. Usage: aiohttp_bare.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web


async def hello(request: web.BaseRequest) -> web.Response:
    return web.Response(body=b"Hello, world!", content_type="text/plain")


async def main(port: int) -> None:
    runner = web.ServerRunner(web.Server(hello), handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
