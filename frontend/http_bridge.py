"""aiohttp request <-> wire HTTP stream: the one place worker trouble becomes an HTTP status.

Theory of operation. ``HttpBridge.handle`` is aiohttp's low-level handler
(``web.Server``, handler_cancellation on). Per request it builds the REQUEST
fields from the raw request (header bytes untouched, the path exactly as
sent), takes a worker slot (or 503), sends the stream, then turns the
worker's events into the client's response. The handler task is the only
task a request costs, except an upload still arriving from the client, which
gets a pump task (see ``upload``). A WebSocket upgrade goes to ``ws_bridge``
with the same head fields.

The common response arrives whole (one RESPONSE): ``_write_whole`` writes the
head aiohttp would have written (``_whole_head``, from the worker's header
bytes) and the body in one ``transport.write`` and returns a ``Written``
stand-in, so no aiohttp response object is built. Anything else (streamed
bodies, trailers, HEAD, 1xx/204/304, framing headers from the worker, a bad
field) takes the general path through ``_WorkerResponse`` (``_respond``).

What the client sees when things go wrong (PROTOCOL §9):
* before the status line: 503 + Retry-After (no worker in time), 502 +
  ``connection: close`` (worker lost, worker broke the protocol, replay
  impossible), 500 (the worker reset the stream), 413/400 (the body);
* after it: the connection is aborted, so a chunked body never gets its last
  chunk and a fixed-length one is short; never a second status.
A client that goes away is not an error: the worker gets DISCONNECT, logged
at debug.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.web_response import REASON_PHRASES

from wire import events as ev
from wire.events import ResetCode

from .access_log import CLIENT, REQUEST_ID, STARTED, WORKER, request_id
from .config import FrontendConfig
from .connection import Connection, bad_request
from .dispatch import Dispatcher
from .metrics import Metrics
from .proxy import Origin, TrustedProxies, carries_proxy_headers, resolve
from .responses import describe_failure, error_response, str_headers
from .slots import NoCapacity
from .stream import HttpStream, Local, Phase
from .tls import TlsInfo
from .upload import CHUNK_BYTES, CONTINUE, BodyTooLarge, new_upload
from .ws_bridge import WsBridge

log = logging.getLogger(__name__)

_VERSIONS = {HttpVersion11: "1.1", HttpVersion10: "1.0"}
_BAD_FIELD = re.compile(rb"[\x00\r\n]")
# The one-write path (``_whole_head``): what aiohttp's StreamResponse would add, as bytes.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_DEFAULTED = frozenset({b"x-request-id", b"content-type", b"date", b"server"})
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # what aiohttp refuses in a field (HTAB is fine)
_SERVER_LINE = b"Server: %s\r\n" % SERVER_SOFTWARE.encode()
_STATUS_LINES: dict[tuple[Any, int], bytes] = {}
_CONCAT_MAX_BYTES = 16 * 1024  # head + body copied into one bytes below this; writelines above
_DRAIN_ABOVE_BYTES = 64 * 1024  # aiohttp's StreamWriter LIMIT
_FAILURE_STATUS = {
    Local.WORKER_LOST: 502,
    Local.VIOLATION: 502,
    Local.BODY_TOO_LARGE: 413,
    Local.BAD_BODY: 400,
}


class _WorkerResponse(web.StreamResponse):
    # As web.Response does: hold the head back so it leaves with the first body bytes.
    _send_headers_immediately = False


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
        self.websocket = WsBridge(config, dispatcher)
        self.metrics = Metrics(dispatcher, websockets_open=lambda: self.websocket.open_count)
        self._active = 0  # HTTP handlers running; shutdown closes WebSockets once it is 0
        self._idle: asyncio.Future[None] | None = None

    async def handle(self, request: web.BaseRequest) -> Any:
        """The request id in (access_log.request_id), the ``x-request-id`` header out.

        One coroutine per request down to the worker's answer (``_run``); a whole response is
        written from there synchronously (``_write_whole``)."""
        request[STARTED] = perf_counter()
        rid = request[REQUEST_ID] = request_id(request)
        if request.version != HttpVersion11 and _bad_framing(request):
            resp = bad_request()
        elif self.websocket.wants(request):
            resp = await self.websocket.handle(request, self._head(request), self._ext(request))
        else:
            try:
                stream = self._new_stream(request)
            except BodyTooLarge:
                stream = None
                resp = error_response(413, close=True)
            if stream is not None:
                self._active += 1
                try:
                    resp = await self._run(request, stream)
                except asyncio.CancelledError:
                    log.debug("client went away from stream %d", stream.stream_id)
                    stream.phase = Phase.FAILED
                    raise
                finally:
                    stream.finish()
                    self._active -= 1
                    if not self._active and self._idle is not None and not self._idle.done():
                        self._idle.set_result(None)
        if not resp.prepared:  # our own error responses; a worker's response got it in _respond
            resp.headers["X-Request-ID"] = rid
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

    def _ext(self, request: web.BaseRequest) -> dict[str, Any]:
        ext: dict[str, Any] = {"request_id": request[REQUEST_ID]}
        if self._tls is not None:
            ext["tls"] = self._tls.extension(request.transport)
        return ext

    # ----------------------------------------------------------- request

    def _new_stream(self, request: web.BaseRequest) -> HttpStream:
        content = request.content
        length = request.content_length
        if self._max_body is not None and length is not None and length > self._max_body:
            raise BodyTooLarge(f"Content-Length {length} over {self._max_body}")
        expect = (
            request.version == HttpVersion11
            and not content.is_eof()
            and request.headers.get("Expect", "").lower() == "100-continue"
        )
        upload = new_upload(content, expect_continue=expect, max_body_bytes=self._max_body)
        return HttpStream(self._dispatcher, head=self._head(request), ext=self._ext(request), upload=upload)

    def _head(self, request: web.BaseRequest) -> tuple[Any, ...]:
        version = request.version
        target = request.raw_path.encode("utf-8", "surrogateescape")  # the bytes as sent
        path, _, query = target.partition(b"?")
        if not path.startswith(b"/") and b"://" in path:  # absolute-form target
            authority_path = path.split(b"://", 1)[1]
            slash = authority_path.find(b"/")
            path = authority_path[slash:] if slash >= 0 else b"/"
        client, server = _addresses(request)
        http_version = _VERSIONS.get(version) or f"{version.major}.{version.minor}"
        scheme = self._scheme
        proxies = self._proxies
        if (
            proxies is not None
            and client is not None
            and proxies.trusts(client[0])
            and carries_proxy_headers(request.headers)  # most requests: nothing to resolve
        ):
            origin = resolve(Origin(scheme, client, server), request.headers, proxies)
            scheme, client, server = origin.scheme, origin.client, origin.server
            request[CLIENT] = client  # the access log's client, as the scope's
        return (request.method, scheme, http_version, path, query, self._root_path,
                request.raw_headers, client, server)  # fmt: skip

    async def _run(self, request: web.BaseRequest, stream: HttpStream) -> web.StreamResponse:
        worker = self._dispatcher.try_acquire()
        if worker is not None:
            self.metrics.queue_waited(0.0)
            stream.dispatch(worker)
        else:
            queued_at = perf_counter()
            try:
                stream.dispatch(await self._dispatcher.acquire())
            except NoCapacity as exc:
                self.metrics.queue_waited(perf_counter() - queued_at)
                log.info("no worker for %s %s: %s", request.method, request.path, exc)
                return error_response(503, retry_after_s=self._config.queue.timeout_s)
            self.metrics.queue_waited(perf_counter() - queued_at)
        stream.start_pump(lambda: request.writer.write(CONTINUE))
        while True:
            request[WORKER] = stream.worker  # for the access log (a replay moves it)
            item = await stream.next()
            if type(item) is ev.Response:
                written = self._write_whole(request, stream, item)
                if written is None:
                    return await self._respond(request, stream, item)
                if type(written) is Written and written.drain:
                    await _drain(request, stream)
                return written
            if not stream.can_replay(item):
                return self._failure(stream, item)
            log.info("replaying stream %d on another worker (%s)", stream.stream_id, describe_failure(item))
            try:
                stream.replay(await self._dispatcher.acquire(replay=True))
            except NoCapacity:
                return error_response(503, retry_after_s=self._config.queue.timeout_s)

    @staticmethod
    def _failure(stream: HttpStream, item: Any) -> web.StreamResponse:
        stream.phase = Phase.FAILED
        if type(item) is ev.Reset:
            log.warning("stream %d reset by the worker before the response: %s",
                        stream.stream_id, describe_failure(item))  # fmt: skip
            return error_response(502 if item.code == ResetCode.REFUSED else 500, close=True)
        log.warning("stream %d failed before the response: %s", stream.stream_id, item.value)
        return error_response(_FAILURE_STATUS[item], close=True)

    # ----------------------------------------------------------- response

    async def _respond(self, request: web.BaseRequest, stream: HttpStream, start: ev.Response) -> Any:
        empty = request.method == "HEAD" or start.status in (204, 304) or start.status < 200
        try:
            resp = _WorkerResponse(status=start.status, headers=str_headers(start.headers))
            resp.headers.setdefault("X-Request-ID", request[REQUEST_ID])  # the app's own id wins
            trailers = start.trailers and not empty and _wants_trailers(request, resp)
            if not start.more_body and not start.trailers and not empty and resp.content_length is None:
                resp.content_length = len(start.body)  # whole body in hand: no chunking needed
            if trailers:
                resp.enable_chunked_encoding()
            elif request.version == HttpVersion10:
                resp.headers.popall("Transfer-Encoding", None)  # 1.0 bodies end at close
            if stream.upload.expect_continue and stream.upload.needs_pump:
                resp.force_close()  # the client will not send the body it was never asked for
            writer = await resp.prepare(request)
        except (ValueError, RuntimeError) as exc:  # CR/LF in a header, a bad Content-Length...
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad response head: {exc}")
            log.warning("stream %d: worker sent a bad response head: %s", stream.stream_id, exc)
            return error_response(502, close=True)
        except ConnectionError:  # the client left before the status line: as in the body below
            log.debug("client went away before stream %d's response", stream.stream_id)
            stream.phase = Phase.FAILED
            return error_response(502, close=True)  # aiohttp drops it quietly (transport closed)
        stream.phase = Phase.RESPONDING
        try:
            if await self._body(request, stream, resp, start, empty):
                await self._end(request, stream, resp, writer, start, trailers)
        except ConnectionError:
            log.debug("client went away during stream %d", stream.stream_id)
            stream.phase = Phase.FAILED
        return resp

    @staticmethod
    def _write_whole(request: web.BaseRequest, stream: HttpStream, start: ev.Response) -> Any:
        """A whole response (one RESPONSE, a body to send): head and body in one transport write,
        no aiohttp response object. None when ``_respond``'s general path must do it."""
        if start.more_body or start.trailers or request.method == "HEAD":
            return None
        status = start.status
        if status < 200 or status in (204, 304):
            return None
        keep_alive = request.keep_alive and not (stream.upload.expect_continue and stream.upload.needs_pump)
        head = _whole_head(request, start, keep_alive)
        if head is None:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():  # as ConnectionError from prepare
            log.debug("client went away before stream %d's response", stream.stream_id)
            stream.phase = Phase.FAILED
            return error_response(502, close=True)
        body = start.body
        if len(body) <= _CONCAT_MAX_BYTES:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        stream.consumed(len(body))
        stream.phase = Phase.DONE
        drain = transport.get_write_buffer_size() > _DRAIN_ABOVE_BYTES  # a slow reader
        return Written(status, keep_alive, len(head) + len(body), drain)

    async def _body(
        self, request: web.BaseRequest, stream: HttpStream, resp: Any, start: ev.Response, empty: bool
    ) -> bool:
        """Write the body; False when the response had to be aborted."""
        body, more = start.body, start.more_body
        if not more and not start.trailers:
            await resp.write_eof(b"" if empty else body)  # the common case: one write
            stream.consumed(len(body))
            stream.phase = Phase.DONE
            return False
        if not body:
            request.writer.send_headers()  # a streamed response's head must not wait for data
        while True:
            if body:
                if not empty:
                    await resp.write(body)
                stream.consumed(len(body))
            if not more:
                return True
            item = await stream.next()
            if type(item) is ev.Body:
                body, more = item.body, item.more_body
            elif type(item) is ev.Pathsend:
                return await self._send_file(request, stream, resp, item.path, empty)
            else:
                _abort(request, stream, item)
                return False

    async def _end(
        self, request: web.BaseRequest, stream: HttpStream, resp: Any, writer: Any,
        start: ev.Response, trailers: bool,
    ) -> None:  # fmt: skip
        block: list[bytes] = []
        while start.trailers:  # the tracker let only TRAILERS* through after the body
            item = await stream.next()
            if type(item) is not ev.Trailers:
                _abort(request, stream, item)
                return
            block.extend(b"%s: %s\r\n" % pair for pair in item.headers if not _bad_field(pair))
            if not item.more_trailers:
                break
        if trailers:
            writer.chunked = False  # aiohttp writes no trailers: the last chunk is ours
            await resp.write_eof(b"0\r\n" + b"".join(block) + b"\r\n")
        else:
            await resp.write_eof()
        stream.phase = Phase.DONE

    async def _send_file(
        self, request: web.BaseRequest, stream: HttpStream, resp: Any, path: str, empty: bool
    ) -> bool:
        """PATHSEND (PROTOCOL §11): only from a worker on this host that negotiated it."""
        worker = stream.worker
        if worker is None or "pathsend" not in worker.features or not os.path.isabs(path):
            stream.reset(ResetCode.PROTOCOL_ERROR, "pathsend not allowed")
            _abort(request, stream, Local.VIOLATION)
            return False
        try:
            with open(path, "rb") as f:  # local disk, 64 KiB at a time; sendfile is a later step
                while not empty and (chunk := f.read(CHUNK_BYTES)):
                    await resp.write(chunk)
        except OSError as exc:
            log.warning("stream %d: cannot send %s: %s", stream.stream_id, path, exc)
            stream.reset(ResetCode.INTERNAL_ERROR, "pathsend failed")
            _abort(request, stream, Local.VIOLATION)
            return False
        return True


class Written:
    """What aiohttp's RequestHandler gets back for a response the bridge wrote itself: enough for
    its keep-alive decision and the access-log hook; ``finish_response`` finds nothing to do."""

    __slots__ = ("status", "keep_alive", "body_length", "drain")
    prepared = True

    def __init__(self, status: int, keep_alive: bool, body_length: int, drain: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self.body_length = body_length  # bytes written, head included (aiohttp's output_size)
        self.drain = drain  # the transport's buffer is over aiohttp's limit: wait before the next

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _whole_head(request: web.BaseRequest, start: ev.Response, keep_alive: bool) -> bytes | None:
    """The head aiohttp's StreamResponse would write for a whole body, from the worker's header
    bytes as they are; None when the general path must decide (framing headers from the worker
    other than an exact Content-Length, a control character in a field: it answers 502).
    One difference: bytes over 0x7f go out untouched, where aiohttp (str headers, latin-1 in,
    UTF-8 out) re-encodes them."""
    body = start.body
    lines = []
    has_id = has_type = has_date = has_server = has_length = False
    for pair in start.headers:
        name = pair[0].lower()
        if name in _FRAMING:
            if name != b"content-length" or has_length or pair[1] != b"%d" % len(body):
                return None
            has_length = True
        elif name in _DEFAULTED:
            if name == b"x-request-id":
                has_id = True
            elif name == b"content-type":
                has_type = True
            elif name == b"date":
                has_date = True
            else:
                has_server = True
        lines.append(b": ".join(pair))
    if lines and _CONTROL.search(b"".join(lines)) is not None:
        return None  # CR, LF or another control character in a field: aiohttp's ValueError, 502
    version = request.version
    status_line = _status_line(version, start.status)
    out = [status_line, b"\r\n".join(lines), b"\r\n"] if lines else [status_line]
    if not has_id:
        out.append(b"X-Request-ID: %s\r\n" % request[REQUEST_ID].encode())  # the app's own id wins
    if not has_length:
        out.append(b"Content-Length: %d\r\n" % len(body))
    if not has_type and body:
        out.append(b"Content-Type: application/octet-stream\r\n")
    if not has_date:
        out.append(b"Date: %s\r\n" % rfc822_formatted_time().encode())
    if not has_server:
        out.append(_SERVER_LINE)
    if keep_alive:
        if version == HttpVersion10:
            out.append(b"Connection: keep-alive\r\n")
    elif version == HttpVersion11:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _status_line(version: Any, status: int) -> bytes:
    key = (version, status)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = f"HTTP/{version[0]}.{version[1]} {status} {REASON_PHRASES.get(status, '')}\r\n".encode()
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[key] = line
    return line


async def _drain(request: web.BaseRequest, stream: HttpStream) -> None:
    """As aiohttp's writer after a write over its limit: wait until the client reads."""
    try:
        await request.writer.drain()
    except ConnectionError:
        log.debug("client went away during stream %d", stream.stream_id)


def _abort(request: web.BaseRequest, stream: HttpStream, why: Any) -> None:
    """After the status line: break the connection so the client sees a truncated body."""
    log.warning("stream %d aborted mid-response: %s", stream.stream_id, describe_failure(why))
    stream.phase = Phase.FAILED
    transport = request.transport
    if transport is not None:
        transport.abort()


def _bad_framing(request: web.BaseRequest) -> bool:
    """HTTP/0.9, or HTTP/1.0 with Transfer-Encoding (RFC 9112 §6.1: its framing is faulty)."""
    return request.version != HttpVersion10 or "Transfer-Encoding" in request.headers


def _wants_trailers(request: web.BaseRequest, resp: web.StreamResponse) -> bool:
    return (
        request.version == HttpVersion11
        and "Content-Length" not in resp.headers
        and "trailers" in request.headers.get("TE", "").lower()
    )


def _bad_field(pair: tuple[bytes, bytes]) -> bool:
    return _BAD_FIELD.search(pair[0]) is not None or _BAD_FIELD.search(pair[1]) is not None


def _addresses(request: web.BaseRequest) -> tuple[Any, Any]:
    """(client, server) of the TCP connection: asked once per connection (each is a syscall)."""
    conn = request.protocol
    pair = getattr(conn, "addresses", None)
    if pair is None:
        transport = request.transport
        if transport is None:
            return None, None
        pair = (
            _address(transport.get_extra_info("peername")),
            _address(transport.get_extra_info("sockname")),
        )
        if isinstance(conn, Connection):
            conn.addresses = pair
    return pair


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None
