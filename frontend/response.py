"""One request's response on its HTTP/1 connection: the one place response bytes are written.

``connection.Connection`` makes a ``ResponseWriter`` per parsed request,
strictly one at a time per connection (pipelined requests wait their turn,
so responses leave in order), and hands it to the request path
(``http_requests``). Every byte the client gets for that request leaves
through it, whatever wrote it:

* ``whole``: the common response, one RESPONSE with the whole body: head
  (``http1.whole_head``) and body in one ``transport.write``. False when the
  general path must decide.
* ``respond``: every other worker response (streamed, trailers, HEAD,
  1xx/204/304, the worker's own framing headers, pathsend), head from
  ``http1.head``.
* ``error``: the front end's own short responses before any status line went
  out (``parse_errors.error``: the one builder).

One failure handling for all of them: the client gone -> stop writing
(the stream ends, the worker hears DISCONNECT); the worker failing after the
status line -> ``abort`` (the client sees a truncated body, never a second
status); a body unlike its Content-Length -> the declared bytes at most, then
the connection closes at once (``_cut``). ``finish`` is called exactly once
and tells the connection to log the request and go on. Status and byte counts
are kept here for the access log and metrics.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any

from aiohttp.http import HttpVersion11

from wire import events as ev
from wire.events import ResetCode

from . import http1, pathsend
from .parse_errors import error
from .responses import describe_failure
from .upload import CONTINUE

if TYPE_CHECKING:
    from .connection import Connection
    from .pool import WorkerRecord
    from .stream import HttpStream

log = logging.getLogger(__name__)

COPY_MAX_BYTES = 16 * 1024  # a body piece up to this is copied into one write; larger: writelines


class ResponseWriter:
    __slots__ = (
        "conn", "message", "payload", "started", "rid", "worker", "client", "client_set",
        "status", "bytes_out", "keep_alive", "pending", "done",
    )  # fmt: skip

    def __init__(self, conn: Connection, message: Any, payload: Any) -> None:
        self.conn = conn
        self.message = message  # aiohttp's RawRequestMessage (method, path, version, headers, raw_headers...)
        self.payload = payload  # aiohttp's StreamReader (EMPTY_PAYLOAD without a body)
        self.started = perf_counter()
        self.rid = ""  # the request id (access_log.request_id), set by the request path
        self.worker: WorkerRecord | None = None  # for the access log (a replay moves it)
        self.client: tuple[str, int] | None = None  # from trusted proxy headers, when client_set
        self.client_set = False
        self.status = 0  # 0: nothing written yet
        self.bytes_out = 0
        self.keep_alive = not message.should_close
        # What is under way for this request (its task, or its stream awaiting the worker's first
        # event): cancelled when the client goes away (``lost``).
        self.pending: Any = None
        self.done = False

    @property
    def closing(self) -> bool:
        """The client is gone (or going): writes would be lost."""
        transport = self.conn.transport
        return transport is None or transport.is_closing()

    # ------------------------------------------------------------ responses

    def whole(self, stream: HttpStream, start: ev.Response) -> bool:
        """A whole response (one RESPONSE, a body to send): head and body in one write.
        False when ``respond`` must do it."""
        if start.more_body or start.trailers or self.message.method == "HEAD":
            return False
        status = start.status
        if status < 200 or status in (204, 304):
            return False
        keep_alive = self.keep_alive and not stream.upload.unread_continue
        body = start.body
        head = http1.whole_head(self.message.version, status, start.headers, body, self.rid, keep_alive)
        if head is None:
            return False
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            log.debug("client went away before stream %d's response", stream.stream_id)
            stream.fail()
            return True
        if len(body) <= COPY_MAX_BYTES:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        self.status, self.keep_alive, self.bytes_out = status, keep_alive, len(head) + len(body)
        stream.done()  # (no credit: the response is complete, the stream closes)
        return True

    async def respond(self, stream: HttpStream, start: ev.Response) -> None:
        """Any response of the worker's (see the module docstring)."""
        message = self.message
        trailers = bool(
            start.trailers
            and message.version == HttpVersion11
            and "trailers" in message.headers.get("TE", "").lower()
        )
        whole = not start.more_body and not start.trailers
        try:
            head = http1.head(
                message.version, message.method, start.status, start.headers, self.rid,
                # the client will not send the body it was never asked for: close after
                keep_alive=self.keep_alive and not stream.upload.unread_continue,
                whole_length=len(start.body) if whole else None, trailers=trailers,
            )  # fmt: skip
        except http1.BadHead as exc:
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad response head: {exc}")
            log.warning("stream %d: worker sent a bad response head: %s", stream.stream_id, exc)
            self.error(502)
            return
        if self.closing:
            log.debug("client went away before stream %d's response", stream.stream_id)
            stream.fail()
            return
        self.status, self.keep_alive = start.status, head.keep_alive
        stream.responding()
        try:
            if await self._body(stream, head, start):
                await self._end(stream, head, start)
        except ConnectionError:
            log.debug("client went away during stream %d", stream.stream_id)
            stream.fail()
            self.keep_alive = False

    def error(self, status: int, *, retry_after_s: float | None = None, keep_alive: bool = False) -> None:
        """One of our own responses, before any worker status line went out."""
        if self.closing or self.status:
            return
        keep_alive = keep_alive and self.keep_alive
        self._write(error(status, self.message.version, self.rid, keep_alive=keep_alive,
                          retry_after_s=retry_after_s))  # fmt: skip
        self.status, self.keep_alive = status, keep_alive

    async def write_continue(self) -> None:
        self._write(CONTINUE)

    async def drain(self) -> None:
        """Wait until the client reads, when the transport's buffer is over its high-water mark
        (a slow reader: before the connection's next request). The client gone: nothing to wait for."""
        try:
            await self.conn.drain()
        except ConnectionError:
            log.debug("client went away after its response")

    def abort(self, stream: HttpStream | None = None, why: Any = None) -> None:
        """After the status line (or a bug of ours): break the connection so the client sees a
        truncated body."""
        if stream is not None:
            log.warning("stream %d aborted mid-response: %s", stream.stream_id, describe_failure(why))
            stream.fail()
        self.keep_alive = False
        transport = self.conn.transport
        if transport is not None:
            transport.abort()

    def finish(self) -> None:
        """The response is complete (or abandoned): log it, and let the connection go on."""
        if not self.done:
            self.done = True
            self.conn.response_done(self)

    def lost(self) -> None:
        """The client went away before ``finish`` (connection.py): whatever is under way stops."""
        self.done = True
        pending = self.pending
        if pending is not None:
            pending.cancel()

    # ------------------------------------------------------------ the general path

    async def _body(self, stream: HttpStream, head: http1.Head, start: ev.Response) -> bool:
        """Write the head and the body; False when done already or cut short."""
        body, more = start.body, start.more_body
        pending = head.data  # the head leaves with the first body bytes
        left = head.length  # the declared Content-Length (None: no length to keep to)
        if not more and not start.trailers and (left is None or left == len(body)):  # one write
            self._write_body(pending, b"" if head.empty else body, False)
            stream.consumed(len(body))
            stream.done()
            return False
        sent = 0
        while True:
            n = len(body)
            if left is not None and n > left - sent:  # more than declared: send what was, then cut
                self._write_body(pending, body[: left - sent], False)
                self._cut(stream, left, sent + n, more)
                return False
            if body and not head.empty:
                self._write_body(pending, body, head.chunked)
                pending = b""
                await self.conn.drain()
            elif pending:
                self._write(pending)  # a streamed response's head must not wait for data
                pending = b""
            sent += n
            if body:
                stream.consumed(n)
            if not more:
                if left is not None and sent < left:
                    self._cut(stream, left, sent, False)
                    return False
                return True
            item = await stream.next()
            if type(item) is ev.Body:
                body, more = item.body, item.more_body
            elif type(item) is ev.Pathsend:
                return await self._send_file(stream, head, item.path, sent)
            else:
                self.abort(stream, item)
                return False

    async def _end(self, stream: HttpStream, head: http1.Head, start: ev.Response) -> None:
        fields: list[tuple[bytes, bytes]] = []
        while start.trailers:  # the tracker let only TRAILERS* through after the body
            item = await stream.next()
            if type(item) is not ev.Trailers:
                self.abort(stream, item)
                return
            fields.extend(item.headers)
            if not item.more_trailers:
                break
        if head.chunked:
            self._write(http1.last_chunk(fields if head.trailers else []))
        stream.done()

    async def _send_file(self, stream: HttpStream, head: http1.Head, path: str, sent: int) -> bool:
        """PATHSEND (PROTOCOL §11): the file's bytes as the body's rest."""
        refused = pathsend.refused(stream.worker, path)
        if refused is not None:
            stream.reset(ResetCode.PROTOCOL_ERROR, refused)
            self.abort(stream, refused)
            return False
        left = head.length
        try:
            for chunk in pathsend.chunks(path, head.empty):
                if left is not None and len(chunk) > left - sent:
                    self._write_body(b"", chunk[: left - sent], False)
                    self._cut(stream, left, sent + len(chunk), True)
                    return False
                self._write_body(b"", chunk, head.chunked)
                sent += len(chunk)
                await self.conn.drain()
        except OSError as exc:
            log.warning("stream %d: cannot send %s: %s", stream.stream_id, path, exc)
            stream.reset(ResetCode.INTERNAL_ERROR, "pathsend failed")
            self.abort(stream, "pathsend failed")
            return False
        if left is not None and sent < left:
            self._cut(stream, left, sent, False)
            return False
        return True

    def _cut(self, stream: HttpStream, declared: int, got: int, more: bool) -> None:
        """A body unlike its Content-Length: the declared bytes at most went out; close at once, so
        the client neither waits for the rest nor reads the excess as the next response."""
        log.warning(
            "stream %d: response body of %s%d bytes for a Content-Length of %d: closing the connection",
            stream.stream_id, "over " if more else "", got, declared,
        )  # fmt: skip
        stream.fail()
        self.keep_alive = False
        transport = self.conn.transport
        if transport is not None:
            transport.close()  # after what was written

    # ------------------------------------------------------------ bytes

    def _write(self, data: bytes) -> None:
        """Raises ConnectionResetError when the client is gone."""
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        transport.write(data)
        self.bytes_out += len(data)

    def _write_body(self, prefix: bytes, data: Any, chunked: bool) -> None:
        """``prefix`` (the head, or nothing) and a piece of body, chunk-framed if ``chunked``:
        small pieces joined into one write, large ones handed to the transport uncopied."""
        parts = (prefix, b"%x\r\n" % len(data), data, b"\r\n") if chunked else (prefix, data)
        if len(data) <= COPY_MAX_BYTES:
            self._write(b"".join(parts))
            return
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        transport.writelines(parts)
        self.bytes_out += sum(len(part) for part in parts)
