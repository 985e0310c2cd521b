"""Wire events: one slotted dataclass per event kind, treated as immutable values.

Not ``frozen=True``: a frozen dataclass sets each field through
``object.__setattr__``, which made building a REQUEST cost 2.0 µs instead of
0.2 µs (a RESPONSE 0.9 µs), paid in both processes for every event. Nothing
mutates an event after it is built; they are not hashable.

Field order IS the wire order (see PROTOCOL.md, "Events"): the codec sends
``[kind, stream_id, *fields]`` positionally, so reordering fields here is a
protocol change. Every event carries ``stream_id``; connection-level (control)
events use stream 0.

Validation of untrusted input happens in the codec, once, while decoding;
constructing events in our own code is trusted and stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Union

Headers = tuple[tuple[bytes, bytes], ...]
Address = Union[tuple[str, int], None]
# Payload bytes (bodies, WebSocket data). The encoder accepts any buffer; the
# decoder yields bytes, or for BODY/RESPONSE bodies a memoryview when the
# receiver asked for zero-copy frames (channel.Channel's payload_views).
Payload = Union[bytes, bytearray, memoryview]

CONTROL_STREAM = 0


class Kind(IntEnum):
    HELLO = 1
    WELCOME = 2
    REFUSE = 3
    HEARTBEAT = 4
    DRAIN = 5
    BYE = 6
    UNKNOWN_PEER = 7
    LIMIT = 8
    LINGER = 9
    PULSE = 10
    EVICT = 11
    FREED = 12
    SHARE = 13
    REQUEST = 16
    BODY = 17
    DISCONNECT = 18
    CREDIT = 19
    RESPONSE = 20
    TRAILERS = 21
    PATHSEND = 22
    RESET = 23
    EARLY_HINTS = 24
    WS_CONNECT = 32
    WS_ACCEPT = 33
    WS_MESSAGE = 34
    WS_CLOSE = 35
    WS_HANDOFF = 36
    WS_RESUME = 37


class ResetCode(IntEnum):
    """Why a stream was reset (RESET.code). See PROTOCOL.md, "RESET"."""

    REFUSED = 1  # never delivered to the app: the front end may replay it
    APP_ERROR = 2  # the app raised or broke the ASGI contract
    PROTOCOL_ERROR = 3  # the peer sent something illegal on this stream
    CANCELLED = 4  # the sender gave up on the stream (timeout, shutdown)
    INTERNAL_ERROR = 5  # the sender failed for a reason of its own


# ---------------------------------------------------------------- control


@dataclass(slots=True)
class Hello:
    """Worker -> front end: first event on a connection."""

    stream_id: int
    protocol: int
    worker_id: str
    pid: int
    capacity: int  # concurrent HTTP streams
    ws_capacity: int  # concurrent WebSocket streams
    window_bytes: int  # initial request-direction window the worker grants
    features: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Welcome:
    """Front end -> worker: handshake accepted; the values both must agree on."""

    stream_id: int
    frontend_id: str
    heartbeat_ms: int
    liveness: int
    window_bytes: int  # initial response-direction window the front end grants
    max_payload_bytes: int
    features: tuple[str, ...] = ()


@dataclass(slots=True)
class Refuse:
    stream_id: int
    reason: str


@dataclass(slots=True)
class Heartbeat:
    stream_id: int = CONTROL_STREAM


@dataclass(slots=True)
class Drain:
    """Worker -> front end: open no new streams to me; in-flight ones go on."""

    stream_id: int = CONTROL_STREAM


@dataclass(slots=True)
class Linger:
    """Worker -> front end (feature "linger"): draining, it now runs only WebSocket sessions and
    responses already started, and serves just those until they end or its drain limit passes."""

    stream_id: int = CONTROL_STREAM


@dataclass(slots=True)
class Bye:
    stream_id: int
    reason: str


@dataclass(slots=True)
class UnknownPeer:
    """Front end -> sender it has no handshake with: say HELLO again."""

    stream_id: int = CONTROL_STREAM


@dataclass(slots=True)
class Limit:
    """Worker -> front end (feature "limit"): open at most ``limit`` HTTP streams on me now."""

    stream_id: int
    limit: int  # 1..HELLO.capacity


@dataclass(slots=True)
class Pulse:
    """Worker -> front end (feature "pulse"): from a thread of the worker's own, not its event loop,
    on a connection of its own: this process lives, and this is how its loop is (Rule 9a)."""

    stream_id: int
    peer: bytes  # the routing id of the worker's connection (the one HELLO came from) it speaks for
    stalled_ms: int  # how long its event loop has not run, now; 0: running
    blocked_ms: int  # a stall of the loop that just ended lasted this long (sent once); 0: none
    request_id: str = ""  # the request on the loop while it is stalled ("" none, or not known)
    method: str = ""
    path: str = ""


@dataclass(slots=True)
class Evict:
    """Front end -> a worker's pulse connection (feature "pulse"): your loop stayed blocked past my
    limit; your streams are answered, exit (Rule 9b)."""

    stream_id: int
    reason: str


@dataclass(slots=True)
class Freed:
    """Either way (feature "shm-body"): these slots of your shared segment are free again (§7.2)."""

    stream_id: int
    slots: tuple[int, ...] = ()


@dataclass(slots=True)
class Share:
    """Front end -> worker (feature "shm-body"): my segment for request bodies; map it and FREED
    its slots to take it (§7.2)."""

    stream_id: int
    segment: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- HTTP


@dataclass(slots=True)
class Request:
    """Front end -> worker: opens an HTTP stream (ASGI ``http`` scope + first body chunk).

    ``headers`` are the raw bytes the client sent, names not lower-cased:
    the worker, which scales out, does that work.
    """

    stream_id: int
    method: str
    scheme: str
    http_version: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: Headers
    client: Address
    server: Address
    body: Payload = b""
    more_body: bool = False
    expect_continue: bool = False
    ext: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Body:
    """A body chunk in either direction (request body f->w, response body w->f)."""

    stream_id: int
    body: Payload = b""
    more_body: bool = False


@dataclass(slots=True)
class Disconnect:
    """Front end -> worker: the client went away (ASGI ``http.disconnect``)."""

    stream_id: int


@dataclass(slots=True)
class Credit:
    """Either way: the receiver consumed ``bytes`` more; the sender may send that much more."""

    stream_id: int
    bytes: int


@dataclass(slots=True)
class Response:
    """Worker -> front end: ``http.response.start`` coalesced with the first body chunk."""

    stream_id: int
    status: int
    headers: Headers
    body: Payload = b""
    more_body: bool = False
    trailers: bool = False


@dataclass(slots=True)
class Trailers:
    stream_id: int
    headers: Headers
    more_trailers: bool = False


@dataclass(slots=True)
class Pathsend:
    """Worker -> front end: send this file as the rest of the body (``http.response.pathsend``)."""

    stream_id: int
    path: str


@dataclass(slots=True)
class EarlyHints:
    """Worker -> front end (feature "early-hints"): the app's ``http.response.early_hint``, before
    RESPONSE: each link is one ``Link`` field value of a 103 response."""

    stream_id: int
    links: tuple[bytes, ...]


@dataclass(slots=True)
class Reset:
    stream_id: int
    code: int
    reason: str = ""


# ---------------------------------------------------------------- WebSocket


@dataclass(slots=True)
class WsConnect:
    """Front end -> worker: a WebSocket upgrade request (ASGI ``websocket.connect``)."""

    stream_id: int
    scheme: str
    http_version: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: Headers
    client: Address
    server: Address
    subprotocols: tuple[str, ...] = ()
    ext: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class WsAccept:
    stream_id: int
    subprotocol: str | None = None
    headers: Headers = ()


@dataclass(slots=True)
class WsMessage:
    """One whole WebSocket message either way; text travels as UTF-8 bytes."""

    stream_id: int
    text: bool
    data: Payload


@dataclass(slots=True)
class WsClose:
    """Worker -> front end: ``websocket.close``; front end -> worker: ``websocket.disconnect``."""

    stream_id: int
    code: int = 1000
    reason: str = ""


@dataclass(slots=True)
class WsHandoff:
    """Worker -> front end (feature "handoff"): resume this session elsewhere with ``state``."""

    stream_id: int
    state: Any = None


@dataclass(slots=True)
class WsResume:
    """Front end -> worker (feature "handoff"): an accepted session handed off by another worker."""

    stream_id: int
    connect: WsConnect  # on the wire: WS_CONNECT's fields after stream_id, as an array
    subprotocol: str | None
    state: Any = None


@dataclass(slots=True)
class Invalid:
    """Not a wire event: what ``decode`` yields for one event it could not accept.

    A batch with one bad event still delivers the good ones; the receiver
    resets ``stream_id`` (or drops the peer when it is 0).
    """

    stream_id: int
    reason: str


# Each event class's kind: a table, not a class attribute, because mypyc compiles these
# dataclasses (wire/compiled.py) and takes any annotated class attribute for a field.
KIND_OF: dict[type, Kind] = {
    Hello: Kind.HELLO,
    Welcome: Kind.WELCOME,
    Refuse: Kind.REFUSE,
    Heartbeat: Kind.HEARTBEAT,
    Drain: Kind.DRAIN,
    Linger: Kind.LINGER,
    Bye: Kind.BYE,
    UnknownPeer: Kind.UNKNOWN_PEER,
    Limit: Kind.LIMIT,
    Pulse: Kind.PULSE,
    Evict: Kind.EVICT,
    Freed: Kind.FREED,
    Share: Kind.SHARE,
    Request: Kind.REQUEST,
    Body: Kind.BODY,
    Disconnect: Kind.DISCONNECT,
    Credit: Kind.CREDIT,
    Response: Kind.RESPONSE,
    Trailers: Kind.TRAILERS,
    Pathsend: Kind.PATHSEND,
    Reset: Kind.RESET,
    EarlyHints: Kind.EARLY_HINTS,
    WsConnect: Kind.WS_CONNECT,
    WsAccept: Kind.WS_ACCEPT,
    WsMessage: Kind.WS_MESSAGE,
    WsClose: Kind.WS_CLOSE,
    WsHandoff: Kind.WS_HANDOFF,
    WsResume: Kind.WS_RESUME,
}


Event = Union[
    Hello, Welcome, Refuse, Heartbeat, Drain, Bye, UnknownPeer, Limit, Linger, Pulse, Evict, Freed, Share,
    Request, Body, Disconnect, Credit, Response, Trailers, Pathsend, Reset, EarlyHints,
    WsConnect, WsAccept, WsMessage, WsClose, WsHandoff, WsResume,
]  # fmt: skip
