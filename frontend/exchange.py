"""One request and its response on a client connection: what the bridge reads and writes through.

``connection.Connection`` creates an ``Exchange`` per parsed request, strictly
one at a time per connection (pipelined requests wait their turn, so
responses leave in order), and hands it to the bridge. The bridge writes the
response through it (``write`` / ``drain`` / ``abort``) and calls
``finish`` exactly once, which tells the connection to log the request and
go on (next request, keep-alive or close). Status and byte counts are kept
here for the access log and metrics.

Per request this is the only object the front end adds on top of the
parser's message and payload; no aiohttp web object is built.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, Any

COPY_MAX_BYTES = 16 * 1024  # a body piece up to this is copied into one write; larger: writelines

if TYPE_CHECKING:
    from .connection import Connection
    from .pool import WorkerRecord


class Exchange:
    __slots__ = (
        "conn", "message", "payload", "started", "rid", "worker", "client", "client_set",
        "status", "bytes_out", "keep_alive", "task", "done", "on_lost", "stream",
    )  # fmt: skip

    def __init__(self, conn: Connection, message: Any, payload: Any) -> None:
        self.conn = conn
        self.message = message  # aiohttp's RawRequestMessage (method, path, version, headers, raw_headers...)
        self.payload = payload  # aiohttp's StreamReader (EMPTY_PAYLOAD without a body)
        self.started = perf_counter()
        self.rid = ""  # the request id (access_log.request_id), set by the bridge
        self.worker: WorkerRecord | None = None  # for the access log (a replay moves it)
        self.client: tuple[str, int] | None = None  # from trusted proxy headers, when client_set
        self.client_set = False
        self.status = 0  # 0: nothing written yet
        self.bytes_out = 0
        self.keep_alive = not message.should_close
        self.task: asyncio.Task[Any] | None = None  # the bridge's task for this request, if any
        self.done = False
        self.on_lost: Any = None  # on_lost(self) if the client goes away before finish (no task case)
        self.stream: Any = None  # the bridge's stream while on_lost is set

    @property
    def method(self) -> str:
        return self.message.method

    @property
    def closing(self) -> bool:
        """The client is gone (or going): writes would be lost."""
        transport = self.conn.transport
        return transport is None or transport.is_closing()

    # ------------------------------------------------------------- writing

    def write(self, data: bytes) -> None:
        """Raises ConnectionResetError when the client is gone."""
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        transport.write(data)
        self.bytes_out += len(data)

    def write_body(self, prefix: bytes, data: Any, chunked: bool) -> None:
        """``prefix`` (the head, or nothing) and a piece of body, chunk-framed if ``chunked``:
        small pieces joined into one write, large ones handed to the transport uncopied."""
        parts = (prefix, b"%x\r\n" % len(data), data, b"\r\n") if chunked else (prefix, data)
        if len(data) <= COPY_MAX_BYTES:
            self.write(b"".join(parts))
            return
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        transport.writelines(parts)
        self.bytes_out += sum(len(part) for part in parts)

    async def drain(self) -> None:
        """Wait until the client reads, when the transport's buffer is over its high-water mark."""
        await self.conn.drain()

    def abort(self) -> None:
        """After the status line: break the connection so the client sees a truncated body."""
        self.keep_alive = False
        transport = self.conn.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        """Close the connection once what was written has gone out (a response cut short)."""
        self.keep_alive = False
        transport = self.conn.transport
        if transport is not None:
            transport.close()

    def finish(self) -> None:
        """The response is complete (or abandoned): log it, and let the connection go on."""
        if not self.done:
            self.done = True
            self.conn.exchange_done(self)
