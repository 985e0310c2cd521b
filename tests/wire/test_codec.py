"""Codec: every event round-trips; bad input yields DecodeError or Invalid, nothing else."""

from __future__ import annotations

import dataclasses
import typing

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import codec
from wire import events as ev
from wire.errors import DecodeError

from .examples import EXAMPLES


def test_every_event_kind_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(typing.get_args(ev.Event))


def test_every_kind_has_a_class_and_the_other_way_round() -> None:
    assert set(codec.KIND_TO_CLASS) == set(ev.Kind)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_roundtrip_alone(event: ev.Event) -> None:
    assert codec.decode(codec.encode([event])) == [event]


def test_roundtrip_as_one_batch_keeps_order() -> None:
    assert codec.decode(codec.encode(EXAMPLES)) == EXAMPLES


def test_small_payload_is_inline_and_large_one_gets_its_own_frame() -> None:
    small = ev.Body(1, b"x" * codec.INLINE_MAX_BYTES, True)
    large = ev.Body(2, b"y" * (codec.INLINE_MAX_BYTES + 1), False)
    frames = codec.encode([small, large])
    assert len(frames) == 2 and frames[1] is large.body  # not copied
    assert codec.decode(frames) == [small, large]


def test_memoryview_payload_is_accepted() -> None:
    data = bytearray(b"z" * 100_000)
    frames = codec.encode([ev.Body(1, memoryview(data)[10:], True)])
    assert codec.decode([bytes(f) for f in frames]) == [ev.Body(1, bytes(data[10:]), True)]


def test_memoryview_frames_stay_views_only_for_bodies() -> None:
    """A receiver may hand large payload frames over as memoryviews (Channel's payload_views):
    BODY and RESPONSE keep them (written on uncopied), every other payload is read as bytes."""
    big = b"v" * (codec.INLINE_MAX_BYTES + 1)
    events = [ev.Body(1, big, True), ev.Response(2, 200, (), big, True, False),
              ev.WsMessage(3, False, big), ev.Request(4, "POST", "http", "1.1", b"/", b"", "", (), None, None,
                                                      big, True, False, {})]  # fmt: skip
    frames = codec.encode(events)
    out = codec.decode([frames[0], *(memoryview(bytes(f)) for f in frames[1:])])
    assert out == events
    assert [type(e.body if not isinstance(e, ev.WsMessage) else e.data) for e in out] == [
        memoryview, memoryview, bytes, bytes]


def test_extra_trailing_fields_are_ignored() -> None:
    header = msgpack.packb([[int(ev.Kind.CREDIT), 3, 100, "future field"]], use_bin_type=True)
    assert codec.decode([header]) == [ev.Credit(3, 100)]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([99, 1], "unknown event kind"),
        ([int(ev.Kind.CREDIT), 0, 5], "wrong stream id"),
        ([int(ev.Kind.HEARTBEAT), 4], "wrong stream id"),
        ([int(ev.Kind.LIMIT), 0, 0], "limit must be an integer >= 1"),
        ([int(ev.Kind.LIMIT), 0, -3], "limit must be an integer >= 1"),
        ([int(ev.Kind.LIMIT), 0, "8"], "limit must be an integer >= 1"),
        ([int(ev.Kind.PULSE), 0, "w/1", 600, 0, "", "", ""], "expected binary"),
        ([int(ev.Kind.PULSE), 0, b"w/1", -1, 0, "", "", ""], "unsigned"),
        ([int(ev.Kind.EVICT), 0], "needs 1 fields"),
        ([int(ev.Kind.CREDIT), 3], "needs 1 fields"),
        ([int(ev.Kind.CREDIT), 3, -1], "unsigned"),
        ([int(ev.Kind.CREDIT), 3, True], "unsigned"),
        ([int(ev.Kind.BODY), 3, "text", False], "payload"),
        ([int(ev.Kind.BODY), 3, 1, False], "does not exist"),
        ([int(ev.Kind.RESPONSE), 3, 42, [], b"", False, False], "status"),
        ([int(ev.Kind.RESPONSE), 3, 200, [[b"a"]], b"", False, False], "pair"),
        ([int(ev.Kind.RESPONSE), 3, 200, [["a", "b"]], b"", False, False], "binary"),
        ([int(ev.Kind.WS_CLOSE), 3, 999, ""], "close code"),
        (["x", 1], "unknown event kind"),
        ([1], "event must be"),
    ],
)
def test_one_bad_event_is_invalid_and_its_neighbours_survive(raw: list[object], reason: str) -> None:
    good = [int(ev.Kind.CREDIT), 8, 1]
    header = msgpack.packb([good, raw, good], use_bin_type=True)
    out = codec.decode([header])
    assert out[0] == out[2] == ev.Credit(8, 1)
    assert isinstance(out[1], ev.Invalid) and reason in out[1].reason


def test_a_frame_referenced_twice_is_invalid() -> None:
    header = msgpack.packb([[int(ev.Kind.BODY), 1, 1, True], [int(ev.Kind.BODY), 2, 1, True]])
    out = codec.decode([header, b"p" * 10])
    assert out[0] == ev.Body(1, b"p" * 10, True)
    assert isinstance(out[1], ev.Invalid) and "twice" in out[1].reason


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"\xc1"],  # never-used msgpack byte
        [msgpack.packb(5)],
        [msgpack.packb([])],
        [b"\x92\x01"],  # truncated
        [msgpack.packb([[1, 0, b"\xff"]], use_bin_type=False)],  # str that is not UTF-8
        [msgpack.packb([[4, 0, msgpack.ExtType(5, b"x")]])],
    ],
)
def test_unreadable_messages_raise_decode_error(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError):
        codec.decode(frames)


def test_limits_are_enforced() -> None:
    limits = codec.Limits(max_header_frame_bytes=100, max_payload_bytes=10, max_events=2)
    with pytest.raises(DecodeError, match="header frame"):
        codec.decode([b"\x90" + b"\x00" * 200], limits=limits)
    with pytest.raises(DecodeError, match="payload frame"):
        codec.decode([msgpack.packb([[4, 0]]), b"x" * 11], limits=limits)
    with pytest.raises(DecodeError, match="events"):
        codec.decode([msgpack.packb([[4, 0]] * 3)], limits=limits)


# ----------------------------------------------------------------- hypothesis

_headers = st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200)), max_size=20).map(tuple)
_addr = st.none() | st.tuples(st.text(max_size=40), st.integers(0, 65535))


@st.composite
def requests(draw: st.DrawFn) -> ev.Request:
    return ev.Request(
        draw(st.integers(1, 2**63 - 1)), draw(st.sampled_from(["GET", "POST", "PATCH", "X-Y"])),
        draw(st.sampled_from(["http", "https"])), draw(st.sampled_from(["1.0", "1.1"])),
        draw(st.binary(max_size=300)), draw(st.binary(max_size=300)), draw(st.text(max_size=20)),
        draw(_headers), draw(_addr), draw(_addr), draw(st.binary(max_size=40_000)),
        draw(st.booleans()), draw(st.booleans()), draw(st.dictionaries(st.text(max_size=10), st.integers(-(2**63), 2**63 - 1))),
    )  # fmt: skip


_stream = st.integers(1, 2**63 - 1)
_stream_events = st.one_of(
    requests(),
    st.builds(ev.Body, _stream, st.binary(max_size=40_000), st.booleans()),
    st.builds(ev.Response, _stream, st.integers(100, 999), _headers, st.binary(max_size=40_000),
              st.booleans(), st.booleans()),  # fmt: skip
    st.builds(ev.Credit, _stream, st.integers(0, 2**63 - 1)),
    st.builds(ev.WsMessage, _stream, st.booleans(), st.binary(max_size=40_000)),
    st.builds(ev.WsClose, _stream, st.integers(1000, 4999), st.text(max_size=123)),
    st.builds(ev.Trailers, _stream, _headers, st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_stream_events, min_size=1, max_size=8))
def test_generated_batches_roundtrip(events: list[ev.Event]) -> None:
    assert codec.decode(codec.encode(events)) == events


@settings(max_examples=200, deadline=None)
@given(st.lists(_stream_events, min_size=1, max_size=8))
def test_generated_batches_roundtrip_from_memoryview_frames(events: list[ev.Event]) -> None:
    # As the front end receives them: payload frames as views of the received messages.
    frames = codec.encode(events)
    views = [frames[0], *(memoryview(bytes(f)) for f in frames[1:])]
    assert codec.decode(views) == events


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_random_frames_raise_only_decode_error(frames: list[bytes]) -> None:
    try:
        codec.decode(frames)
    except DecodeError:
        pass


_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=20) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)


# 250 examples: 1,000 took 55 s on a loaded 2-core machine and passed pytest-timeout's 120 s in CI
# (drawing the recursive values is the cost, not the decoding under test).
@settings(max_examples=250, deadline=None)
@given(st.lists(st.lists(_msgpack_values, max_size=16), min_size=1, max_size=4), st.lists(st.binary(max_size=50), max_size=3))
def test_mistyped_events_yield_invalid_never_an_exception(raw: list[list[object]], extra: list[bytes]) -> None:
    # Well-formed msgpack arrays with any values: each event decodes to itself or to Invalid.
    for event in raw:
        if event:
            event[0] = int(event[0]) % 40 if isinstance(event[0], int) else event[0]
    header = msgpack.packb(raw, use_bin_type=True)
    out = codec.decode([header, *extra])
    assert len(out) == len(raw)
    for item in out:
        assert isinstance(item, (ev.Invalid, *typing.get_args(ev.Event)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_stream_events, min_size=1, max_size=4), st.data())
def test_truncated_or_corrupted_messages_never_raise_anything_else(events: list[ev.Event], data: st.DataObject) -> None:
    frames = [bytes(f) for f in codec.encode(events)]
    i = data.draw(st.integers(0, len(frames) - 1))
    cut = data.draw(st.integers(0, max(len(frames[i]) - 1, 0)))
    flip = data.draw(st.integers(0, 255))
    corrupted = bytearray(frames[i][:cut] + frames[i][cut + 1 :]) if data.draw(st.booleans()) else bytearray(frames[i])
    if corrupted:
        corrupted[cut % len(corrupted)] ^= flip
    frames[i] = bytes(corrupted)
    try:
        codec.decode(frames)
    except DecodeError:
        pass


# ---------------------------------------------------------------- RESPONSE's one-pass decode


_RESPONSE = ev.Response(5, 200, ((b"content-type", b"text/plain"),), b"Hello, world!", False, False)


@pytest.mark.parametrize(
    "event",
    [_RESPONSE, ev.Response(6, 204, (), b"", False, False), ev.Response(7, 999, (), b"x", True, True)],
    ids=["hello", "empty", "streamed"],
)
def test_response_fast_path_decodes_what_was_encoded(event: ev.Response) -> None:
    assert codec.decode(codec.encode([event])) == [event]


@pytest.mark.parametrize(
    "index, value, reason",
    [
        (2, 99, "status must be an integer 100..999"),
        (2, 1000, "status must be an integer 100..999"),
        (2, True, "status must be an integer 100..999"),
        (3, ((b"a", "b"),), "header names and values must be binary"),
        (3, ((b"a",),), "each header must be a [name, value] pair"),
        (4, "text", "payload must be binary, a frame index >= 1 or [slot, length]"),
        (5, 0, "expected a boolean"),
        (6, None, "expected a boolean"),
    ],
)
def test_a_bad_response_field_gets_the_general_paths_error(index: int, value: object, reason: str) -> None:
    raw = codec._packable(_RESPONSE, [], codec.INLINE_MAX_BYTES)
    raw[index] = value
    (event,) = codec.decode([msgpack.packb([raw], use_bin_type=True)])
    assert event == ev.Invalid(5, f"Response: {reason}")


def test_a_response_with_a_later_minor_versions_field_still_decodes() -> None:
    raw = [*codec._packable(_RESPONSE, [], codec.INLINE_MAX_BYTES), "new field"]
    assert codec.decode([msgpack.packb([raw], use_bin_type=True)]) == [_RESPONSE]


# ---------------------------------------------------------------- WS_MESSAGE's one-pass decode


_WS = int(ev.Kind.WS_MESSAGE)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ([_WS, 3, True, b"hi"], ev.WsMessage(3, True, b"hi")),  # the fast path
        ([_WS, 3, False, b"hi", "new field"], ev.WsMessage(3, False, b"hi")),  # a later minor version's
        ([_WS, 3, 1, b"hi"], ev.Invalid(3, "WsMessage: expected a boolean")),
        ([_WS, 3, True, "hi"], ev.Invalid(3, "WsMessage: payload must be binary, a frame index >= 1 or [slot, length]")),
        ([_WS, 3, True], ev.Invalid(3, "WsMessage: needs 2 fields, got 1")),
        ([_WS, 0, True, b"hi"], ev.Invalid(0, "WsMessage on the wrong stream id 0")),
    ],
)
def test_ws_message_decodes_as_the_general_path_checks(raw: list[object], expected: ev.Event) -> None:
    assert codec.decode([msgpack.packb([raw], use_bin_type=True)]) == [expected]


@pytest.mark.parametrize(
    "event",
    [
        _RESPONSE,
        ev.Response(6, 500, (), b"x" * (codec.INLINE_MAX_BYTES + 1), True, False),  # body in its own frame
        ev.Request(9, "POST", "https", "1.1", b"/p", b"q=1", "/r", ((b"A", b"b"),), ("1.2.3.4", 5), None,
                   b"body", True, True, {"request_id": "x"}),  # fmt: skip
        ev.Request(10, "GET", "http", "1.0", b"/", b"", "", (), None, None, bytearray(b"ab"), False, False,
                   {}),  # fmt: skip
        ev.Body(3, b"chunk", True),
        ev.Body(3, memoryview(b"view"), False),
        ev.WsMessage(4, True, b"text"),
        ev.WsMessage(4, False, b"\x00" * (codec.INLINE_MAX_BYTES + 1)),  # data in its own frame
        ev.WsMessage(4, False, bytearray(b"bin")),
    ],
)
def test_the_hot_events_pack_as_the_generic_path_does(event: ev.Event) -> None:
    fast_frames: list[object] = [b""]
    generic_frames: list[object] = [b""]
    fast = codec._packable(event, fast_frames, codec.INLINE_MAX_BYTES)
    generic = codec._packable_generic(event, generic_frames, codec.INLINE_MAX_BYTES)
    assert msgpack.packb(fast, use_bin_type=True) == msgpack.packb(generic, use_bin_type=True)
    assert fast_frames == generic_frames
    name = "data" if type(event) is ev.WsMessage else "body"
    payload = {name: bytes(getattr(event, name))}  # the decoder always yields bytes
    assert codec.decode(codec.encode([event])) == [dataclasses.replace(event, **payload)]


def test_early_hints_round_trip() -> None:
    hint = ev.EarlyHints(5, (b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"))
    assert codec.decode(codec.encode([hint])) == [hint]
    assert ev.Kind.EARLY_HINTS == 24 and codec.KIND_TO_CLASS[24] is ev.EarlyHints


@pytest.mark.parametrize(
    "links, why",
    [
        ((b"</a>; rel=preload\r\nSet-Cookie: x=1",), "CR, LF or NUL"),
        ((b"</a>\n",), "CR, LF or NUL"),
        ((b"</a>\0",), "CR, LF or NUL"),
        (("</a>; rel=preload",), "binary"),
        (b"</a>", "array"),
    ],
)
def test_early_hints_with_a_bad_link_are_invalid(links: object, why: str) -> None:
    """A link is written as a header field value: a worker cannot split the 103 through it."""
    header = codec.pack_value([[int(ev.Kind.EARLY_HINTS), 5, links]])
    [event] = codec.decode([header])
    assert type(event) is ev.Invalid and event.stream_id == 5 and why in event.reason
