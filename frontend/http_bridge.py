"""A parsed request <-> a wire HTTP stream: the one place worker trouble becomes an HTTP status.

Theory of operation. ``connection.Connection`` hands each request to
``HttpBridge.start`` as an ``exchange.Exchange`` (aiohttp's parsed message
and body reader, no web objects). ``start`` builds the REQUEST fields from
the raw request (header bytes untouched, the path exactly as sent), takes a
worker slot and sends the stream, synchronously. When the body was whole and
a slot free (the common case) that is all: the worker's first event comes
back through ``_first_event`` in the dispatcher's callback, and a whole
response is written from there, so such a request costs no task and no
future. Otherwise (a wait for a slot, a body still arriving, a streamed
response, a failure or replay) one task per request (``_serve``) turns the
worker's events into the client's response, written straight to the
transport (``http1`` builds the bytes); an upload still arriving from the
client gets a pump task too (see ``upload``). WebSocket upgrades reach
``handle_upgrade`` through aiohttp (upgrade.py) and go to ``ws_bridge`` with
the same head fields.

The common response arrives whole (one RESPONSE): ``_write_whole`` writes
head (``http1.whole_head``) and body in one ``transport.write``. Anything
else (streamed bodies, trailers, HEAD, 1xx/204/304, framing headers from the
worker, a bad field) takes the general path (``_respond``, ``http1.head``).

What the client sees when things go wrong (PROTOCOL §9):
* before the status line: 503 + Retry-After (no worker in time), 502 +
  ``connection: close`` (worker lost, worker broke the protocol, replay
  impossible), 500 (the worker reset the stream), 413/400 (the body);
* after it: the connection is aborted, so a chunked body never gets its last
  chunk and a fixed-length one is short; never a second status.
A client that goes away is not an error: the connection cancels the task,
the worker gets DISCONNECT, logged at debug.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.streams import EMPTY_PAYLOAD

from wire import events as ev
from wire.events import ResetCode

from . import http1
from .access_log import CLIENT, REQUEST_ID, STARTED, AccessLog, request_id
from .config import FrontendConfig
from .dispatch import Dispatcher
from .exchange import COPY_MAX_BYTES, Exchange
from .metrics import Metrics
from .proxy import Origin, TrustedProxies, carries_proxy_headers, resolve
from .responses import describe_failure, error_response
from .slots import NoCapacity
from .stream import HttpStream, Local, Phase
from .tls import TlsInfo
from .upload import CHUNK_BYTES, CONTINUE, BodyTooLarge, new_upload
from .ws_bridge import WsBridge

log = logging.getLogger(__name__)

_DONE, _FAILED, _RESPONDING = Phase.DONE, Phase.FAILED, Phase.RESPONDING  # (stream.py says why)

_VERSIONS = {HttpVersion11: "1.1", HttpVersion10: "1.0"}
_FAILURE_STATUS = {
    Local.WORKER_LOST: 502,
    Local.VIOLATION: 502,
    Local.BODY_TOO_LARGE: 413,
    Local.BAD_BODY: 400,
}


class HttpBridge:
    def __init__(
        self, config: FrontendConfig, dispatcher: Dispatcher, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._config = config
        self._tls = TlsInfo(config.tls, ssl_context) if ssl_context is not None else None
        self._scheme = "https" if ssl_context is not None else "http"
        self._proxies = TrustedProxies(config.proxy.trusted) if config.proxy.enabled else None
        self._dispatcher = dispatcher
        self._root_path = config.root_path
        self._max_body = config.http.max_body_bytes
        self.metrics = Metrics(dispatcher, websockets_open=lambda: self.websocket.open_count)
        self.access = AccessLog(self.metrics, enabled=config.access_log, log_format=config.log_format,
                                frontend=config.name)  # fmt: skip
        self.websocket = WsBridge(config, dispatcher, self.access)
        self._active = 0  # HTTP requests in flight; shutdown closes WebSockets once it is 0
        self._try_acquire = dispatcher.slots.try_acquire  # (bound once: per-request calls)
        self._on_first = self._first_event
        self._on_lost = self._lost
        self._idle: asyncio.Future[None] | None = None

    def start(self, ex: Exchange) -> None:
        """A request's turn on its connection: dispatch it now, answer it later.

        When the body is whole and a worker slot is free (the common case) no task is created:
        the worker's first event comes back through ``_first_event``, in the dispatcher's
        callback, and a whole response is written from there. Anything else gets a task."""
        message = ex.message
        ex.rid = request_id(message.headers)
        if message.version != HttpVersion11 and _bad_framing(message):
            _reply_error(ex, 400)
            ex.finish()
            return
        try:
            stream = self._new_stream(ex)
        except BodyTooLarge:
            _reply_error(ex, 413)
            ex.finish()
            return
        self._active += 1
        worker = self._try_acquire()
        if worker is None:
            self._spawn(ex, stream, self._queued(ex, stream))
            return
        self.metrics.dispatched_at_once()
        stream.dispatch(worker)
        ex.worker = worker
        if stream.upload.needs_pump:  # the body is still arriving: a task reads it
            self._spawn(ex, stream, self._answer(ex, stream))
            return
        # No closures: the stream and the exchange name each other until the first event (or
        # the client's departure) unlinks them.
        stream.exchange, stream.on_first = ex, self._on_first
        ex.stream, ex.on_lost = stream, self._on_lost

    def _first_event(self, stream: HttpStream, item: Any) -> None:
        """The worker's first event for a request dispatched without a task (dispatcher's callback)."""
        ex: Exchange = stream.exchange
        ex.on_lost = ex.stream = None
        try:
            if type(item) is ev.Response and _write_whole(ex, stream, item):
                if not ex.conn._paused:
                    self._release(stream)
                    ex.finish()  # the connection starts its next request from here
                    return
                work: Any = _drain(ex, stream)  # a slow reader: wait before the next request
            else:  # streamed, a failure, a replay...: a task takes over from this event
                stream.queue(item)
                work = self._answer(ex, stream)
        except Exception:  # a bug of ours must not reach the dispatcher's callback
            log.exception("stream %d: request failed", stream.stream_id)
            stream.phase = _FAILED
            ex.abort()
            self._release(stream)
            return
        self._spawn(ex, stream, work)

    def _spawn(self, ex: Exchange, stream: HttpStream, work: Any) -> None:
        """The request's task, doing ``work`` (a coroutine) and then ending stream and exchange."""
        task = asyncio.get_running_loop().create_task(self._serve(ex, stream, work))
        ex.task = task
        task.add_done_callback(lambda done: self._unstarted(done, ex, stream, work))

    def _unstarted(self, task: asyncio.Task[None], ex: Exchange, stream: HttpStream, work: Any) -> None:
        """A task cancelled (its client gone) before its first step never ran ``_serve``'s
        ``finally``: end the stream here, or its slot would stay taken."""
        if ex.task is task:
            ex.task = None
            work.close()
            stream.phase = _FAILED
            self._release(stream)

    def _lost(self, ex: Exchange) -> None:
        """The client went away while a task-less request waited for the worker."""
        stream: HttpStream = ex.stream
        ex.on_lost = ex.stream = None
        log.debug("client went away from stream %d", stream.stream_id)
        stream.phase = _FAILED
        self._release(stream)

    def _release(self, stream: HttpStream) -> None:
        stream.finish()  # (which also unbinds the stream from its body: no reference cycle)
        self._active -= 1
        if not self._active and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def handle_upgrade(self, request: web.BaseRequest) -> Any:
        """aiohttp's handler for a connection handed over with a WebSocket upgrade (upgrade.py)."""
        request[STARTED] = perf_counter()
        rid = request[REQUEST_ID] = request_id(request.headers)
        if not self.websocket.wants(request):  # (connection.py hands over upgrades only)
            resp = error_response(400, close=True)
        else:
            client, server = _transport_addresses(request.transport)
            head, proxied = self._head(
                request.method, request.raw_path, request.version, request.headers, request.raw_headers,
                client, server,
            )  # fmt: skip
            if proxied is not None:
                request[CLIENT] = proxied[0]
            resp = await self.websocket.handle(request, head, self._ext(rid, request.transport, None))
        if not resp.prepared:  # our own error responses
            resp.headers["X-Request-ID"] = rid
            resp.force_close()
        return resp

    async def wait_idle(self, timeout_s: float) -> None:
        """Until no HTTP request is in flight, or ``timeout_s`` (shutdown: then WebSockets close)."""
        if self._active:
            self._idle = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle), timeout_s)
            except TimeoutError:
                log.warning("%d HTTP requests still in flight after %.1fs", self._active, timeout_s)
            finally:
                self._idle = None

    def _ext(self, rid: str, transport: Any, conn: Any) -> dict[str, Any]:
        ext: dict[str, Any] = {"request_id": rid}
        if self._tls is not None:
            if conn is None:
                ext["tls"] = self._tls.extension(transport)
            else:  # the same for every request of a connection
                if conn.tls is None:
                    conn.tls = self._tls.extension(transport)
                ext["tls"] = conn.tls
        return ext

    # ----------------------------------------------------------- request

    def _new_stream(self, ex: Exchange) -> HttpStream:
        message = ex.message
        content = ex.payload
        headers = message.headers
        if self._max_body is not None:
            length = headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > self._max_body:
                raise BodyTooLarge(f"Content-Length {length} over {self._max_body}")
        expect = (
            content is not EMPTY_PAYLOAD  # (most requests: nothing more to ask)
            and message.version == HttpVersion11
            and not content.is_eof()
            and headers.get("Expect", "").lower() == "100-continue"
        )
        upload = new_upload(content, expect_continue=expect, max_body_bytes=self._max_body)
        conn = ex.conn
        client, server = conn.addresses
        head, proxied = self._head(
            message.method, message.path, message.version, headers, message.raw_headers, client, server
        )
        if proxied is not None:
            ex.client, ex.client_set = proxied[0], True
        ext = {"request_id": ex.rid} if self._tls is None else self._ext(ex.rid, conn.transport, conn)
        return HttpStream(self._dispatcher, head, ext, upload)  # (by position: no kwargs dict)

    def _head(
        self,
        method: str,
        raw_path: str,
        version: Any,
        headers: Any,
        raw_headers: Any,
        client: Any,
        server: Any,
    ) -> tuple[tuple[Any, ...], tuple[Any] | None]:
        """REQUEST's fields from method to server, in wire order; and (client,) when trusted proxy
        headers named the client (the access log's client, as the scope's)."""
        target = raw_path.encode("utf-8", "surrogateescape")  # the bytes as sent
        path, _, query = target.partition(b"?")
        if not path.startswith(b"/") and b"://" in path:  # absolute-form target
            authority_path = path.split(b"://", 1)[1]
            slash = authority_path.find(b"/")
            path = authority_path[slash:] if slash >= 0 else b"/"
        http_version = _VERSIONS.get(version) or f"{version.major}.{version.minor}"
        scheme = self._scheme
        proxies = self._proxies
        proxied = None
        if (
            proxies is not None
            and client is not None
            and proxies.trusts(client[0])
            and carries_proxy_headers(headers)  # most requests: nothing to resolve
        ):
            origin = resolve(Origin(scheme, client, server), headers, proxies)
            scheme, client, server = origin.scheme, origin.client, origin.server
            proxied = (client,)
        return (
            method,
            scheme,
            http_version,
            path,
            query,
            self._root_path,
            raw_headers,
            client,
            server,
        ), proxied

    async def _serve(self, ex: Exchange, stream: HttpStream, work: Any) -> None:
        """A request's task: ``work`` (``_queued``, ``_answer``...), then the stream and exchange end."""
        try:
            await work
        except asyncio.CancelledError:
            log.debug("client went away from stream %d", stream.stream_id)
            stream.phase = _FAILED
            raise
        except Exception:  # a bug of ours: the connection must still end cleanly
            log.exception("stream %d: request failed", stream.stream_id)
            stream.phase = _FAILED
            ex.abort()
        finally:
            ex.task = None
            self._release(stream)
        ex.finish()

    async def _queued(self, ex: Exchange, stream: HttpStream) -> None:
        """No slot was free: wait for one in the queue (or 503), then answer."""
        queued_at = perf_counter()
        try:
            stream.dispatch(await self._dispatcher.acquire())
        except NoCapacity as exc:
            self.metrics.queue_waited(perf_counter() - queued_at)
            log.info("no worker for %s %s: %s", ex.method, ex.message.path, exc)
            _reply_error(ex, 503, retry_after_s=self._config.queue.timeout_s, keep_alive=True)
            return
        self.metrics.queue_waited(perf_counter() - queued_at)
        await self._answer(ex, stream)

    async def _answer(self, ex: Exchange, stream: HttpStream) -> None:
        """From dispatch to the end of the response: replays, failures, the general path."""
        if stream.upload.needs_pump:
            stream.start_pump(lambda: _write_continue(ex))
        while True:
            ex.worker = stream.worker  # for the access log (a replay moves it)
            item = await stream.next()
            if type(item) is ev.Response:
                if not _write_whole(ex, stream, item):
                    await self._respond(ex, stream, item)
                elif ex.conn._paused:  # a slow reader: wait before the next request
                    await _drain(ex, stream)
                return
            if not stream.can_replay(item):
                _failure(ex, stream, item)
                return
            log.info("replaying stream %d on another worker (%s)", stream.stream_id, describe_failure(item))
            try:
                stream.replay(await self._dispatcher.acquire(replay=True))
            except NoCapacity:
                _reply_error(ex, 503, retry_after_s=self._config.queue.timeout_s, keep_alive=True)
                return

    # ----------------------------------------------------------- response

    async def _respond(self, ex: Exchange, stream: HttpStream, start: ev.Response) -> None:
        message = ex.message
        upload = stream.upload
        trailers = bool(
            start.trailers
            and message.version == HttpVersion11
            and "trailers" in message.headers.get("TE", "").lower()
        )
        whole = not start.more_body and not start.trailers
        try:
            head = http1.head(
                message.version, message.method, start.status, start.headers, ex.rid,
                # the client will not send the body it was never asked for: close after
                keep_alive=ex.keep_alive and not (upload.expect_continue and upload.needs_pump),
                whole_length=len(start.body) if whole else None, trailers=trailers,
            )  # fmt: skip
        except http1.BadHead as exc:
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad response head: {exc}")
            log.warning("stream %d: worker sent a bad response head: %s", stream.stream_id, exc)
            _reply_error(ex, 502)
            return
        if ex.closing:
            log.debug("client went away before stream %d's response", stream.stream_id)
            stream.phase = _FAILED
            return
        ex.status, ex.keep_alive = start.status, head.keep_alive
        stream.phase = _RESPONDING
        try:
            if await self._body(ex, stream, head, start):
                await self._end(ex, stream, head, start)
        except ConnectionError:
            log.debug("client went away during stream %d", stream.stream_id)
            stream.phase = _FAILED
            ex.keep_alive = False

    async def _body(self, ex: Exchange, stream: HttpStream, head: http1.Head, start: ev.Response) -> bool:
        """Write the head and the body; False when done already or aborted."""
        body, more = start.body, start.more_body
        pending = head.data  # the head leaves with the first body bytes
        left = head.length  # of the declared Content-Length (None: no length to keep to)
        if not more and not start.trailers and (left is None or left == len(body)):  # one write
            ex.write_body(pending, b"" if head.empty else body, False)
            stream.consumed(len(body))
            stream.phase = _DONE
            return False
        sent = 0
        while True:
            n = len(body)
            if left is not None and n > left - sent:  # more than declared: send what was, then cut
                ex.write_body(pending, body[: left - sent], False)
                _cut(ex, stream, left, sent + n, more)
                return False
            if body and not head.empty:
                ex.write_body(pending, body, head.chunked)
                pending = b""
                await ex.drain()
            elif pending:
                ex.write(pending)  # a streamed response's head must not wait for data
                pending = b""
            sent += n
            if body:
                stream.consumed(n)
            if not more:
                if left is not None and sent < left:
                    _cut(ex, stream, left, sent, False)
                    return False
                return True
            item = await stream.next()
            if type(item) is ev.Body:
                body, more = item.body, item.more_body
            elif type(item) is ev.Pathsend:
                return await self._send_file(ex, stream, head, item.path, sent)
            else:
                _abort(ex, stream, item)
                return False

    async def _end(self, ex: Exchange, stream: HttpStream, head: http1.Head, start: ev.Response) -> None:
        fields: list[tuple[bytes, bytes]] = []
        while start.trailers:  # the tracker let only TRAILERS* through after the body
            item = await stream.next()
            if type(item) is not ev.Trailers:
                _abort(ex, stream, item)
                return
            fields.extend(item.headers)
            if not item.more_trailers:
                break
        if head.chunked:
            ex.write(http1.last_chunk(fields if head.trailers else []))
        stream.phase = _DONE

    async def _send_file(
        self, ex: Exchange, stream: HttpStream, head: http1.Head, path: str, sent: int
    ) -> bool:
        """PATHSEND (PROTOCOL §11): only from a worker on this host that negotiated it."""
        worker = stream.worker
        if worker is None or "pathsend" not in worker.features or not os.path.isabs(path):
            stream.reset(ResetCode.PROTOCOL_ERROR, "pathsend not allowed")
            _abort(ex, stream, Local.VIOLATION)
            return False
        try:
            left = head.length
            with open(path, "rb") as f:  # local disk, 64 KiB at a time; sendfile is a later step
                while not head.empty and (chunk := f.read(CHUNK_BYTES)):
                    if left is not None and len(chunk) > left - sent:
                        ex.write_body(b"", chunk[: left - sent], False)
                        _cut(ex, stream, left, sent + len(chunk), True)
                        return False
                    ex.write_body(b"", chunk, head.chunked)
                    sent += len(chunk)
                    await ex.drain()
            if left is not None and sent < left:
                _cut(ex, stream, left, sent, False)
                return False
        except OSError as exc:
            log.warning("stream %d: cannot send %s: %s", stream.stream_id, path, exc)
            stream.reset(ResetCode.INTERNAL_ERROR, "pathsend failed")
            _abort(ex, stream, Local.VIOLATION)
            return False
        return True


def _write_whole(ex: Exchange, stream: HttpStream, start: ev.Response) -> bool:
    """A whole response (one RESPONSE, a body to send): head and body in one transport write.
    False when ``_respond``'s general path must do it."""
    if start.more_body or start.trailers or ex.message.method == "HEAD":
        return False
    status = start.status
    if status < 200 or status in (204, 304):
        return False
    upload = stream.upload
    keep_alive = ex.keep_alive and not (upload.expect_continue and upload.needs_pump)
    body = start.body
    head = http1.whole_head(ex.message.version, status, start.headers, body, ex.rid, keep_alive)
    if head is None:
        return False
    transport = ex.conn.transport
    if transport is None or transport.is_closing():
        log.debug("client went away before stream %d's response", stream.stream_id)
        stream.phase = _FAILED
        return True
    if len(body) <= COPY_MAX_BYTES:
        transport.write(head + body)
    else:
        transport.writelines((head, body))
    ex.status, ex.keep_alive, ex.bytes_out = status, keep_alive, len(head) + len(body)
    stream.phase = _DONE  # (no credit: the response is complete, the stream closes)
    return True


def _reply_error(
    ex: Exchange, status: int, *, retry_after_s: float | None = None, keep_alive: bool = False
) -> None:
    """One of our own responses, before any worker status line went out."""
    if ex.closing or ex.status:
        return
    keep_alive = keep_alive and ex.keep_alive
    ex.write(
        http1.error(status, ex.message.version, ex.rid, keep_alive=keep_alive, retry_after_s=retry_after_s)
    )
    ex.status, ex.keep_alive = status, keep_alive


def _failure(ex: Exchange, stream: HttpStream, item: Any) -> None:
    stream.phase = _FAILED
    if type(item) is ev.Reset:
        log.warning("stream %d reset by the worker before the response: %s",
                    stream.stream_id, describe_failure(item))  # fmt: skip
        _reply_error(ex, 502 if item.code == ResetCode.REFUSED else 500)
        return
    log.warning("stream %d failed before the response: %s", stream.stream_id, item.value)
    _reply_error(ex, _FAILURE_STATUS[item])


def _abort(ex: Exchange, stream: HttpStream, why: Any) -> None:
    """After the status line: break the connection so the client sees a truncated body."""
    log.warning("stream %d aborted mid-response: %s", stream.stream_id, describe_failure(why))
    stream.phase = _FAILED
    ex.abort()


def _cut(ex: Exchange, stream: HttpStream, declared: int, got: int, more: bool) -> None:
    """A body unlike its Content-Length: the declared bytes at most went out; close at once, so
    the client neither waits for the rest nor reads the excess as the next response."""
    log.warning(
        "stream %d: response body of %s%d bytes for a Content-Length of %d: closing the connection",
        stream.stream_id, "over " if more else "", got, declared,
    )  # fmt: skip
    stream.phase = _FAILED
    ex.close()


async def _drain(ex: Exchange, stream: HttpStream) -> None:
    try:
        await ex.drain()
    except ConnectionError:
        log.debug("client went away during stream %d", stream.stream_id)


async def _write_continue(ex: Exchange) -> None:
    ex.write(CONTINUE)


def _bad_framing(message: Any) -> bool:
    """HTTP/0.9, or HTTP/1.0 with Transfer-Encoding (RFC 9112 §6.1: its framing is faulty)."""
    return message.version != HttpVersion10 or "Transfer-Encoding" in message.headers


def _transport_addresses(transport: Any) -> tuple[Any, Any]:
    if transport is None:
        return None, None
    return _address(transport.get_extra_info("peername")), _address(transport.get_extra_info("sockname"))


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
