"""aiohttp WebSocket <-> wire WebSocket stream (PROTOCOL §5 "WebSocket stream", §6.2, §7).

Theory of operation. aiohttp runs ``handle_upgrade`` for a connection handed
over with an upgrade request (GET, HTTP/1.1, ``Upgrade: websocket``; upgrade.py);
its head is built as an HTTP request's (request_head.py). We check
the handshake is well-formed (else 400, before any worker is bothered), take
a WebSocket slot (HELLO.ws_capacity, its own wait queue; 503 as for HTTP) and
send WS_CONNECT. The worker's first answer decides what the client gets:

* WS_ACCEPT: aiohttp's ``WebSocketResponse`` completes the handshake (the
  subprotocol echoed, the worker's extra headers added, permessage-deflate,
  pings, the message size limit);
* RESPONSE (+ BODY*): the denial response, sent as plain HTTP;
* WS_CLOSE: 403; RESET: 500; worker lost / protocol violation: 502 unless the
  stream can be replayed on another worker (Rule 20).

An open session (ws_session.py) costs the handler task (worker -> client)
and one pump task (client -> worker); events arrive by direct calls
(``ws_stream``); flow control and close codes are described there.

Handoff (feature "handoff", PROTOCOL §8.1): a worker's WS_HANDOFF does not
close the client. The handler writes the worker's messages that came before
it, takes a WebSocket slot on another READY worker (the slot queue, up to the
queue timeout) and ``WsStream.resume``s the session there, while the pump goes
on reading the client into the stream's held messages (bounded). No worker in
time, or a refused resume retried out: the client is closed with 1012.

On front-end shutdown ``going_away`` closes both sides with 1001; a retired front
end's (a successor serves the port, retire.py) with 1012 at the end of its grace.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.log import ws_logger

from wire import events as ev
from wire.events import ResetCode

from .access_log import CLIENT, REQUEST_ID, STARTED, WORKER, AccessLog, request_id
from .config import FrontendConfig
from .dispatch import Dispatcher
from .parse_errors import error_response
from .request_head import RequestHeads, addresses
from .responses import describe_failure, str_headers
from .slots import NoCapacity
from .ws_session import GOING_AWAY, SERVICE_RESTART, client_socket, run
from .ws_stream import WsLocal, WsStream

log = logging.getLogger(__name__)


class _NoOverlapWarning(logging.Filter):
    # aiohttp warns whenever the client offered subprotocols and the app chose
    # none of them: ordinary for an ASGI app, one line per connection.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("%s: Client protocols")


class WsBridge:
    def __init__(
        self, config: FrontendConfig, dispatcher: Dispatcher, heads: RequestHeads, access: AccessLog
    ) -> None:
        self._settings = config.websocket
        self._heads = heads
        self._access = access
        self._dispatcher = dispatcher
        self._queue_timeout_s = config.queue.timeout_s
        self._streams: set[WsStream] = set()  # handlers running, for shutdown
        self._closing = False
        if not any(isinstance(f, _NoOverlapWarning) for f in ws_logger.filters):
            ws_logger.addFilter(_NoOverlapWarning())

    @staticmethod
    def wants(request: web.BaseRequest) -> bool:
        return (
            request.method == "GET"
            and request.version >= HttpVersion11
            and request.headers.get("Upgrade", "").strip().lower() == "websocket"
        )

    @property
    def open_count(self) -> int:
        return len(self._streams)

    def going_away(self, restart: bool = False) -> None:
        """Front-end shutdown: close every WebSocket with 1001 and refuse new ones; ``restart``
        (a retired front end, retire.py): with 1012, so clients reconnect to its successor."""
        self._closing = True
        for stream in list(self._streams):
            stream.going_away(restart)

    async def handle_upgrade(self, request: web.BaseRequest) -> Any:
        """aiohttp's handler for a connection handed over with a WebSocket upgrade (upgrade.py)."""
        request[STARTED] = perf_counter()
        rid = request[REQUEST_ID] = request_id(request.headers)
        if not self.wants(request):  # (connection.py hands over upgrades only)
            resp = error_response(400, close=True)
        else:
            transport = request.transport
            client, server = addresses(transport)
            head, proxied = self._heads.build(
                request.method, request.raw_path, request.version, request.headers, request.raw_headers,
                client, server,
            )  # fmt: skip
            if proxied is not None:
                request[CLIENT] = proxied[0]
            resp = await self._handle(request, head, self._heads.ext(rid, self._heads.tls_of(transport)))
        if not resp.prepared:  # our own error responses
            resp.headers["X-Request-ID"] = rid
            resp.force_close()
        return resp

    async def _handle(self, request: web.BaseRequest, head: tuple[Any, ...], ext: dict[str, Any]) -> Any:
        if not web.WebSocketResponse().can_prepare(request):
            return error_response(400, close=True)
        if self._closing:
            return error_response(503, retry_after_s=1, close=True)
        stream = WsStream(self._dispatcher, connect=_connect_fields(request, head, ext))
        self._streams.add(stream)
        try:
            return await self._run(request, stream)
        except asyncio.CancelledError:
            log.debug("client went away from WebSocket stream %d", stream.stream_id)
            raise
        finally:
            stream.finish()  # WS_CLOSE(1006) if still open on the wire
            self._streams.discard(stream)

    # ----------------------------------------------------------- handshake

    async def _run(self, request: web.BaseRequest, stream: WsStream) -> Any:
        try:
            stream.dispatch(await self._dispatcher.acquire(websocket=True))
            request[WORKER] = stream.worker  # for the access log (the first worker of the session)
        except NoCapacity as exc:
            log.info("no worker for WebSocket %s: %s", request.path, exc)
            return error_response(503, retry_after_s=self._queue_timeout_s, close=True)
        while True:
            item = await stream.next()
            kind = type(item)
            if kind is ev.WsAccept:
                return await self._session(request, stream, item)
            if kind is ev.Response:
                return await self._deny(request, stream, item)
            if kind is ev.WsClose:
                stream.done()
                return error_response(403, close=True)
            if item is WsLocal.GOING_AWAY or item is WsLocal.RESTARTING:
                stream.close(GOING_AWAY if item is WsLocal.GOING_AWAY else SERVICE_RESTART)
                return error_response(503, retry_after_s=1, close=True)
            if not stream.can_replay(item):
                return _failure(stream, item)
            log.info(
                "replaying WebSocket stream %d on another worker (%s)",
                stream.stream_id,
                describe_failure(item),
            )
            try:
                stream.replay(await self._dispatcher.acquire(websocket=True))
            except NoCapacity:
                return error_response(503, retry_after_s=self._queue_timeout_s, close=True)

    async def _deny(self, request: web.BaseRequest, stream: WsStream, start: ev.Response) -> Any:
        """The denial response (``websocket.http.response``): plain HTTP, then the connection closes."""
        stream.denying()
        try:
            resp = web.StreamResponse(status=start.status, headers=str_headers(start.headers))
            resp.force_close()
            if not start.more_body and resp.content_length is None:
                resp.content_length = len(start.body)
            await resp.prepare(request)
        except (ValueError, RuntimeError) as exc:
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad denial response head: {exc}")
            log.warning("stream %d: worker sent a bad denial response head: %s", stream.stream_id, exc)
            return error_response(502, close=True)
        except ConnectionError:  # the client left first: handle()'s finish() tells the worker
            log.debug("client went away before WebSocket stream %d's denial response", stream.stream_id)
            stream.fail()
            return error_response(502, close=True)  # aiohttp drops it quietly (transport closed)
        try:
            await self._deny_body(request, stream, resp, start)
        except ConnectionError:  # as above, mid-body: the response is cut short anyway
            log.debug("client went away during WebSocket stream %d's denial response", stream.stream_id)
            stream.fail()
        return resp

    @staticmethod
    async def _deny_body(
        request: web.BaseRequest, stream: WsStream, resp: web.StreamResponse, start: ev.Response
    ) -> None:
        body, more = start.body, start.more_body
        while True:
            if body:
                await resp.write(body)
                stream.consumed(len(body))
            if not more:
                break
            item = await stream.next()
            if type(item) is not ev.Body:  # a reset, a lost worker, or trailers we do not send here
                log.warning(
                    "stream %d: denial response cut short (%s)", stream.stream_id, describe_failure(item)
                )
                stream.fail()
                if request.transport is not None:
                    request.transport.abort()
                return
            body, more = item.body, item.more_body
        await resp.write_eof()
        stream.done()

    # ------------------------------------------------------------- session

    async def _session(self, request: web.BaseRequest, stream: WsStream, accept: ev.WsAccept) -> Any:
        ws = client_socket(self._settings, accept)
        ws.headers.setdefault("X-Request-ID", request[REQUEST_ID])
        try:
            await ws.prepare(request)
        except ValueError as exc:  # CR/LF in a worker's header and the like
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad accept headers: {exc}")
            log.warning("stream %d: worker sent bad WebSocket accept headers: %s", stream.stream_id, exc)
            return error_response(502, close=True)
        except ConnectionError:  # the client left before its 101: handle()'s finish() tells the worker
            log.debug("client went away before WebSocket stream %d opened", stream.stream_id)
            stream.fail()
            return error_response(502, close=True)  # aiohttp drops it quietly (transport closed)
        stream.opened()
        try:
            await run(ws, stream, self._resume, self._settings.max_message_bytes)
        finally:
            # Logged here, not by aiohttp's hook: a client's close often ends the TCP connection
            # before the handler returns, and aiohttp logs nothing for a cancelled handler.
            self._access.session_ended(request, ws)
        return ws

    async def _resume(self, stream: WsStream) -> Any:
        """Resume a handed-off session on another worker: None once done, else why not."""
        acquiring = asyncio.ensure_future(self._dispatcher.acquire(websocket=True))
        stream.acquiring = acquiring  # the pump cancels it if the client leaves meanwhile
        try:
            worker = await acquiring
        except NoCapacity as exc:
            return exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the handler itself is being cancelled
            return await stream.next()  # the client left or we shut down: the marker is queued
        finally:
            stream.acquiring = None
        if "handoff" not in worker.features:  # an older worker in the pool: it cannot resume
            self._dispatcher.pool.release(worker, websocket=True)
            self._dispatcher.ws_slots.wake()
            return "the worker chosen does not support handoff"
        stream.resume(worker)
        log.debug("WebSocket resumed as stream %d on worker %s", stream.stream_id, worker.worker_id)
        return None


def _failure(stream: WsStream, item: Any) -> web.StreamResponse:
    stream.fail()
    log.warning(
        "WebSocket stream %d failed before the handshake: %s", stream.stream_id, describe_failure(item)
    )
    if type(item) is ev.Reset and item.code != ResetCode.REFUSED:
        return error_response(500, close=True)
    return error_response(502, close=True)


def _connect_fields(request: web.BaseRequest, head: tuple[Any, ...], ext: dict[str, Any]) -> tuple[Any, ...]:
    """WS_CONNECT's fields after stream_id, from the REQUEST head (method, scheme, ...server)."""
    offered = tuple(
        token.strip()
        for line in request.headers.getall("Sec-WebSocket-Protocol", ())
        for token in line.split(",")
        if token.strip()
    )
    scheme = "wss" if head[1] == "https" else "ws"  # the bridge's scheme: TLS or proxy headers
    return (scheme, *head[2:9], offered, ext)
