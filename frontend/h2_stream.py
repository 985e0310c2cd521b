"""One HTTP/2 stream as the session sees it: the events it reports, and its two halves' lifecycles.

A stream is two halves, each an enum with its transition table here: the
request (client -> us: RECEIVING -> COMPLETE, or ABANDONED when reset or
answered first) and the response (us -> client: IDLE -> STREAMING -> ENDING
-> DONE, DISCARDING for HEAD/204/304, RESET). ``h2_session`` moves them only
through ``move``; a move the table lacks is ``Misuse`` (our bug, never the
client's: client input that breaks the protocol is h2's ProtocolError).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

Headers = tuple[tuple[bytes, bytes], ...]

# Hop-by-hop fields a worker may send for HTTP/1 that HTTP/2 forbids (RFC 9113 §8.2.2).
_CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)

# ------------------------------------------------------------------ events for the glue


@dataclass(slots=True)
class StreamOpened:
    stream_id: int
    method: str
    scheme: str
    authority: bytes
    raw_path: bytes
    query_string: bytes
    headers: Headers
    end: bool  # no body follows
    http_version: str = "2"


@dataclass(slots=True)
class BodyReceived:
    stream_id: int
    data: bytes
    end: bool


@dataclass(slots=True)
class Sent:
    stream_id: int
    bytes: int


@dataclass(slots=True)
class StreamCancelled:
    stream_id: int
    error_code: int


@dataclass(slots=True)
class ConnectionEnded:
    error_code: int
    reason: str
    by_client: bool


Event = StreamOpened | BodyReceived | Sent | StreamCancelled | ConnectionEnded


class BadResponse(ValueError):
    """The worker's response head cannot go out on HTTP/2 (nothing was sent: answer 502)."""


class Misuse(RuntimeError):
    """The glue called us in a state that does not allow it (a bug of ours, not the client's)."""


# ------------------------------------------------------------------ lifecycles


class RequestHalf(Enum):
    RECEIVING = "receiving"  # the body is still arriving
    COMPLETE = "complete"  # END_STREAM seen
    ABANDONED = "abandoned"  # reset, or answered before it ended (RST_STREAM NO_ERROR, §8.1)


class ResponseHalf(Enum):
    IDLE = "idle"  # nothing sent (1xx informational responses aside)
    STREAMING = "streaming"  # HEADERS sent, body going out
    ENDING = "ending"  # the whole response is queued; waiting for the client's window
    DISCARDING = "discarding"  # HEAD/204/304: HEADERS ended the stream; the worker's body is dropped
    DONE = "done"  # END_STREAM sent
    RESET = "reset"


_R, _S = RequestHalf, ResponseHalf
REQUEST_TRANSITIONS: dict[tuple[RequestHalf, str], RequestHalf] = {
    (_R.RECEIVING, "data"): _R.RECEIVING,
    (_R.RECEIVING, "end"): _R.COMPLETE,
    (_R.RECEIVING, "abandon"): _R.ABANDONED,
    (_R.COMPLETE, "abandon"): _R.COMPLETE,
    (_R.ABANDONED, "abandon"): _R.ABANDONED,
}
RESPONSE_TRANSITIONS: dict[tuple[ResponseHalf, str], ResponseHalf] = {
    (_S.IDLE, "inform"): _S.IDLE,
    (_S.IDLE, "respond"): _S.STREAMING,
    (_S.IDLE, "respond_bodiless"): _S.DISCARDING,
    (_S.STREAMING, "body"): _S.STREAMING,
    (_S.STREAMING, "end"): _S.ENDING,
    (_S.ENDING, "flushed"): _S.DONE,
    (_S.DISCARDING, "body"): _S.DISCARDING,
    (_S.DISCARDING, "end"): _S.DONE,
    **{(state, "reset"): _S.RESET for state in (_S.IDLE, _S.STREAMING, _S.ENDING, _S.DISCARDING)},
}
_RESPONSE_OVER = (_S.DONE, _S.RESET)


def move(table: dict[tuple[Any, str], Any], state: Any, symbol: str, stream_id: int) -> Any:
    try:
        return table[(state, symbol)]
    except KeyError:
        raise Misuse(f"stream {stream_id}: {symbol!r} in state {state.value}") from None


class H2Stream:
    __slots__ = ("stream_id", "method", "request", "response", "out", "trailers", "unacked", "stalled_since")

    def __init__(self, stream_id: int, method: str, end: bool) -> None:
        self.stream_id = stream_id
        self.method = method
        self.request = _R.COMPLETE if end else _R.RECEIVING
        self.response = _S.IDLE
        self.out: deque[bytes] = deque()  # response body waiting for the client's window
        self.trailers: list[tuple[bytes, bytes]] | None = None  # sent after ``out`` when ENDING
        self.unacked = 0  # request bytes received, not yet given back to the client's window
        self.stalled_since: float | None = None


def clean_fields(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Lower-cased names, HTTP/1 hop-by-hop fields dropped; CR, LF or NUL anywhere refused."""
    fields = []
    for name, value in headers:
        name = bytes(name).lower()
        if name in _CONNECTION_FIELDS or (name == b"te" and value.lower() != b"trailers"):
            continue
        if b"\r" in value or b"\n" in value or b"\0" in value or not name or name[:1] == b":":
            raise BadResponse(f"bad header field {name!r}")
        fields.append((name, bytes(value)))
    return fields
