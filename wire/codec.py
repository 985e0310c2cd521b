"""Encode and decode wire messages: the only place msgpack options live.

A message is a list of frames (the ZeroMQ routing envelope already removed):

    frame 0      msgpack array of events, each ``[kind, stream_id, *fields]``
    frame 1..n   raw payloads, referenced from events by index

A payload field holds either the bytes themselves (msgpack bin, for small
payloads: one frame, one copy), the positive integer index of a raw frame
(large payloads: never copied through msgpack, sent zero-copy by pyzmq), or,
for BODY and RESPONSE between processes that agreed to "shm-body",
``[slot, length]``: the bytes are in a slot of the sender's shared segment
(``wire/shm.py``; ``decode`` resolves it with the ``shared`` reader). A
received payload frame may be a memoryview (the receiver's choice, to skip a
copy): BODY and RESPONSE keep it, every other event gets bytes.

``decode`` validates every field against the schema below. It raises
``DecodeError`` for a message it cannot read at all and yields ``Invalid``
for a single bad event, so one bad event never costs the others in a batch.
It raises nothing else, whatever the input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import msgpack

from . import events as ev
from .errors import DecodeError
from .event_classes import BODY_CLS, REQUEST_CLS, RESPONSE_CLS, WS_MESSAGE_CLS
from .shm import Parts, Shared

# The kinds the one-pass pack and decode handle, as ints
_KIND_REQUEST, _KIND_RESPONSE, _KIND_BODY = int(ev.Kind.REQUEST), int(ev.Kind.RESPONSE), int(ev.Kind.BODY)
_KIND_WS_MESSAGE = int(ev.Kind.WS_MESSAGE)

# Payloads up to this size travel inline in the header frame; above it, in a
# frame of their own. Past ~16 KiB an extra frame costs less than the copies.
INLINE_MAX_BYTES = 16 * 1024

_UINT_MAX = 2**63 - 1

# A received frame: bytes, or a memoryview of a large payload (channel.Channel's payload_views).
Frame = Union[bytes, memoryview]


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_frame_bytes: int = 1024 * 1024
    max_payload_bytes: int = 64 * 1024 * 1024
    max_events: int = 4096


DEFAULT_LIMITS = Limits()


class _Bad(Exception):
    pass


# ------------------------------------------------------------ field checks


def _uint(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= _UINT_MAX:
        raise _Bad("expected an unsigned integer")
    return v


def _limit(v: Any) -> int:
    if type(v) is not int or not 1 <= v <= _UINT_MAX:
        raise _Bad("limit must be an integer >= 1")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise _Bad("expected a boolean")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Bad("expected a string")
    return v


def _opt_str(v: Any) -> str | None:
    return None if v is None else _str(v)


def _bin(v: Any) -> bytes:
    if type(v) is not bytes:
        raise _Bad("expected binary")
    return v


def _status(v: Any) -> int:
    if type(v) is not int or not 100 <= v <= 999:
        raise _Bad("status must be an integer 100..999")
    return v


def _close_code(v: Any) -> int:
    if type(v) is not int or not 1000 <= v <= 4999:
        raise _Bad("close code must be an integer 1000..4999")
    return v


def _headers(v: Any) -> ev.Headers:
    if type(v) is not tuple:
        raise _Bad("headers must be an array")
    for pair in v:
        if type(pair) is not tuple or len(pair) != 2:
            raise _Bad("each header must be a [name, value] pair")
        if type(pair[0]) is not bytes or type(pair[1]) is not bytes:
            raise _Bad("header names and values must be binary")
    return v


def _links(v: Any) -> tuple[bytes, ...]:
    # A link becomes a header field value (103 on HTTP/1.1): no byte may end or break the field.
    if type(v) is not tuple:
        raise _Bad("links must be an array")
    for link in v:
        if type(link) is not bytes:
            raise _Bad("each link must be binary")
        if b"\r" in link or b"\n" in link or b"\0" in link:
            raise _Bad("a link must not contain CR, LF or NUL")
    return v


def _address(v: Any) -> ev.Address:
    if v is None:
        return None
    if type(v) is not tuple or len(v) != 2 or type(v[0]) is not str or type(v[1]) is not int:
        raise _Bad("address must be nil or [host, port]")
    return v


def _str_tuple(v: Any) -> tuple[str, ...]:
    if type(v) is not tuple or any(type(s) is not str for s in v):
        raise _Bad("expected an array of strings")
    return v


def _uint_tuple(v: Any) -> tuple[int, ...]:
    if type(v) is not tuple or any(type(i) is not int or not 0 <= i <= _UINT_MAX for i in v):
        raise _Bad("expected an array of unsigned integers")
    return v


def _map(v: Any) -> dict[str, Any]:
    if type(v) is not dict:
        raise _Bad("expected a map")
    return v


def _any(v: Any) -> Any:
    return v


def _payload(v: Any) -> Any:
    # Resolved against the raw frames or the shared segment in _build.
    if type(v) is bytes or (type(v) is int and v >= 1):
        return v
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:
        return v  # [slot, length] (shm.Reader.view checks the numbers)
    raise _Bad("payload must be binary, a frame index >= 1 or [slot, length]")


def _ws_connect_fields(v: Any) -> ev.WsConnect:
    if type(v) is not tuple:
        raise _Bad("connect must be an array")
    connect: ev.WsConnect = _build(ev.WsConnect, (0, *v), ())
    return connect


Check = Callable[[Any], Any]

# Per event class: one check per field after stream_id, in wire order.
SCHEMA: dict[type, tuple[Check, ...]] = {
    ev.Hello: (_uint, _str, _uint, _uint, _uint, _uint, _str_tuple, _map),
    ev.Welcome: (_str, _uint, _uint, _uint, _uint, _str_tuple),
    ev.Refuse: (_str,),
    ev.Heartbeat: (),
    ev.Drain: (),
    ev.Linger: (),
    ev.Bye: (_str,),
    ev.UnknownPeer: (),
    ev.Limit: (_limit,),
    ev.Pulse: (_bin, _uint, _uint, _str, _str, _str),
    ev.Evict: (_str,),
    ev.Freed: (_uint_tuple,),
    ev.Share: (_map,),
    ev.Request: (_str, _str, _str, _bin, _bin, _str, _headers, _address, _address,
                 _payload, _bool, _bool, _map),  # fmt: skip
    ev.Body: (_payload, _bool),
    ev.Disconnect: (),
    ev.Credit: (_uint,),
    ev.Response: (_status, _headers, _payload, _bool, _bool),
    ev.Trailers: (_headers, _bool),
    ev.Pathsend: (_str,),
    ev.Reset: (_uint, _str),
    ev.EarlyHints: (_links,),
    ev.WsConnect: (_str, _str, _bin, _bin, _str, _headers, _address, _address, _str_tuple, _map),
    ev.WsAccept: (_opt_str, _headers),
    ev.WsMessage: (_bool, _payload),
    ev.WsClose: (_close_code, _str),
    ev.WsHandoff: (_any,),
    ev.WsResume: (_ws_connect_fields, _opt_str, _any),
}

KIND_TO_CLASS: dict[int, type] = {ev.KIND_OF[cls]: cls for cls in SCHEMA}
CONTROL_KINDS = frozenset(k for k in ev.Kind if k < 16)
_FIELD_NAMES = {cls: tuple(f.name for f in dataclasses.fields(cls))[1:] for cls in SCHEMA}
_PAYLOAD_FIELD = {ev.Request: "body", ev.Body: "body", ev.Response: "body", ev.WsMessage: "data"}
_PAYLOAD_INDEX = {cls: _FIELD_NAMES[cls].index(name) for cls, name in _PAYLOAD_FIELD.items()}


def _build(cls: type, raw: tuple[Any, ...], frames: Sequence[Frame], shared: Any = None) -> Any:
    checks = SCHEMA[cls]
    if len(raw) - 1 < len(checks):
        raise _Bad(f"needs {len(checks)} fields, got {len(raw) - 1}")  # (_decode_event names the kind)
    # Extra trailing fields are ignored: that is how minor versions add fields.
    values = [check(value) for check, value in zip(checks, raw[1:])]
    index = _PAYLOAD_INDEX.get(cls)
    if index is not None and type(values[index]) is int:
        ref = values[index]
        if ref >= len(frames):
            raise _Bad(f"payload frame {ref} does not exist")
        frame = frames[ref]
        # A memoryview frame (Channel's payload_views) stays one only where its receiver writes it
        # on: BODY and RESPONSE bodies. Every other payload is read as bytes.
        if type(frame) is not bytes and cls is not ev.Body and cls is not ev.Response:
            frame = bytes(frame)
        values[index] = frame
    elif index is not None and type(values[index]) is tuple:
        if cls is not ev.Body and cls is not ev.Response:
            raise _Bad("only BODY and RESPONSE payloads may be shared")
        if shared is None:
            raise _Bad("shared payload without an agreed segment (feature shm-body)")
        slot, length = values[index]
        try:
            values[index] = shared.view(slot, length)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
    return cls(raw[0], *values)


# ------------------------------------------------------------------ encode


def _packable(event: Any, frames: list[Any], inline_max: int) -> list[Any]:
    cls = type(event)
    # The hot events with an inline body, field by field (a third of the generic path's cost;
    # tests/wire/test_codec.py checks both give the same list).
    if cls is RESPONSE_CLS:
        body = event.body
        if type(body) is bytes and len(body) <= inline_max:
            sid = event.stream_id
            return [_KIND_RESPONSE, sid, event.status, event.headers, body, event.more_body, event.trailers]
    elif cls is REQUEST_CLS:
        body = event.body
        if type(body) is bytes and len(body) <= inline_max:
            return [_KIND_REQUEST, event.stream_id, event.method, event.scheme, event.http_version, event.raw_path,
                    event.query_string, event.root_path, event.headers, event.client, event.server, body,
                    event.more_body, event.expect_continue, event.ext]  # fmt: skip
    elif cls is BODY_CLS:
        body = event.body
        if type(body) is bytes and len(body) <= inline_max:
            return [_KIND_BODY, event.stream_id, body, event.more_body]
    elif cls is WS_MESSAGE_CLS:
        data = event.data
        if type(data) is bytes and len(data) <= inline_max:
            return [_KIND_WS_MESSAGE, event.stream_id, event.text, data]
    return _packable_generic(event, frames, inline_max)




def _packable_generic(event: Any, frames: list[Any], inline_max: int) -> list[Any]:
    cls = type(event)
    values = [getattr(event, name) for name in _FIELD_NAMES[cls]]
    index = _PAYLOAD_INDEX.get(cls)
    if index is not None:
        payload = values[index]
        if type(payload) is Parts:  # no slot took it: joined here, once
            payload = values[index] = payload.joined()
        if type(payload) is Shared:
            values[index] = [payload.slot, payload.length]
        elif len(payload) > inline_max:
            frames.append(payload)
            values[index] = len(frames) - 1
        elif type(payload) is not bytes:
            values[index] = bytes(payload)
    if cls is ev.WsResume:
        values[0] = _packable(values[0], frames, inline_max)[2:]
    return [ev.KIND_OF[cls], event.stream_id, *values]


def encode(
    events: Sequence[ev.Event], *, inline_max: int = INLINE_MAX_BYTES, packer: Any = None
) -> list[Any]:
    """Frames for one message carrying ``events`` in order.

    Large payloads are returned as-is (not copied) in their own frames. ``packer``: the caller's
    own ``new_packer()``, reused message after message (``msgpack.packb`` builds a Packer and its
    buffer per call: reusing one measured 1.45 -> 0.84 µs for one RESPONSE, 10.4 -> 9.4 µs for
    16). A Packer is not thread-safe: one per owner (a Channel), none for a caller on another
    thread (the app server's pulse).
    """
    frames: list[Any] = [b""]
    header = [_packable(event, frames, inline_max) for event in events]
    frames[0] = packer.pack(header) if packer is not None else msgpack.packb(header, use_bin_type=True)
    return frames


def new_packer() -> Any:
    """A Packer that packs as ``encode`` does, for one owner to pass to ``encode`` again and again."""
    return msgpack.Packer(use_bin_type=True)


def pack_value(value: Any) -> bytes:
    """One value packed as ``encode`` packs fields (raises TypeError, ValueError, OverflowError...)."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack_value(data: bytes, *, lists: bool = False) -> Any:
    """One value read as ``decode`` reads fields (arrays as tuples, or lists with ``lists``): what the
    codec refuses raises (an extension type, a non-string map key...)."""
    return msgpack.unpackb(data, use_list=lists, raw=False, strict_map_key=True, ext_hook=_reject_ext)


# ------------------------------------------------------------------ decode


def _reject_ext(code: int, data: bytes) -> Any:
    raise _Bad(f"msgpack extension type {code} is not allowed")


def _address_ok(v: Any) -> bool:
    return v is None or (type(v) is tuple and len(v) == 2 and type(v[0]) is str and type(v[1]) is int)


def _pairs_ok(headers: tuple[Any, ...]) -> bool:
    """Every header a (bytes, bytes) pair: the one-pass decoders' check (``_headers`` explains)."""
    for pair in headers:
        if type(pair) is not tuple or len(pair) != 2:
            return False
        if type(pair[0]) is not bytes or type(pair[1]) is not bytes:
            return False
    return True


def _request(raw: tuple[Any, ...]) -> ev.Request | None:
    """REQUEST as front ends send it (body inline, no extra fields), checked in one pass.

    The hot path of a worker: the same checks as ``SCHEMA[ev.Request]``, a third
    of the cost. None for anything else, which ``_build`` then checks field by
    field and explains.
    """
    if len(raw) != 15:
        return None
    (_, sid, method, scheme, version, raw_path, query, root,
     headers, client, server, body, more, expect, ext) = raw  # fmt: skip
    if not (
        type(method) is str and type(scheme) is str and type(version) is str and type(raw_path) is bytes
        and type(query) is bytes and type(root) is str and type(headers) is tuple and type(body) is bytes
        and type(more) is bool and type(expect) is bool and type(ext) is dict
        and _address_ok(client) and _address_ok(server)
    ):  # fmt: skip
        return None
    if not _pairs_ok(headers):
        return None
    return REQUEST_CLS(
        sid, method, scheme, version, raw_path, query, root, headers, client, server, body, more, expect, ext
    )


def _response(raw: tuple[Any, ...]) -> ev.Response | None:
    """RESPONSE as workers send it (body inline, no extra fields), checked in one pass: the
    front end's hot path, as ``_request`` is the worker's. None: ``_build`` checks and explains."""
    if len(raw) != 7:
        return None
    _, sid, status, headers, body, more, trailers = raw
    if not (
        type(status) is int and 100 <= status <= 999 and type(headers) is tuple and type(body) is bytes
        and type(more) is bool and type(trailers) is bool
    ):  # fmt: skip
        return None
    if not _pairs_ok(headers):
        return None
    return RESPONSE_CLS(sid, status, headers, body, more, trailers)


def _decode_event(raw: Any, frames: Sequence[Frame], used: set[int], shared: Any) -> Any:
    if type(raw) is not tuple or len(raw) < 2:
        return ev.Invalid(0, "event must be an array [kind, stream_id, ...]")
    kind, stream_id = raw[0], raw[1]
    if type(stream_id) is not int or not 0 <= stream_id <= _UINT_MAX:
        return ev.Invalid(0, "stream_id must be an unsigned integer")
    cls = KIND_TO_CLASS.get(kind) if type(kind) is int else None
    if cls is None:
        return ev.Invalid(stream_id, f"unknown event kind {kind!r}")
    if (kind in CONTROL_KINDS) != (stream_id == 0):
        return ev.Invalid(stream_id, f"{cls.__name__} on the wrong stream id {stream_id}")
    if cls is REQUEST_CLS:
        request = _request(raw)
        if request is not None:
            return request
    elif cls is RESPONSE_CLS:
        response = _response(raw)
        if response is not None:
            return response
    elif cls is WS_MESSAGE_CLS and len(raw) == 4:  # inline, as both sides send an echo's messages
        _, sid, text, data = raw
        if type(text) is bool and type(data) is bytes:
            return WS_MESSAGE_CLS(sid, text, data)
    try:
        event = _build(cls, raw[1:], frames, shared)
    except _Bad as exc:
        return ev.Invalid(stream_id, f"{cls.__name__}: {exc}")
    index = _PAYLOAD_INDEX.get(cls)
    if index is not None and type(raw[2 + index]) is int:
        if raw[2 + index] in used:
            return ev.Invalid(stream_id, f"payload frame {raw[2 + index]} referenced twice")
        used.add(raw[2 + index])
    return event


def decode(frames: Sequence[Frame], *, limits: Limits = DEFAULT_LIMITS, shared: Any = None) -> list[Any]:
    """Events in the message, in order; ``Invalid`` in place of any bad one. ``shared``: the
    sender's ``shm.Reader``, when the two agreed to "shm-body" (else a shared payload is Invalid).

    Raises:
        DecodeError: the message as a whole is unreadable (no frames, a frame
            over the limits, frame 0 not a msgpack array of events).
    """
    if not frames:
        raise DecodeError("empty message")
    header = frames[0]
    if len(header) > limits.max_header_frame_bytes:
        raise DecodeError(f"header frame of {len(header)} bytes is over the limit")
    for frame in frames[1:]:
        if len(frame) > limits.max_payload_bytes:
            raise DecodeError(f"payload frame of {len(frame)} bytes is over the limit")
    try:
        batch = msgpack.unpackb(
            header, use_list=False, raw=False, strict_map_key=True, ext_hook=_reject_ext
        )
    except Exception as exc:  # msgpack raises many types for bad input; all mean the same here
        raise DecodeError(f"header frame is not valid msgpack: {exc}") from None
    if type(batch) is not tuple or not batch:
        raise DecodeError("header frame must be a non-empty array of events")
    if len(batch) > limits.max_events:
        raise DecodeError(f"{len(batch)} events in one message is over the limit")
    used: set[int] = set()
    return [_decode_event(raw, frames, used, shared) for raw in batch]
