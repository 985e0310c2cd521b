"""One HTTP/2 stream's request and response: the HTTP/2 writer of the request path.

``h2_connection`` makes an ``H2Exchange`` for each ``StreamOpened`` and hands
it to ``http_requests.HttpRequests.start``, exactly as an HTTP/1 connection
hands its ``response.ResponseWriter``: the same request head, worker slot,
queue and 503, dispatch without a task when the response comes whole, replays
after a lost worker, upload under the worker's credit (the body is read from
``h2_body.H2Body``). This class is the sink (``whole``/``respond``/``error``/
``abort``/``finish``): the worker's events become calls on the connection's
``H2Session``: RESPONSE -> ``respond``, BODY -> ``send_body``, TRAILERS ->
``send_trailers`` (HEADERS after the body), PATHSEND -> the file, sent as the
client's window allows.

Response bytes are credited back to the worker only once they left the session
for the socket (``sent``), and not while the socket is full (the connection
holds them in ``held`` until it drains): a slow client bounds memory per
stream by the worker's window, as on HTTP/1.

What the client sees when things go wrong mirrors HTTP/1 (PROTOCOL §9):
before the response, our own 502/503/500/413/400 on that stream; after it,
RST_STREAM INTERNAL_ERROR on that stream only (HTTP/1 has to abort the whole
connection). A client's RST_STREAM is ``lost``: whatever is under way stops,
the worker gets DISCONNECT for that stream only.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict, CIMultiDictProxy

from wire import events as ev
from wire.events import ResetCode

from . import pathsend
from .h2_body import H2Body
from .h2_session import BadResponse, Misuse, StreamOpened
from .responses import describe_failure
from .upload import CHUNK_BYTES

if TYPE_CHECKING:
    from .h2_connection import H2Protocol
    from .pool import WorkerRecord
    from .stream import HttpStream

log = logging.getLogger(__name__)

HTTP2 = (2, 0)  # request_head writes it "2"; the access log "HTTP/2.0"


class Message(NamedTuple):
    """The request as the request path reads it (aiohttp's RawRequestMessage's names)."""

    method: str
    path: str  # the target as sent (surrogate-escaped, as aiohttp gives it)
    version: tuple[int, int]
    headers: CIMultiDictProxy[str]
    raw_headers: tuple[tuple[bytes, bytes], ...]


class H2Exchange:
    __slots__ = (
        "conn", "sid", "message", "payload", "body", "started", "rid", "worker", "client", "client_set",
        "status", "bytes_out", "pending", "done", "held", "_window", "_stream",
    )  # fmt: skip

    def __init__(self, conn: H2Protocol, opened: StreamOpened) -> None:
        self.conn = conn
        self.sid = opened.stream_id
        self.started = perf_counter()
        headers = CIMultiDictProxy(
            CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in opened.headers)
        )
        target = opened.raw_path + (b"?" + opened.query_string if opened.query_string else b"")
        self.message = Message(
            opened.method, target.decode("utf-8", "surrogateescape"), HTTP2, headers, opened.headers
        )
        # The body reader exists from the start: DATA may come in the same read as HEADERS, and
        # the request path starts once the read's events are all in (a small body goes in REQUEST).
        self.body = None if opened.end else H2Body(self._read)
        self.payload: Any = EMPTY_PAYLOAD if self.body is None else self.body
        self.rid = ""  # set by the request path
        self.worker: WorkerRecord | None = None  # for the access log (a replay moves it)
        self.client: tuple[str, int] | None = None  # from trusted proxy headers, when client_set
        self.client_set = False
        self.status = 0  # 0: nothing sent yet
        self.bytes_out = 0
        self.pending: Any = None  # the request's task, or its stream awaiting the first event
        self.done = False
        self.held = 0  # response bytes sent while the socket was full: credited once it drains
        self._window: asyncio.Event | None = None  # set on ``sent`` while a file waits for the window
        self._stream: HttpStream | None = None  # while a streamed response goes out (its credit)

    # ------------------------------------------------------------ from the connection

    def _read(self, n: int) -> None:
        self.conn.session.consumed(self.sid, n)
        self.conn.flush()

    def sent(self, n: int) -> None:
        """``n`` response bytes left the session: credit the worker, unless the socket is full."""
        self.bytes_out += n
        stream = self._stream
        if stream is not None:
            if self.conn.paused:
                self.held += n
            else:
                stream.consumed(n)
        if self._window is not None:
            self._window.set()

    def drained(self) -> None:
        stream = self._stream
        if self.held and stream is not None:
            n, self.held = self.held, 0
            stream.consumed(n)

    # ------------------------------------------------------------ the writer (http_requests calls these)

    def whole(self, stream: HttpStream, start: ev.Response) -> bool:
        """A whole response (one RESPONSE): HEADERS and DATA with END_STREAM. False when
        ``respond`` must do it (streamed, trailers, a head HTTP/2 cannot carry)."""
        if start.more_body or start.trailers:
            return False
        try:
            self.conn.session.respond(self.sid, start.status, start.headers, start.body, end=True)
        except BadResponse:
            return False  # respond() says why, and answers 502
        except Misuse:  # the client reset the stream as the answer came
            stream.fail()
            return True
        self.status = start.status
        self.bytes_out += len(start.body)
        stream.done()  # (no credit: the response is complete, the stream closes)
        self.conn.flush()
        return True

    async def respond(self, stream: HttpStream, start: ev.Response) -> None:
        session, sid = self.conn.session, self.sid
        body_done = not start.more_body
        try:
            sent = session.respond(sid, start.status, start.headers, start.body,
                                   end=body_done and not start.trailers)  # fmt: skip
        except BadResponse as exc:
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad response head: {exc}")
            log.warning("stream %d: worker sent a bad response head: %s", stream.stream_id, exc)
            self.error(502)
            return
        except Misuse:
            stream.fail()  # the stream is gone (reset as the response came)
            return
        self.status = start.status
        stream.responding()
        self._stream = stream
        self._after_send(sent)
        while not body_done:
            item = await stream.next()
            if type(item) is ev.Body:
                body_done = not item.more_body
                self._after_send(session.send_body(sid, item.body, end=body_done and not start.trailers))
            elif type(item) is ev.Pathsend:
                if not await self._send_file(stream, item.path, end=not start.trailers):
                    return
                body_done = True
            else:
                self.abort(stream, item)
                return
        if start.trailers:
            fields: list[tuple[bytes, bytes]] = []
            while True:
                item = await stream.next()
                if type(item) is not ev.Trailers:
                    self.abort(stream, item)
                    return
                fields.extend(item.headers)
                if not item.more_trailers:
                    break
            session.send_trailers(sid, tuple(fields))
            self.conn.flush()
        stream.done()

    def error(self, status: int, *, retry_after_s: float | None = None, keep_alive: bool = False) -> None:
        """One of our own short responses, if nothing was sent on the stream yet."""
        if self.status:
            return
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
        if self.rid:
            headers.append((b"x-request-id", self.rid.encode()))
        if retry_after_s is not None:
            headers.append((b"retry-after", b"%d" % max(1, round(retry_after_s))))
        try:
            self.conn.session.respond(self.sid, status, tuple(headers), body, end=True)
        except (Misuse, BadResponse):
            return  # the stream is gone
        self.status = status
        self.bytes_out += len(body)
        self.conn.flush()

    async def write_continue(self) -> None:
        """Expect: 100-continue: an informational 100 when the app first reads the body."""
        try:
            self.conn.session.inform(self.sid, 100, ())
        except (Misuse, BadResponse):
            return  # answered or reset meanwhile
        self.conn.flush()

    async def drain(self) -> None:
        return None  # (the session holds what the client's window does not take: never needed)

    @property
    def must_drain(self) -> bool:
        return False  # no next request waits behind this one on the connection

    def abort(self, stream: HttpStream | None = None, why: Any = None) -> None:
        """After the response head (or a bug of ours): reset this stream only."""
        if stream is not None:
            log.warning("stream %d aborted mid-response: %s", stream.stream_id, describe_failure(why))
            stream.fail()
        self.conn.session.reset(self.sid)
        self.conn.flush()

    def finish(self) -> None:
        """The response is complete (or abandoned): log it; the connection forgets the stream."""
        self._stream = None
        if not self.done:
            self.done = True
            self.conn.exchange_done(self)

    def lost(self) -> None:
        """The client reset the stream (or the connection went): whatever is under way stops."""
        if self.body is not None:
            self.body.fail(ConnectionResetError("stream reset by the client"))
        pending = self.pending
        if pending is not None:
            pending.cancel()
        self.finish()

    # ------------------------------------------------------------ helpers

    def _after_send(self, sent: int) -> None:
        if sent:
            self.sent(sent)
        self.conn.flush()

    async def _send_file(self, stream: HttpStream, path: str, *, end: bool) -> bool:
        """PATHSEND (PROTOCOL §11): as on HTTP/1, from a worker on this host that negotiated it."""
        session = self.conn.session
        refused = pathsend.refused(stream.worker, path)
        if refused is not None:
            stream.reset(ResetCode.PROTOCOL_ERROR, refused)
            self.abort(stream, refused)
            return False
        self._window = asyncio.Event()
        try:
            for chunk in pathsend.chunks(path, False):
                self._after_send(session.send_body(self.sid, chunk))
                while session.pending(self.sid) >= CHUNK_BYTES or self.conn.paused:
                    self._window.clear()
                    await self.conn.wait_writable(self._window)
            self._after_send(session.send_body(self.sid, b"", end=end))
        except OSError as exc:
            log.warning("stream %d: cannot send %s: %s", stream.stream_id, path, exc)
            stream.reset(ResetCode.INTERNAL_ERROR, "pathsend failed")
            self.abort(stream, "pathsend failed")
            return False
        finally:
            self._window = None
        return True
