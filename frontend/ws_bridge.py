"""aiohttp WebSocket <-> wire WebSocket stream (PROTOCOL §5 "WebSocket stream", §6.2, §7).

Theory of operation. ``HttpBridge.handle_upgrade`` passes an upgrade request (GET,
HTTP/1.1, ``Upgrade: websocket``) here with the REQUEST head fields. We check
the handshake is well-formed (else 400, before any worker is bothered), take
a WebSocket slot (HELLO.ws_capacity, its own wait queue; 503 as for HTTP) and
send WS_CONNECT. The worker's first answer decides what the client gets:

* WS_ACCEPT: aiohttp's ``WebSocketResponse`` completes the handshake (the
  subprotocol echoed, the worker's extra headers added, permessage-deflate,
  pings, the message size limit);
* RESPONSE (+ BODY*): the denial response, sent as plain HTTP;
* WS_CLOSE: 403; RESET: 500; worker lost / protocol violation: 502 unless the
  stream can be replayed on another worker (Rule 20).

An open connection costs the handler task (worker -> client) and one pump
task (client -> worker); events arrive by direct calls (``ws_stream``).

* client -> worker: the pump calls ``receive()`` only while the stream's send
  window is positive. With the window spent it parks, aiohttp's reader queue
  passes its high-water mark, aiohttp stops parsing and pauses the socket
  (aiohttp >= 3.11 stalls its parser too), so a flooding client is held to
  about the queue limit plus one message. aiohttp reassembles fragments: the
  worker sees whole messages, each costing len + 32 (Rule 15).
* worker -> client: each WS_MESSAGE is written with ``send_frame``, which
  awaits the socket's drain, and only then credited (batched), so a slow
  client stops the app's sends.

Handoff (feature "handoff", PROTOCOL §8.1): a worker's WS_HANDOFF does not
close the client. The handler writes the worker's messages that came before
it, takes a WebSocket slot on another READY worker (the slot queue, up to the
queue timeout) and ``WsStream.resume``s the session there, while the pump goes
on reading the client into the stream's held messages (bounded). No worker in
time, or a refused resume retried out: the client is closed with 1012.

Closing: the client's close frame becomes WS_CLOSE(code, reason); a vanished
client, transport error or ping timeout WS_CLOSE(1006); an oversize message
closes the client with 1009 and tells the worker 1009. The worker's WS_CLOSE
closes the client with that code; RESET, a lost worker or an illegal event
closes it with 1011 (1012 if the worker was draining). On front-end shutdown
``going_away`` closes both sides with 1001; a retired front end's (a
successor serves the port, retire.py) with 1012 at the end of its grace.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http import HttpVersion11, WebSocketError
from aiohttp.log import ws_logger

from wire import events as ev
from wire.events import ResetCode
from wire.flow import cost

from .access_log import REQUEST_ID, WORKER, AccessLog
from .config import FrontendConfig
from .dispatch import Dispatcher
from .responses import describe_failure, error_response, str_headers
from .slots import NoCapacity
from .ws_stream import ABNORMAL, WsLocal, WsPhase, WsStream

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0  # how long a close waits for the client's close frame
GOING_AWAY, PROTOCOL_ERROR, NO_STATUS, MESSAGE_TOO_BIG, SERVER_ERROR, SERVICE_RESTART = (
    1001, 1002, 1005, 1009, 1011, 1012
)  # fmt: skip
_NOT_IN_A_CLOSE_FRAME = frozenset({1004, 1005, 1006, 1015})  # RFC 6455 §7.4.1: reserved
_MAX_REASON_BYTES = 123  # a control frame's payload is 125 bytes: the code takes 2
# What ends a handed-off session for good:
_CLIENT_SIDE = (WsLocal.CLIENT_CLOSED, WsLocal.GOING_AWAY, WsLocal.RESTARTING)
# The handshake is ours to write: the worker's headers may not override it.
_HANDSHAKE_HEADERS = frozenset(
    {"upgrade", "connection", "sec-websocket-accept", "sec-websocket-extensions", "sec-websocket-protocol"}
)


class _ClientSocket(web.WebSocketResponse):
    """aiohttp's WebSocketResponse with a ping timeout of our own (aiohttp fixes it at heartbeat / 2)."""

    def __init__(self, *, ping_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kwargs.get("heartbeat"):
            self._pong_heartbeat = ping_timeout_s

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        # aiohttp's reader accepts a close frame carrying 1006 (in its WSCloseCode) and autoclose
        # answers 1000; RFC 6455 §7.4.1 reserves it, so that fails the connection: 1002 (Autobahn 7.9.5).
        if self.close_code in _NOT_IN_A_CLOSE_FRAME and not self.closed:
            code, message = PROTOCOL_ERROR, b""
        return await super().close(code=code, message=message, drain=drain)


class _NoOverlapWarning(logging.Filter):
    # aiohttp warns whenever the client offered subprotocols and the app chose
    # none of them: ordinary for an ASGI app, one line per connection.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("%s: Client protocols")


class WsBridge:
    def __init__(self, config: FrontendConfig, dispatcher: Dispatcher, access: AccessLog) -> None:
        self._settings = config.websocket
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

    async def handle(self, request: web.BaseRequest, head: tuple[Any, ...], ext: dict[str, Any]) -> Any:
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
                stream.phase = WsPhase.DONE
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
        stream.phase = WsPhase.DENYING
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
            stream.phase = WsPhase.FAILED
            return error_response(502, close=True)  # aiohttp drops it quietly (transport closed)
        try:
            await self._deny_body(request, stream, resp, start)
        except ConnectionError:  # as above, mid-body: the response is cut short anyway
            log.debug("client went away during WebSocket stream %d's denial response", stream.stream_id)
            stream.phase = WsPhase.FAILED
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
                stream.phase = WsPhase.FAILED
                if request.transport is not None:
                    request.transport.abort()
                return
            body, more = item.body, item.more_body
        await resp.write_eof()
        stream.phase = WsPhase.DONE

    # ------------------------------------------------------------- session

    async def _session(self, request: web.BaseRequest, stream: WsStream, accept: ev.WsAccept) -> Any:
        ws = self._socket(accept)
        ws.headers.setdefault("X-Request-ID", request[REQUEST_ID])
        try:
            await ws.prepare(request)
        except ValueError as exc:  # CR/LF in a worker's header and the like
            stream.reset(ResetCode.PROTOCOL_ERROR, f"bad accept headers: {exc}")
            log.warning("stream %d: worker sent bad WebSocket accept headers: %s", stream.stream_id, exc)
            return error_response(502, close=True)
        except ConnectionError:  # the client left before its 101: handle()'s finish() tells the worker
            log.debug("client went away before WebSocket stream %d opened", stream.stream_id)
            stream.phase = WsPhase.FAILED
            return error_response(502, close=True)  # aiohttp drops it quietly (transport closed)
        if stream.phase is WsPhase.CONNECTING:  # (already HANDING_OFF if the worker handed it off at once)
            stream.phase = WsPhase.OPEN
        pump = asyncio.get_running_loop().create_task(_pump(ws, stream, self._settings.max_message_bytes))
        try:
            await _to_client(ws, stream, self._resume)
        finally:
            pump.cancel()
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

    def _socket(self, accept: ev.WsAccept) -> _ClientSocket:
        settings = self._settings
        ws = _ClientSocket(
            ping_timeout_s=settings.ping_timeout_s,
            heartbeat=settings.ping_interval_s or None,
            autoping=True,
            timeout=CLOSE_TIMEOUT_S,
            protocols=(accept.subprotocol,) if accept.subprotocol else (),
            compress=settings.per_message_deflate,
            # aiohttp refuses a raw frame of exactly max_msg_size (>=) but lets a
            # decompressed message of that size pass; +1 here and the check in
            # _pump make "up to and including max_message_bytes" exact, as uvicorn.
            max_msg_size=settings.max_message_bytes + 1,
        )
        for name, value in str_headers(accept.headers).items():
            if name.lower() not in _HANDSHAKE_HEADERS:
                ws.headers.add(name, value)
        if accept.subprotocol:
            # aiohttp echoes it only from the client's first Sec-WebSocket-Protocol line.
            ws.headers["Sec-WebSocket-Protocol"] = accept.subprotocol
        return ws


async def _to_client(ws: web.WebSocketResponse, stream: WsStream, resume: Any) -> None:
    """The handler's loop: worker messages to the client until either side closes."""
    while True:
        item = await stream.next()
        if type(item) is not ev.WsMessage:
            if stream.phase is WsPhase.HANDING_OFF and item not in _CLIENT_SIDE:
                why = await resume(stream)  # WS_HANDOFF, or a resume that never reached an app
                if why is None:
                    continue
                if not isinstance(why, WsLocal):
                    log.warning("WebSocket handoff failed (%s); closing the client with 1012", why)
                    stream.phase = WsPhase.DONE
                    await _close_client(ws, SERVICE_RESTART, "")
                    return
                item = why
            await _end(ws, stream, item)
            return
        try:
            if item.text:  # UTF-8 already: no decode and re-encode
                await ws.send_frame(bytes(item.data), WSMsgType.TEXT)
            else:
                await ws.send_bytes(item.data)
        except ConnectionError:
            stream.phase = WsPhase.FAILED
            stream.close(ABNORMAL)
            return
        stream.consumed(cost(item))


async def _end(ws: web.WebSocketResponse, stream: WsStream, item: Any) -> None:
    kind = type(item)
    code, reason = SERVER_ERROR, ""
    if item is WsLocal.CLIENT_CLOSED:  # the pump told the worker; aiohttp answered the client
        stream.phase = WsPhase.DONE
        return
    if kind is ev.WsClose:
        code, reason = item.code, item.reason
    elif item is WsLocal.GOING_AWAY or item is WsLocal.RESTARTING:
        code = GOING_AWAY if item is WsLocal.GOING_AWAY else SERVICE_RESTART
        stream.close(code)
    elif kind is ev.WsHandoff or item is WsLocal.WORKER_LOST_DRAINING:  # no "handoff" agreed
        code = SERVICE_RESTART
    elif kind is ev.Reset and item.code == ResetCode.REFUSED:  # resumes refused more than MAX_REPLAYS times
        code = SERVICE_RESTART
    else:
        log.warning(
            "WebSocket stream %d ended by the worker side: %s", stream.stream_id, describe_failure(item)
        )
    stream.phase = WsPhase.DONE if code != SERVER_ERROR else WsPhase.FAILED
    await _close_client(ws, code, reason)


async def _close_client(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    if code in _NOT_IN_A_CLOSE_FRAME:
        code = 1000
    data = reason.encode()[:_MAX_REASON_BYTES].decode("utf-8", "ignore").encode()  # whole characters
    try:
        await ws.close(code=code, message=data)
    except ConnectionError:
        pass


async def _pump(ws: web.WebSocketResponse, stream: WsStream, max_bytes: int) -> None:
    """Client messages to the worker, reading the socket only while the window is open."""
    try:
        while await stream.wait_window():
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                text = msg.type is WSMsgType.TEXT
                data = msg.data.encode() if text else msg.data
                if len(data) > max_bytes:  # one past the limit, let through by aiohttp
                    stream.client_closed(MESSAGE_TOO_BIG, "")
                    await _close_client(ws, MESSAGE_TOO_BIG, "")
                    return
                stream.send_message(text, data)
            else:
                stream.client_closed(*_close_of(msg))
                return
    except Exception:  # a bug of ours: the connection must still end cleanly
        log.exception("WebSocket stream %d: pump failed", stream.stream_id)
        stream.client_closed(ABNORMAL, "")


def _close_of(msg: Any) -> tuple[int, str]:
    """The (code, reason) the worker gets for the way the client's side ended."""
    if msg.type is WSMsgType.CLOSE:
        code = msg.data or NO_STATUS
        if code in _NOT_IN_A_CLOSE_FRAME and code != NO_STATUS:
            return PROTOCOL_ERROR, ""  # a reserved code in the frame: we failed the connection
        return (code if 1000 <= code <= 4999 else NO_STATUS), msg.extra or ""
    if msg.type is WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
        return msg.data.code, ""  # 1009 too big, 1007 bad UTF-8, 1002 bad framing
    return ABNORMAL, ""  # vanished, transport error, ping timeout


def _failure(stream: WsStream, item: Any) -> web.StreamResponse:
    stream.phase = WsPhase.FAILED
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
