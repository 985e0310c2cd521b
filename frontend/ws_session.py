"""An open WebSocket session: worker messages to the client, client messages to the worker, the close.

``run`` is the session once aiohttp's ``WebSocketResponse`` completed the
handshake (ws_bridge): the handler's loop (``_to_client``, worker -> client)
and one pump task (``_pump``, client -> worker).

* client -> worker: the pump calls ``receive()`` only while the stream's send
  window is positive. With the window spent it parks, aiohttp's reader queue
  passes its high-water mark, aiohttp stops parsing and pauses the socket
  (aiohttp >= 3.11 stalls its parser too), so a flooding client is held to
  about the queue limit plus one message. aiohttp reassembles fragments: the
  worker sees whole messages, each costing len + 32 (Rule 15).
* worker -> client: each WS_MESSAGE is written with ``send_frame``, which
  awaits the socket's drain, and only then credited (batched), so a slow
  client stops the app's sends.

Closing: the client's close frame becomes WS_CLOSE(code, reason); a vanished
client, transport error or ping timeout WS_CLOSE(1006); an oversize message
closes the client with 1009 and tells the worker 1009. The worker's WS_CLOSE
closes the client with that code; RESET, a lost worker or an illegal event
closes it with 1011 (1012 if the worker was draining, or a handoff found no
worker). On front-end shutdown the client gets 1001 (1012 from a retired front
end, retire.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http import WebSocketError

from wire import events as ev
from wire.events import ResetCode
from wire.flow import cost

from .config import WebSocket as WebSocketSettings
from .responses import describe_failure, str_headers
from .ws_stream import ABNORMAL, WsLocal, WsPhase, WsStream

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0  # how long a close waits for the client's close frame
GOING_AWAY, PROTOCOL_ERROR, NO_STATUS, MESSAGE_TOO_BIG, SERVER_ERROR, SERVICE_RESTART = (
    1001, 1002, 1005, 1009, 1011, 1012
)  # fmt: skip
_NOT_IN_A_CLOSE_FRAME = frozenset({1004, 1005, 1006, 1015})  # RFC 6455 §7.4.1: reserved
_MAX_REASON_BYTES = 123  # a control frame's payload is 125 bytes: the code takes 2
# what ends a handed-off session for good
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


def client_socket(settings: WebSocketSettings, accept: ev.WsAccept) -> _ClientSocket:
    """The client's side of an accepted session, as the worker's WS_ACCEPT says (not yet prepared)."""
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


async def run(
    ws: web.WebSocketResponse, stream: WsStream, resume: Callable[[WsStream], Awaitable[Any]], max_bytes: int
) -> None:
    """The open session until either side closes; ``resume``: the bridge's move to another worker."""
    pump = asyncio.get_running_loop().create_task(_pump(ws, stream, max_bytes))
    try:
        await _to_client(ws, stream, resume)
    finally:
        pump.cancel()


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
                    stream.done()
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
            stream.fail()
            stream.close(ABNORMAL)
            return
        stream.consumed(cost(item))


async def _end(ws: web.WebSocketResponse, stream: WsStream, item: Any) -> None:
    kind = type(item)
    code, reason = SERVER_ERROR, ""
    if item is WsLocal.CLIENT_CLOSED:  # the pump told the worker; aiohttp answered the client
        stream.done()
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
    if code == SERVER_ERROR:
        stream.fail()
    else:
        stream.done()
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
