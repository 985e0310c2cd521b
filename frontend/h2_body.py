"""One HTTP/2 request body, read the way ``upload.Upload`` reads aiohttp's StreamReader.

The session feeds the client's DATA here (``feed``); ``Upload`` takes it with
``read_nowait`` / ``readchunk`` as the worker's credit allows, and every byte
taken is reported to ``on_read``, which reopens the client's HTTP/2 window by
that much (``H2Session.consumed``). So the client may be ahead of the worker
by one stream window, never more: the same bound the socket buffer gives on
HTTP/1, and memory stays bounded with a slow app.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class H2Body:
    __slots__ = ("_chunks", "_eof", "_exc", "_waiter", "_on_read", "total_bytes")

    def __init__(self, on_read: Callable[[int], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self._eof = False  # the client sent END_STREAM
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_read = on_read
        self.total_bytes = 0  # (the access log's bytes in)

    def feed(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.append(data)
            self.total_bytes += len(data)
        if end:
            self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The stream was reset: a reader waiting, or coming, gets ``exc``."""
        self._exc = exc
        self._chunks.clear()
        self._wake()

    # ------------------------------------------------- StreamReader's surface (what Upload uses)

    def is_eof(self) -> bool:
        return self._eof

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def read_nowait(self, n: int = -1) -> bytes:
        if not self._chunks:
            return b""
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._on_read(len(data))
        return data

    async def readany(self) -> bytes:
        while not self._chunks and not self._eof and self._exc is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._exc is not None:
            raise self._exc
        if not self._chunks:
            return b""
        data = self._chunks.popleft()
        self._on_read(len(data))
        return data

    async def readchunk(self) -> tuple[bytes, bool]:
        """One piece, as StreamReader.readchunk (what ``Upload.pump`` reads): (data, False)."""
        return await self.readany(), False

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
