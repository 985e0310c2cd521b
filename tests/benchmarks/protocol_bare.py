#!/usr/bin/env python3
"""A reference row for bench.py: hello world from a bare asyncio.Protocol on aiohttp's C parser.

No web.Request / Response / RequestHandler, one task per request (as a front end that awaits a
worker needs), one ``transport.write`` per response: the floor of issue 8's design (b), a
front end on aiohttp's ``HttpRequestParser`` with protocol-level writes. Usage: protocol_bare.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvloop
from aiohttp._http_parser import HttpRequestParser  # the C parser aiohttp's server uses

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


class Hello(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._parser = HttpRequestParser(self, self._loop, 2**16, max_line_size=8190, max_field_size=8190)

    def data_received(self, data: bytes) -> None:
        messages, _, _ = self._parser.feed_data(data)
        for message, _payload in messages:
            self._loop.create_task(self._answer(message))

    async def _answer(self, message: Any) -> None:
        self._transport.write(RESPONSE)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(Hello, "127.0.0.1", port, backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
