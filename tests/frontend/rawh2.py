"""A raw HTTP/2 client connection (h2 over a real socket) for tests that need what httpx will not do:
resets, floods, raw frames, the exact events; and the usual set-up of such a test (``h2_setup``)."""

from __future__ import annotations

import asyncio
from typing import Any

from h2 import events as h2e
from h2.config import H2Configuration
from h2.connection import H2Connection


async def h2_setup(start_frontend: Any, worker_for: Any, *, fe_kw: Any = None, **worker_kw: Any) -> Any:
    """(front end, its ScriptedWorker, a RawH2 connected to it): ``fe_kw`` configure the front end,
    ``worker_kw`` the worker; the connection is closed after the test (``close_all``)."""
    fe = await start_frontend(**(fe_kw or {}))
    w = await worker_for(fe, **worker_kw)
    return fe, w, await RawH2.open(fe.port)


class RawH2:
    """An h2 client over a real socket, for what httpx will not do (resets, floods, raw frames)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.events: list[h2e.Event] = []
        self.closed = False

    @classmethod
    async def open(cls, port: int) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        _opened.append(raw)
        raw.conn.initiate_connection()
        await raw.flush()
        return raw

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def request(self, path: str = "/", *, method: str = "GET", end: bool = True) -> int:
        """A stream's HEADERS, not sent yet (``flush``): its stream id."""
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":authority", "x"), (":path", path)]
        self.conn.send_headers(sid, headers, end_stream=end)
        return sid

    async def get(self, path: str = "/") -> int:
        """A GET, sent: its stream id."""
        sid = self.request(path)
        await self.flush()
        return sid

    async def until(self, pred: Any, timeout: float = 10.0) -> list[h2e.Event]:
        """Read until ``pred(events)`` holds (or the connection ends)."""
        async with asyncio.timeout(timeout):
            while not pred(self.events) and not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    self.closed = True
                    break
                for event in self.conn.receive_data(data):
                    self.events.append(event)
                    if isinstance(event, h2e.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                await self.flush()
        return self.events

    def of(self, kind: type, sid: int | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (sid is None or e.stream_id == sid)]

    def close(self) -> None:
        self.writer.close()


_opened: list[RawH2] = []


def close_all() -> None:
    """Close every connection a test opened (conftest calls it after each test)."""
    while _opened:
        _opened.pop().close()
