"""One HTTP/2 stream <-> one wire stream: the HTTP/2 twin of http_bridge's request task.

Theory of operation. ``h2_connection`` makes an ``H2Exchange`` for each
``StreamOpened`` and runs ``run`` as the stream's task. The request goes to a
worker as a ``stream.HttpStream``, exactly as an HTTP/1 request does (same
dispatcher, slots, queue and 503, replays after a lost worker, upload under
the worker's credit; the body comes from ``h2_body.H2Body``). The worker's
events become calls on the connection's ``H2Session``: RESPONSE ->
``respond``, BODY -> ``send_body``, TRAILERS -> ``send_trailers`` (HEADERS
after the body), PATHSEND -> the file read and sent as the client's window
allows. Response bytes are credited back to the worker only once they left
the session for the socket (``sent``), and not while the socket is full
(the connection holds them in ``held`` until it drains): a slow client bounds
memory per stream by the worker's window, as on HTTP/1.

What the client sees when things go wrong mirrors HTTP/1 (PROTOCOL §9):
before the response, our own 502/503/500/413/400 on that stream; after it,
RST_STREAM INTERNAL_ERROR on that stream only. A client's RST_STREAM cancels
the task: the worker gets DISCONNECT for that stream only.

TODO(i15): the head and the dispatch/replay/failure steps repeat
http_bridge's; once issue 15's ``request_head.build`` and ``HttpRequests``
land, this module keeps only the HTTP/2 sink.
"""

from __future__ import annotations

import asyncio
import logging
import os
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from wire import events as ev
from wire.events import ResetCode

from .access_log import request_id
from .h2_body import H2Body
from .h2_session import BadResponse, Misuse, StreamOpened
from .proxy import Origin, carries_proxy_headers, resolve
from .responses import describe_failure
from .slots import NoCapacity
from .stream import HttpStream, Local, Phase
from .upload import CHUNK_BYTES, BodyTooLarge, NoBody, Upload

if TYPE_CHECKING:
    from .h2_connection import H2Protocol
    from .pool import WorkerRecord

log = logging.getLogger(__name__)

_FAILED, _RESPONDING, _DONE = Phase.FAILED, Phase.RESPONDING, Phase.DONE
_FAILURE_STATUS = {
    Local.WORKER_LOST: 502,
    Local.VIOLATION: 502,
    Local.BODY_TOO_LARGE: 413,
    Local.BAD_BODY: 400,
}
HTTP2 = (2, 0)  # the access log's "HTTP/2.0"


class Message(NamedTuple):
    """What the access log reads of a request (aiohttp's RawRequestMessage's names)."""

    method: str
    path: str
    version: tuple[int, int]
    headers: CIMultiDictProxy[str]


class H2Exchange:
    __slots__ = (
        "conn", "sid", "stream", "body", "task", "status", "bytes_out", "started", "rid", "worker",
        "client", "client_set", "held", "message", "payload", "_window", "_opened",
    )  # fmt: skip

    def __init__(self, conn: H2Protocol, opened: StreamOpened) -> None:
        self.conn = conn
        self.sid = opened.stream_id
        self.started = perf_counter()
        self.task: asyncio.Task[None] | None = None
        self.status = 0
        self.bytes_out = 0
        self.held = 0  # response bytes sent while the socket was full: credited once it drains
        self.worker: WorkerRecord | None = None
        self.client: tuple[str, int] | None = None
        self.client_set = False
        self._window: asyncio.Event | None = None  # set on ``sent`` while a file waits for the window
        self.body: H2Body | None
        self.payload: H2Body | None  # (the access log reads its total_bytes)
        headers = CIMultiDictProxy(
            CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in opened.headers)
        )
        target = opened.raw_path + (b"?" + opened.query_string if opened.query_string else b"")
        self.message = Message(opened.method, target.decode("latin-1"), HTTP2, headers)
        self.rid = request_id(headers)
        # The body reader exists from the start (DATA may come in the same read as HEADERS); the
        # upload and the wire stream are made by ``start``, once the read's events are all in, so
        # a small body already here goes in the REQUEST itself.
        self.body = self.payload = None if opened.end else H2Body(self._read)
        self._opened: StreamOpened | None = opened
        # Made by ``start``; set before the task that uses it runs.
        self.stream: HttpStream = None  # type: ignore[assignment]

    def _head(self, opened: StreamOpened, headers: CIMultiDictProxy[str]) -> tuple[Any, ...]:
        shared = self.conn.shared
        client, server = self.conn.addresses
        scheme = shared.scheme
        proxies = shared.proxies
        if proxies is not None and client is not None and proxies.trusts(client[0]):
            if carries_proxy_headers(headers):
                origin = resolve(Origin(scheme, client, server), headers, proxies)
                scheme, client, server = origin.scheme, origin.client, origin.server
                self.client, self.client_set = client, True
        return (opened.method, scheme, "2", opened.raw_path, opened.query_string, shared.root_path,
                opened.headers, client, server)  # fmt: skip

    def _ext(self) -> dict[str, Any]:
        ext: dict[str, Any] = {"request_id": self.rid}
        tls = self.conn.tls_extension()
        if tls is not None:
            ext["tls"] = tls
        return ext

    # ------------------------------------------------------------- from the connection

    def start(self) -> None:
        """Make the wire stream and start its task (or answer 413 at once for a declared body
        over the limit)."""
        shared = self.conn.shared
        max_body = shared.max_body_bytes
        opened, self._opened = self._opened, None
        assert opened is not None  # (start runs once)
        upload: Upload | NoBody = NoBody()
        if self.body is not None:
            length = self.message.headers.get("Content-Length", "")
            try:
                if max_body is not None and length.isdigit() and int(length) > max_body:
                    raise BodyTooLarge(length)
                # Expect: 100-continue works as on HTTP/1: the 100 (an informational HEADERS) goes
                # out when the app first reads the body, and the worker is told it was asked.
                expect = self.message.headers.get("Expect", "").lower() == "100-continue"
                upload = Upload(content=self.body, expect_continue=expect, max_body_bytes=max_body)
            except BodyTooLarge:
                self._error(413)  # (the session stops the rest of the body: RST_STREAM NO_ERROR)
                self.conn.exchange_done(self)
                return
        head = self._head(opened, self.message.headers)
        self.stream = HttpStream(shared.dispatcher, head, self._ext(), upload)
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def _continue(self) -> None:
        try:
            self.conn.session.inform(self.sid, 100, ())
        except (Misuse, BadResponse):
            return  # answered or reset meanwhile
        self.conn.flush()

    def _read(self, n: int) -> None:
        self.conn.session.consumed(self.sid, n)
        self.conn.flush()

    def cancel(self) -> None:
        """The client reset the stream (or the connection went)."""
        if self.body is not None:
            self.body.fail(ConnectionResetError("stream reset by the client"))
        if self.task is not None:
            self.task.cancel()

    def sent(self, n: int) -> None:
        """``n`` response bytes left the session: credit the worker, unless the socket is full."""
        self.bytes_out += n
        if self.conn.paused:
            self.held += n
        else:
            self.stream.consumed(n)
        if self._window is not None:
            self._window.set()

    def drained(self) -> None:
        if self.held:
            n, self.held = self.held, 0
            self.stream.consumed(n)

    # ------------------------------------------------------------- the task

    async def run(self) -> None:
        stream = self.stream
        shared = self.conn.shared
        try:
            worker = shared.dispatcher.try_acquire()
            if worker is None:
                queued_at = perf_counter()
                try:
                    worker = await shared.dispatcher.acquire()
                except NoCapacity as exc:
                    log.info("no worker for %s %s: %s", self.message.method, self.message.path, exc)
                    self._error(503, retry_after_s=shared.queue_timeout_s)
                    return
                finally:
                    shared.metrics.queue_waited(perf_counter() - queued_at)
            else:
                shared.metrics.dispatched_at_once()
            stream.dispatch(worker)
            await self._answer()
        except asyncio.CancelledError:
            log.debug("client reset HTTP/2 stream %d (wire stream %d)", self.sid, stream.stream_id)
            stream.phase = _FAILED
            raise
        except BodyTooLarge:
            self._error(413)
        except Exception:  # a bug of ours: this stream ends, the connection goes on
            log.exception("HTTP/2 stream %d: request failed", self.sid)
            stream.phase = _FAILED
            self._reset()
        finally:
            stream.finish()
            self.conn.exchange_done(self)

    async def _answer(self) -> None:
        stream = self.stream
        if stream.upload.needs_pump:
            stream.start_pump(self._continue)
        while True:
            self.worker = stream.worker
            item = await stream.next()
            if type(item) is ev.Response:
                await self._respond(item)
                return
            if not stream.can_replay(item):
                self._failure(item)
                return
            log.info("replaying stream %d on another worker (%s)", stream.stream_id, describe_failure(item))
            try:
                stream.replay(await self.conn.shared.dispatcher.acquire(replay=True))
            except NoCapacity:
                self._error(503, retry_after_s=self.conn.shared.queue_timeout_s)
                return

    async def _respond(self, start: ev.Response) -> None:
        stream, session, sid = self.stream, self.conn.session, self.sid
        body_done = not start.more_body
        try:
            sent = session.respond(sid, start.status, start.headers, start.body,
                                   end=body_done and not start.trailers)  # fmt: skip
        except BadResponse as exc:
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad response head: {exc}")
            log.warning("stream %d: worker sent a bad response head: %s", stream.stream_id, exc)
            self._error(502)
            return
        except Misuse:
            return  # the stream is gone (reset as the response came)
        self.status = start.status
        stream.phase = _RESPONDING
        self._after_send(sent)
        while not body_done:
            item = await stream.next()
            if type(item) is ev.Body:
                body_done = not item.more_body
                self._after_send(session.send_body(sid, item.body, end=body_done and not start.trailers))
            elif type(item) is ev.Pathsend:
                if not await self._send_file(item.path, end=not start.trailers):
                    return
                body_done = True
            else:
                self._abort(item)
                return
        if start.trailers:
            fields: list[tuple[bytes, bytes]] = []
            while True:
                item = await stream.next()
                if type(item) is not ev.Trailers:
                    self._abort(item)
                    return
                fields.extend(item.headers)
                if not item.more_trailers:
                    break
            session.send_trailers(sid, tuple(fields))
            self.conn.flush()
        stream.phase = _DONE

    def _after_send(self, sent: int) -> None:
        if sent:
            self.sent(sent)
        self.conn.flush()

    async def _send_file(self, path: str, *, end: bool) -> bool:
        """PATHSEND (PROTOCOL §11): as on HTTP/1, from a worker on this host that negotiated it."""
        stream, session = self.stream, self.conn.session
        worker = stream.worker
        if worker is None or "pathsend" not in worker.features or not os.path.isabs(path):
            stream.reset(ResetCode.PROTOCOL_ERROR, "pathsend not allowed")
            self._abort(Local.VIOLATION)
            return False
        self._window = asyncio.Event()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    self._after_send(session.send_body(self.sid, chunk))
                    while session.pending(self.sid) >= CHUNK_BYTES or self.conn.paused:
                        self._window.clear()
                        await self.conn.wait_writable(self._window)
            self._after_send(session.send_body(self.sid, b"", end=end))
        except OSError as exc:
            log.warning("stream %d: cannot send %s: %s", stream.stream_id, path, exc)
            stream.reset(ResetCode.INTERNAL_ERROR, "pathsend failed")
            self._abort(Local.VIOLATION)
            return False
        finally:
            self._window = None
        return True

    # ------------------------------------------------------------- failures

    def _failure(self, item: Any) -> None:
        self.stream.phase = _FAILED
        if type(item) is ev.Reset:
            log.warning("stream %d reset by the worker before the response: %s",
                        self.stream.stream_id, describe_failure(item))  # fmt: skip
            self._error(502 if item.code == ResetCode.REFUSED else 500)
            return
        log.warning("stream %d failed before the response: %s", self.stream.stream_id, item.value)
        self._error(_FAILURE_STATUS[item])

    def _abort(self, why: Any) -> None:
        """After the response head: reset this stream only (the client sees it cut)."""
        log.warning("stream %d aborted mid-response: %s", self.stream.stream_id, describe_failure(why))
        self.stream.phase = _FAILED
        self._reset()

    def _reset(self) -> None:
        self.conn.session.reset(self.sid)
        self.conn.flush()

    def _error(self, status: int, *, retry_after_s: float | None = None) -> None:
        """One of our own short responses, if nothing was sent on the stream yet."""
        if self.status:
            return
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)),
                   (b"x-request-id", self.rid.encode())]  # fmt: skip
        if retry_after_s is not None:
            headers.append((b"retry-after", b"%d" % max(1, round(retry_after_s))))
        try:
            self.conn.session.respond(self.sid, status, tuple(headers), body, end=True)
        except (Misuse, BadResponse):
            return  # the stream is gone
        self.status = status
        self.bytes_out += len(body)
        self.conn.flush()
