"""Fuzzing the decoder with *structured* wrong input (test_codec.py has the byte-level cases).

Every event kind, with each field either right for its type or a value of
another type, payload references in and out of range, missing and extra
fields, control kinds on streams and the reverse, size limits at random:
``decode`` raises nothing but DecodeError, yields an event or Invalid per
raw event, and whatever it accepts the encoder can send on unchanged (the
front end forwards some of it: WS_HANDOFF state goes out again in WS_RESUME).

Examples per test: ZASGI_FUZZ_EXAMPLES (default 300; on demand e.g.
``ZASGI_FUZZ_EXAMPLES=100000 python -m pytest tests/wire/test_fuzz_codec.py``,
see tests/benchmarks/README.md).
"""

from __future__ import annotations

import os
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire import codec
from wire import events as ev
from wire.errors import DecodeError

EXAMPLES = int(os.environ.get("ZASGI_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
EVENT_TYPES = (ev.Invalid, *typing.get_args(ev.Event))

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                    st.binary(max_size=12), st.text(max_size=12))  # fmt: skip
_any = st.recursive(_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                    max_leaves=12)  # fmt: skip
_headers = st.lists(st.lists(st.binary(max_size=10), min_size=2, max_size=2), max_size=3)

# A right value per check in codec.SCHEMA; a field is sometimes swapped for _any.
_RIGHT: dict[Any, st.SearchStrategy[Any]] = {
    codec._uint: st.integers(0, 2**63 - 1),
    codec._limit: st.integers(0, 2**63 - 1),
    codec._bool: st.booleans(),
    codec._str: st.text(max_size=12),
    codec._opt_str: st.none() | st.text(max_size=12),
    codec._bin: st.binary(max_size=12),
    codec._status: st.integers(90, 1010),
    codec._close_code: st.integers(990, 5010),
    codec._headers: _headers,
    codec._address: st.none() | st.tuples(st.text(max_size=8), st.integers(0, 65535)).map(list),
    codec._str_tuple: st.lists(st.text(max_size=6), max_size=3),
    codec._map: st.dictionaries(st.text(max_size=4), _any, max_size=3),
    codec._any: _any,
    codec._payload: st.binary(max_size=64) | st.integers(0, 4)
    | st.tuples(st.integers(-1, 9), st.integers(-1, 2**21)).map(list),  # [slot, length]: Invalid without a segment
    codec._uint_tuple: st.lists(st.integers(-1, 2**64 - 1), max_size=4),
    codec._links: st.lists(st.binary(max_size=12), max_size=3),  # CR/LF/NUL in some: Invalid
}


@st.composite
def raw_events(draw: st.DrawFn) -> list[Any]:
    cls = draw(st.sampled_from(list(codec.SCHEMA)))
    control = ev.KIND_OF[cls] in codec.CONTROL_KINDS
    stream_id = draw(st.just(0) if control else st.integers(1, 2**63 - 1)) if draw(st.integers(0, 9)) else draw(
        st.sampled_from([0, 1, -1, 2**63, 2**64 - 1, "1", None]))  # fmt: skip
    fields: list[Any] = []
    for check in codec.SCHEMA[cls]:
        if check is codec._ws_connect_fields:
            inner = [draw(_RIGHT[c]) for c in codec.SCHEMA[ev.WsConnect]]
            fields.append(inner if draw(st.integers(0, 5)) else draw(_any))
        else:
            fields.append(draw(_RIGHT[check]) if draw(st.integers(0, 7)) else draw(_any))
    cut = draw(st.integers(0, 12))
    if cut == 0 and fields:
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    elif cut == 1:
        fields.append(draw(_any))  # Rule 5: a field from a future minor version
    kind = ev.KIND_OF[cls] if draw(st.integers(0, 15)) else draw(st.integers(-1, 70) | st.text(max_size=2))
    return [kind, stream_id, *fields]


def _decode_checked(frames: list[bytes], limits: codec.Limits = codec.DEFAULT_LIMITS) -> list[Any] | None:
    """decode, asserting its contract; None when it raised DecodeError."""
    try:
        out = codec.decode(frames, limits=limits)
    except DecodeError as exc:
        assert str(exc)  # a reason to log
        return None
    assert out and all(type(e) in EVENT_TYPES for e in out)
    return out


@FUZZ
@given(st.lists(raw_events(), min_size=1, max_size=5), st.lists(st.binary(max_size=40), max_size=4))
def test_structured_wrong_events_decode_to_events_or_invalid(raw: list[list[Any]], extra: list[bytes]) -> None:
    frames = [msgpack.packb(raw, use_bin_type=True), *extra]
    out = _decode_checked(frames)
    assert out is not None and len(out) == len(raw)  # one bad event never costs the others
    for event, source in zip(out, raw):
        if type(event) is ev.Invalid:
            assert event.reason
            assert type(event.stream_id) is int and event.stream_id >= 0
            continue
        assert ev.KIND_OF[type(event)] == source[0] and event.stream_id == source[1]
        # What was accepted can be sent on as it is: encode never raises, and it reads back the same.
        again = _decode_checked([bytes(f) for f in codec.encode([event])])
        assert again is not None and codec.encode(again) == codec.encode([event])  # bytes: NaN != NaN


@FUZZ
@given(
    st.lists(raw_events(), min_size=1, max_size=6),
    st.lists(st.integers(0, 300), max_size=4),
    st.integers(1, 400), st.integers(0, 300), st.integers(1, 8),
)  # fmt: skip
def test_size_limits_reject_exactly_what_is_over_them(
    raw: list[list[Any]], frame_sizes: list[int], max_header: int, max_payload: int, max_events: int
) -> None:
    limits = codec.Limits(max_header_frame_bytes=max_header, max_payload_bytes=max_payload, max_events=max_events)
    frames = [msgpack.packb(raw, use_bin_type=True), *(b"x" * n for n in frame_sizes)]
    over = (len(frames[0]) > max_header or any(n > max_payload for n in frame_sizes)
            or len(raw) > max_events)  # fmt: skip
    out = _decode_checked(frames, limits)
    assert (out is None) == over


@pytest.mark.parametrize("depth", [1, 100, 1020, 5000])
def test_deeply_nested_values_are_read_or_refused_never_a_crash(depth: int) -> None:
    state: Any = None
    for _ in range(depth):
        state = [state]
    try:
        header = msgpack.packb([[int(ev.Kind.WS_HANDOFF), 3, state]])
    except ValueError:  # msgpack will not even write it: build the bytes by hand
        header = b"\x91\x93\x24\x03" + b"\x91" * depth + b"\xc0"
    out = _decode_checked([header])
    if out is not None and type(out[0]) is ev.WsHandoff:
        # The front end sends the state on in WS_RESUME, one array deeper: never an exception.
        connect = ev.WsConnect(0, "ws", "1.1", b"/", b"", "", (), None, None, (), {})
        codec.encode([ev.WsResume(5, connect, None, out[0].state)])
