"""aiohttp WebSocket <-> wire WebSocket stream (PROTOCOL §5 "WebSocket stream", §6.2, §7).

Theory of operation. ``handle_upgrade`` runs for a connection handed over with
an upgrade request (GET, HTTP/1.1, ``Upgrade: websocket``; upgrade.py) on its
``ws_connection.WsConnection``; its head is built as an HTTP request's
(request_head.py). We check
the handshake is well-formed (else 400, before any worker is bothered), take
a WebSocket slot (HELLO.ws_capacity, its own wait queue; 503 as for HTTP) and
send WS_CONNECT. The worker's first answer decides what the client gets:

* WS_ACCEPT: the 101 (Sec-WebSocket-Accept, the subprotocol, the worker's
  extra headers, permessage-deflate as ws_frames negotiates it), then the
  session on the WsConnection (pings, the message size limit: ws_connection);
* RESPONSE (+ BODY*): the denial response, sent as plain HTTP;
* WS_CLOSE: 403; RESET: 500; worker lost / protocol violation: 502 unless the
  stream can be replayed on another worker (Rule 20).

An open session has no task: worker events are written to the client as they
arrive (ws_session.deliver, the stream's listener), client messages go to the
worker from the connection's ``data_received`` (ws_connection); flow control
and close codes are described there and in ws_stream. The handshake's task
ends with the 101; the session's end (its connection closed) is ``session_ended``.

Handoff (feature "handoff", PROTOCOL §8.1): a worker's WS_HANDOFF does not
close the client. The handler writes the worker's messages that came before
it, takes a WebSocket slot on another READY worker (the slot queue, up to the
queue timeout) and ``WsStream.resume``s the session there, while the connection
goes on reading the client into the stream's held messages (bounded). No worker in
time, or a refused resume retried out: the client is closed with 1012.

On front-end shutdown ``going_away`` closes both sides with 1001; a retired front
end's (a successor serves the port, retire.py) with 1012 at the end of its grace.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from time import perf_counter
from typing import Any

from aiohttp import hdrs

from wire import events as ev
from wire.events import ResetCode

from . import http1
from .access_log import AccessLog, request_id
from .config import FrontendConfig
from .dispatch import Dispatcher
from .parse_errors import error
from .refusal_log import RefusalReporter
from .request_head import RequestHeads, addresses
from .responses import describe_failure
from .slots import NoCapacity
from .ws_connection import WsConnection
from .ws_frames import accept_key, negotiate_deflate
from .ws_session import GOING_AWAY, SERVICE_RESTART, deliver
from .ws_stream import WsLocal, WsStream

log = logging.getLogger(__name__)

# The handshake is ours to write: the worker's headers may not override it.
_HANDSHAKE_HEADERS = frozenset(
    {b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-extensions",
     b"sec-websocket-protocol"}  # fmt: skip
)
_VERSIONS = ("13", "8", "7")  # Sec-WebSocket-Version values accepted (13 is RFC 6455; as aiohttp)
Answer = tuple[int, int]  # (status the client got, body bytes written); status 0: nothing to log


class WsBridge:
    def __init__(
        self,
        config: FrontendConfig,
        dispatcher: Dispatcher,
        heads: RequestHeads,
        access: AccessLog,
        refusals: RefusalReporter,
    ) -> None:
        self._settings = config.websocket
        self._heads = heads
        self._access = access
        self._dispatcher = dispatcher
        self._queue_timeout_s = config.queue.timeout_s
        self._refusals = refusals
        self._streams: set[WsStream] = set()  # handlers running, for shutdown
        self._closing = False

    @property
    def open_count(self) -> int:
        return len(self._streams)

    def going_away(self, restart: bool = False) -> None:
        """Front-end shutdown: close every WebSocket with 1001 and refuse new ones; ``restart``
        (a retired front end, retire.py): with 1012, so clients reconnect to its successor."""
        self._closing = True
        for stream in list(self._streams):
            stream.going_away(restart)

    async def handle_upgrade(self, conn: WsConnection) -> None:
        """The handler of a connection handed over with a WebSocket upgrade (upgrade.py)."""
        conn.started = perf_counter()
        message = conn.message
        conn.rid = rid = request_id(message.headers)
        transport = conn.transport
        client, server = addresses(transport)
        conn.peer = client
        head, proxied = self._heads.build(
            message.method, message.path, message.version, message.headers, message.raw_headers,
            client, server,
        )  # fmt: skip
        if proxied is not None:
            conn.client_set, conn.client = True, proxied[0]
        ext = self._heads.ext(rid, self._heads.tls_of(transport))
        status, bytes_out = await self._handle(conn, head, ext)
        if status and status != 101:  # (a session is logged when it ends: session_ended)
            self._access.upgrade_ended(conn, status, bytes_out)

    def session_ended(self, conn: WsConnection) -> None:
        """An open session's connection is closed."""
        stream = conn.stream
        assert stream is not None
        stream.listener = None
        stream.finish()  # WS_CLOSE(1006) if still open on the wire
        self._streams.discard(stream)
        self._access.upgrade_ended(conn, 101, 0)

    async def _handle(self, conn: WsConnection, head: tuple[Any, ...], ext: dict[str, Any]) -> Answer:
        headers = conn.message.headers
        key = accept_key(headers.get(hdrs.SEC_WEBSOCKET_KEY, ""))
        if (
            key is None
            or "upgrade" not in headers.get(hdrs.CONNECTION, "").lower()
            or headers.get(hdrs.SEC_WEBSOCKET_VERSION, "") not in _VERSIONS
        ):
            return _error(conn, 400)
        if self._closing:
            return _error(conn, 503, retry_after_s=1)
        stream = WsStream(self._dispatcher, connect=_connect_fields(headers, head, ext))
        self._streams.add(stream)
        status = 0
        try:
            status, sent = await self._run(conn, stream, key)
            return status, sent
        except asyncio.CancelledError:
            log.debug("client went away from WebSocket stream %d", stream.stream_id)
            raise
        finally:
            if status != 101:  # (an open session ends with its connection: session_ended)
                stream.finish()  # WS_CLOSE(1006) if still open on the wire
                self._streams.discard(stream)

    # ----------------------------------------------------------- handshake

    async def _run(self, conn: WsConnection, stream: WsStream, key: str) -> Answer:
        try:
            stream.dispatch(await self._dispatcher.acquire(websocket=True))
            conn.worker = stream.worker  # for the access log (the first worker of the session)
        except NoCapacity as exc:
            if self._refusals.refused(exc.reason):
                log.info("no worker for WebSocket %s: %s (%s)", conn.message.path, exc, self._refusals.note)
            return _error(conn, 503, retry_after_s=self._queue_timeout_s)
        while True:
            item = await stream.next()
            kind = type(item)
            if kind is ev.WsAccept:
                return await self._session(conn, stream, item, key)
            if kind is ev.Response:
                return await self._deny(conn, stream, item)
            if kind is ev.WsClose:
                stream.done()
                return _error(conn, 403)
            if item is WsLocal.GOING_AWAY or item is WsLocal.RESTARTING:
                stream.close(GOING_AWAY if item is WsLocal.GOING_AWAY else SERVICE_RESTART)
                return _error(conn, 503, retry_after_s=1)
            if not stream.can_replay(item):
                return _failure(conn, stream, item)
            log.info(
                "replaying WebSocket stream %d on another worker (%s)",
                stream.stream_id,
                describe_failure(item),
            )
            try:
                stream.replay(await self._dispatcher.acquire(websocket=True))
            except NoCapacity:
                return _error(conn, 503, retry_after_s=self._queue_timeout_s)

    async def _deny(self, conn: WsConnection, stream: WsStream, start: ev.Response) -> Answer:
        """The denial response (``websocket.http.response``): plain HTTP, then the connection closes."""
        stream.denying()
        try:
            head = http1.head(
                conn.message.version, "GET", start.status, start.headers, conn.rid, keep_alive=False,
                whole_length=None if start.more_body else len(start.body), trailers=False,
            )  # fmt: skip
        except http1.BadHead as exc:
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad denial response head: {exc}")
            log.warning("stream %d: worker sent a bad denial response head: %s", stream.stream_id, exc)
            return _error(conn, 502)
        if not conn.write_head(head.data):  # the client left first: handle()'s finish() tells the worker
            log.debug("client went away before WebSocket stream %d's denial response", stream.stream_id)
            stream.fail()
            return 0, 0
        body, more, sent = start.body, start.more_body, 0
        while True:
            if body and not head.empty:
                if not conn.write_head(b"%x\r\n%s\r\n" % (len(body), body) if head.chunked else body):
                    log.debug("client went away during stream %d's denial response", stream.stream_id)
                    stream.fail()
                    return start.status, sent
                sent += len(body)
                await conn.drain()
                stream.consumed(len(body))
            if not more:
                break
            item = await stream.next()
            if type(item) is not ev.Body:  # a reset, a lost worker, or trailers we do not send here
                log.warning(
                    "stream %d: denial response cut short (%s)", stream.stream_id, describe_failure(item)
                )
                stream.fail()
                conn.abort()
                return start.status, sent
            body, more = item.body, item.more_body
        conn.answer(http1.LAST_CHUNK if head.chunked else b"")
        stream.done()
        return start.status, sent

    # ------------------------------------------------------------- session

    async def _session(self, conn: WsConnection, stream: WsStream, accept: ev.WsAccept, key: str) -> Answer:
        settings = self._settings
        deflate = None
        if settings.per_message_deflate:
            offers = ", ".join(conn.message.headers.getall(hdrs.SEC_WEBSOCKET_EXTENSIONS, ()))
            deflate = negotiate_deflate(offers) if offers else None
        fields = [pair for pair in accept.headers if pair[0].lower() not in _HANDSHAKE_HEADERS]
        fields += [(b"Upgrade", b"websocket"), (b"Sec-WebSocket-Accept", key.encode())]
        try:
            if accept.subprotocol:
                fields.append((b"Sec-WebSocket-Protocol", accept.subprotocol.encode("latin-1")))
            if deflate is not None:
                fields.append((b"Sec-WebSocket-Extensions", deflate.header.encode()))
            head = http1.head(conn.message.version, "GET", 101, fields, conn.rid, keep_alive=True,
                              whole_length=None, trailers=False).data  # fmt: skip
        except ValueError as exc:  # CR/LF in a worker's header and the like
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad accept headers: {exc}")
            log.warning("stream %d: worker sent bad WebSocket accept headers: %s", stream.stream_id, exc)
            return _error(conn, 502)
        if not conn.open(head[:-2] + b"Connection: Upgrade\r\n\r\n", stream, settings, deflate):
            log.debug("client went away before WebSocket stream %d opened", stream.stream_id)
            stream.fail()  # handle()'s finish() tells the worker
            return 0, 0
        stream.opened()
        stream.listener = partial(deliver, conn, self._resume)
        deliver(conn, self._resume)  # what the worker sent before the 101 went out
        return 101, 0

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


def _error(conn: WsConnection, status: int, *, retry_after_s: float | None = None) -> Answer:
    data = error(status, conn.message.version, conn.rid, retry_after_s=retry_after_s)
    conn.answer(data)
    return status, len(data)


def _failure(conn: WsConnection, stream: WsStream, item: Any) -> Answer:
    stream.fail()
    log.warning(
        "WebSocket stream %d failed before the handshake: %s", stream.stream_id, describe_failure(item)
    )
    if type(item) is ev.Reset and item.code != ResetCode.REFUSED:
        return _error(conn, 500)
    return _error(conn, 502)


def _connect_fields(headers: Any, head: tuple[Any, ...], ext: dict[str, Any]) -> tuple[Any, ...]:
    """WS_CONNECT's fields after stream_id, from the REQUEST head (method, scheme, ...server)."""
    offered = tuple(
        token.strip()
        for line in headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
        for token in line.split(",")
        if token.strip()
    )
    scheme = "wss" if head[1] == "https" else "ws"  # the bridge's scheme: TLS or proxy headers
    return (scheme, *head[2:9], offered, ext)
