"""A raw HTTP/1.1 client connection for tests that need the exact bytes on the wire."""

from __future__ import annotations

import asyncio

TIMEOUT_S = 5.0


class RawConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = cls(reader, writer)
        _opened.append(conn)
        return conn

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until(self, marker: bytes) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(marker), TIMEOUT_S)

    async def read_head(self) -> bytes:
        return await self.read_until(b"\r\n\r\n")

    async def read_exactly(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT_S)

    async def read_to_close(self) -> bytes:
        return await asyncio.wait_for(self.reader.read(), TIMEOUT_S)

    async def read_chunked_body(self) -> tuple[bytes, bytes]:
        """(body, trailer block) of a chunked body."""
        body = b""
        while True:
            size = int((await self.read_until(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                break
            body += await self.read_exactly(size)
            assert await self.read_exactly(2) == b"\r\n"
        trailers = b""
        while (line := await self.read_until(b"\r\n")) != b"\r\n":
            trailers += line
        return body, trailers

    def close(self) -> None:
        self.writer.close()


_opened: list[RawConn] = []


def close_all() -> None:
    """Close every connection a test opened and left open (conftest calls it after each test): one
    collected unclosed warns from StreamWriter.__del__, an unraisable-exception warning, an error here."""
    while _opened:
        _opened.pop().close()


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def header(head: bytes, name: bytes) -> list[bytes]:
    values = []
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            values.append(value.strip())
    return values
