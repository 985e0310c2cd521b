"""An open WebSocket session: worker messages to the client, and how the session ends.

``deliver`` is the session once the 101 went out (ws_bridge), worker -> client:
the stream's ``listener``, called as each worker event arrives (from the
dispatcher's callback), so an open session has no task. Only a handoff's
wait for another worker is a task (``_resume``), while it waits. Client ->
worker runs in the connection's ``data_received``
(ws_connection.py): each whole message (fragments joined, deflate undone,
text checked) goes to ``WsStream.send_message`` while the stream's send
window is open; with it spent the connection stops reading until a CREDIT
reopens it, so a flooding client is held to about one read of the socket.
The worker sees whole messages, each costing len + 32 (Rule 15).

* worker -> client: each WS_MESSAGE is written as one frame and credited
  (batched); while the socket's buffer is past its high-water mark the credit
  waits for it to drain (``WsConnection.credit``), so a slow client stops the
  app's sends.

Closing: the client's close frame becomes WS_CLOSE(code, reason); a vanished
client, transport error or ping timeout WS_CLOSE(1006); an oversize message
closes the client with 1009 and tells the worker 1009 (bad UTF-8: 1007, bad
framing: 1002, likewise). The worker's WS_CLOSE closes the client with that
code; RESET, a lost worker or an illegal event closes it with 1011 (1012 if
the worker was draining, or a handoff found no worker). On front-end shutdown
the client gets 1001 (1012 from a retired front end, retire.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from wire import events as ev
from wire.events import ResetCode
from wire.flow import cost

from .responses import describe_failure
from .ws_stream import ABNORMAL, WsLocal, WsPhase, WsStream

if TYPE_CHECKING:
    from .ws_connection import WsConnection

log = logging.getLogger(__name__)

GOING_AWAY, SERVER_ERROR, SERVICE_RESTART = 1001, 1011, 1012
_NOT_IN_A_CLOSE_FRAME = frozenset({1004, 1005, 1006, 1015})  # RFC 6455 §7.4.1: reserved
# what ends a handed-off session for good
_CLIENT_SIDE = (WsLocal.CLIENT_CLOSED, WsLocal.GOING_AWAY, WsLocal.RESTARTING)


def deliver(conn: WsConnection, resume: Callable[[WsStream], Awaitable[Any]]) -> None:
    """Write what the worker sent, as it arrives; ``resume``: the bridge's move to another worker."""
    stream = conn.stream
    if stream is None or conn.delivering or conn.resuming is not None:
        return  # re-entered (the loop below takes it), or a handoff's task owns the inbox
    conn.delivering = True
    try:
        while True:
            item = stream.take()
            if item is None:
                return
            if type(item) is ev.WsMessage:
                if not conn.send(item.text, item.data):
                    stream.fail()
                    stream.close(ABNORMAL)
                    return
                conn.credit(cost(item))
                continue
            if stream.phase is WsPhase.HANDING_OFF and item not in _CLIENT_SIDE:
                # WS_HANDOFF, or a resume that never reached an app
                conn.resuming = asyncio.get_running_loop().create_task(_resume(conn, stream, resume))
                return
            _end(conn, stream, item)
            return
    finally:
        conn.delivering = False


async def _resume(conn: WsConnection, stream: WsStream, resume: Callable[[WsStream], Awaitable[Any]]) -> None:
    try:
        why = await resume(stream)
    finally:
        conn.resuming = None
    if why is None:
        deliver(conn, resume)  # what the new worker sent meanwhile
    elif not isinstance(why, WsLocal):
        log.warning("WebSocket handoff failed (%s); closing the client with 1012", why)
        stream.done()
        _close_client(conn, SERVICE_RESTART, "")
    else:
        _end(conn, stream, why)


def _end(conn: WsConnection, stream: WsStream, item: Any) -> None:
    kind = type(item)
    code, reason = SERVER_ERROR, ""
    if item is WsLocal.CLIENT_CLOSED:  # the connection told the worker and answered the client
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
    _close_client(conn, code, reason)


def _close_client(conn: WsConnection, code: int, reason: str) -> None:
    conn.close(1000 if code in _NOT_IN_A_CLOSE_FRAME else code, reason)
