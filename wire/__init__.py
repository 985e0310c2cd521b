"""zasgi's wire protocol (see PROTOCOL.md): events, codec, stream states, credit.

This package's core is sans-IO: it imports only the standard library and
msgpack. ``wire.channel`` (ZeroMQ on asyncio) sits beside it and is imported
explicitly by the processes that do I/O; so do two modules that are not protocol but
must be shared by ``frontend`` and ``appserver``, which may not import each other:
``wire.frontend_options`` (the front end's options, once; click) and ``wire.logsetup``.
"""

from .compiled import install_pure_hook

install_pure_hook()  # before the hot modules below are imported: ZASGI_PURE=1 loads their .py sources

from .codec import DEFAULT_LIMITS, INLINE_MAX_BYTES, Limits, decode, encode  # noqa: E402
from .errors import DecodeError, ProtocolViolation, WireError  # noqa: E402
from .events import CONTROL_STREAM, Event, Invalid, Kind, ResetCode  # noqa: E402
from .flow import ReceiveWindow, SendWindow, cost  # noqa: E402
from .states import (  # noqa: E402
    RequestHalf,
    RequestTracker,
    ResponseHalf,
    ResponseTracker,
    WorkerState,
    WsState,
    WsTracker,
)

PROTOCOL_VERSION = 1
FEATURES = ("http", "websocket", "trailers", "pathsend", "ws-denial", "handoff")

__all__ = [
    "CONTROL_STREAM", "DEFAULT_LIMITS", "DecodeError", "Event", "FEATURES", "INLINE_MAX_BYTES",
    "Invalid", "Kind", "Limits", "PROTOCOL_VERSION", "ProtocolViolation", "ReceiveWindow",
    "RequestHalf", "RequestTracker", "ResetCode", "ResponseHalf", "ResponseTracker", "SendWindow",
    "WireError", "WorkerState", "WsState", "WsTracker", "cost", "decode", "encode",
]  # fmt: skip
