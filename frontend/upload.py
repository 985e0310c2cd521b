"""The request body's way to the worker, under the worker's credit (PROTOCOL §7, §8).

Theory of operation. Bytes read from the client wait in ``pending`` until the
stream's send window is open; ``flush`` sends them synchronously (a post on
the channel needs no await), so a CREDIT arriving in the dispatcher's callback
moves the body on without waking any task. Reading the client is the only
part that must await: ``pump`` does it, and only runs (as a task) when the
body was not already whole in memory when the request was dispatched. While
the window is closed ``pump`` does not read, so aiohttp's buffer fills and it
stops reading the client socket: memory stays bounded by the window.

Everything sent is also kept in ``kept`` until the worker shows the stream
reached the app (Rule 20): then a REFUSED or a lost worker can replay it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any

from aiohttp.streams import EMPTY_PAYLOAD

from wire.flow import SendWindow

CHUNK_BYTES = 64 * 1024  # Rule 16: split large bodies rather than wait for the whole window
# What the client sent in one read goes on as one BODY up to this: aiohttp hands over at most a
# few hundred KiB at a time, so the split copies nothing (each 64 KiB slice was a copy).
SPLIT_BYTES = 1024 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class UploadState(Enum):
    READING = "reading"  # more of the client's body is still to be read
    READ = "read"  # the client's body is all read; some may still be pending
    SENT = "sent"  # the last body event (more_body=false) was sent
    STOPPED = "stopped"  # abandoned: the stream ended first or the body was too large


class BodyTooLarge(Exception):
    pass


def new_upload(content: Any, *, expect_continue: bool, max_body_bytes: int | None) -> Upload | NoBody:
    """The request's body: ``NoBody`` when the request has none (aiohttp's EMPTY_PAYLOAD: most
    requests), so they pay for no buffers, windows or pump."""
    if content is EMPTY_PAYLOAD:
        return NoBody()
    return Upload(content=content, expect_continue=expect_continue, max_body_bytes=max_body_bytes)


def _unbound(body: bytes, more_body: bool) -> None:
    raise RuntimeError("Upload.send is not set")


def split(data: bytes) -> list[bytes]:
    if len(data) <= SPLIT_BYTES:
        return [data] if data else []
    view = memoryview(data)
    return [bytes(view[i : i + SPLIT_BYTES]) for i in range(0, len(data), SPLIT_BYTES)]


class Upload:
    """One request body; ``send(body, more_body)`` is set by the owning stream."""

    has_body = True  # (NoBody: False, and the stream skips the calls that do nothing)

    __slots__ = (
        "state", "pending", "window", "kept", "whole", "expect_continue",
        "send", "_content", "_limit", "_read_bytes", "_window_waiter",
    )  # fmt: skip

    def __init__(
        self,
        *,
        content: Any,  # aiohttp StreamReader
        expect_continue: bool,
        max_body_bytes: int | None,
    ) -> None:
        self._content = content
        self.send: Callable[[bytes, bool], None] = _unbound  # the owning stream's BODY sender
        self._limit = max_body_bytes
        self.expect_continue = expect_continue
        self.pending: deque[bytes] = deque()
        self.window = SendWindow(0)
        self.kept: list[bytes] | None = []
        self.whole: bytes | None = None  # the entire body, when one REQUEST carried it
        self._read_bytes = 0
        self._window_waiter: asyncio.Future[None] | None = None
        self.state = UploadState.READING
        if not expect_continue:
            self._take_buffered()

    def _take_buffered(self) -> None:
        """Whatever aiohttp already holds; a small request is whole after this."""
        content = self._content
        data = content.read_nowait(-1)
        if data:
            self._add(data)
        if content.is_eof() and content.at_eof():
            self.state = UploadState.READ

    def _add(self, data: bytes) -> None:
        self._read_bytes += len(data)
        if self._limit is not None and self._read_bytes > self._limit:
            self.state = UploadState.STOPPED
            raise BodyTooLarge(f"request body over {self._limit} bytes")
        self.pending.extend(split(data))

    @property
    def needs_pump(self) -> bool:
        return self.state is UploadState.READING

    @property
    def unread_continue(self) -> bool:
        """The client waits for a 100 Continue it never got: the body will not come (close after)."""
        return self.expect_continue and self.needs_pump

    # ------------------------------------------------------------- sending

    def first(self, window_bytes: int) -> tuple[bytes, bool]:
        """(body, more_body) for a REQUEST on a fresh window; replays resend what was kept."""
        if self.kept:
            self.pending.extendleft(reversed(self.kept))
        elif self.kept is None and self.whole is not None:  # an idempotent replay
            self.pending.append(self.whole)
        if self.state is UploadState.SENT and self.pending:
            self.state = UploadState.READ  # all read, to be sent again
        self.kept = []
        self.window = SendWindow(0 if self.expect_continue else window_bytes)
        body = b""
        if self.pending and self.window.open:
            body = self.pending.popleft()
            self.window.spend(len(body))
            self.kept.append(body)
        more = bool(self.pending) or self.state is UploadState.READING
        if not more and self.state is UploadState.READ:
            self.state = UploadState.SENT
            self.whole = body
        return body, more

    def flush(self) -> None:
        """Send pending chunks while the window allows; end the body when all is sent."""
        pending, window, kept = self.pending, self.window, self.kept
        while pending and window.open:
            chunk = pending.popleft()
            window.spend(len(chunk))
            if kept is not None:
                kept.append(chunk)
            last = not pending and self.state is UploadState.READ
            self.send(chunk, not last)
            if last:
                self.state = UploadState.SENT
                return
        if not pending and self.state is UploadState.READ:
            # The body ended after its last chunk went out with more_body=true.
            self.state = UploadState.SENT
            self.send(b"", False)
            return
        waiter = self._window_waiter
        if waiter is not None and not waiter.done() and window.open:
            waiter.set_result(None)

    def grant(self, n: int) -> None:
        self.window.grant(n)
        self.flush()

    def hold(self) -> None:
        """Send nothing until ``first`` opens a new window (the stream is being replayed)."""
        self.window = SendWindow(0)

    def delivered(self) -> None:
        """The worker showed the stream reached the app: stop keeping bytes (Rule 20)."""
        self.kept = None

    @property
    def replayable(self) -> bool:
        return self.kept is not None

    def stop(self) -> None:
        if self.state is not UploadState.SENT:
            self.state = UploadState.STOPPED
        self.pending.clear()
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()

    # ------------------------------------------------------------- reading

    async def pump(self, write_continue: Callable[[], Any]) -> None:
        """Read the client's body while the window is open (a task; see the module doc).

        Raises:
            BodyTooLarge: past ``max_body_bytes``.
        """
        content = self._content
        continued = not self.expect_continue
        while self.state is UploadState.READING:
            if not self.window.open or self.pending:
                await self._window_opened()
                continue
            if not continued:
                continued = True
                await write_continue()
            data, _ = await content.readchunk()  # one buffered piece: readany joins them (a copy)
            if data:
                self._add(data)
            if content.at_eof() and self.state is UploadState.READING:
                self.state = UploadState.READ
            self.flush()

    async def _window_opened(self) -> None:
        loop = asyncio.get_running_loop()
        self._window_waiter = loop.create_future()
        try:
            await self._window_waiter
        finally:
            self._window_waiter = None


class NoBody:
    """``Upload``'s interface for a request without a body: REQUEST carries it all
    (``more_body`` false), nothing is read, kept or sent later; replayable until delivered,
    as an Upload whose whole body went out in its REQUEST."""

    __slots__ = ("send", "replayable")
    has_body = False
    expect_continue = False
    needs_pump = False
    unread_continue = False
    whole = b""

    def __init__(self) -> None:
        self.send: Callable[[bytes, bool], None] = _unbound
        self.replayable = True

    def first(self, window_bytes: int) -> tuple[bytes, bool]:
        return b"", False

    def flush(self) -> None:
        return None

    def grant(self, n: int) -> None:
        return None

    def hold(self) -> None:
        return None

    def delivered(self) -> None:
        self.replayable = False

    def stop(self) -> None:
        return None

    async def pump(self, write_continue: Callable[[], Any]) -> None:
        return None
