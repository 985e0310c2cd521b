"""Hypothesis: arbitrary frames into an H2Session never raise, and what it holds stays bounded."""

from __future__ import annotations

from typing import Any

from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)  # fmt: skip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontend.h2_session import H2Limits, Misuse, SessionState, StreamOpened
from tests.frontend.h2_pair import Pair

LIMITS = H2Limits(max_concurrent_streams=8, stream_window_bytes=16384, connection_window_bytes=65535)
OUTPUT_PER_STEP_MAX = 256 * 1024  # what one read may make us write (ACKs, RSTs, a response)

stream_ids = st.sampled_from([0, 1, 3, 5, 7, 9, 2, 2**31 - 1])
payloads = st.binary(max_size=300)
flag_sets = st.sets(st.sampled_from(["END_STREAM", "END_HEADERS", "PADDED", "PRIORITY", "ACK"]), max_size=3)


def _flags(frame_type: Any, flags: set[str]) -> list[str]:
    return [f for f in flags if f in frame_type.defined_flags]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 9, 10, 11]))
    sid = draw(stream_ids)
    flags = draw(flag_sets)
    if kind == 0:
        f: Any = DataFrame(sid or 1, draw(payloads), flags=_flags(DataFrame, flags))
    elif kind == 1:  # a valid header block, so that streams open
        block = HEADER_BLOCKS[draw(st.integers(0, len(HEADER_BLOCKS) - 1))]
        end = ["END_STREAM"] if draw(st.booleans()) else []
        f = HeadersFrame(draw(st.sampled_from([1, 3, 5, 7, 9, 11, 13])), block, flags=["END_HEADERS", *end])
    elif kind == 2:
        f = HeadersFrame(sid or 1, draw(payloads), flags=_flags(HeadersFrame, flags))
    elif kind == 3:
        f = ContinuationFrame(sid or 1, draw(payloads), flags=_flags(ContinuationFrame, flags))
    elif kind == 4:
        f = PriorityFrame(sid or 1, depends_on=draw(stream_ids), stream_weight=draw(st.integers(0, 255)))
    elif kind == 5:
        f = RstStreamFrame(sid or 1, error_code=draw(st.integers(0, 20)))
    elif kind == 6:
        settings_ = draw(st.dictionaries(st.integers(1, 9), st.integers(0, 2**31), max_size=3))
        f = SettingsFrame(0, settings=settings_)
    elif kind == 7:
        f = PingFrame(0, opaque_data=draw(st.binary(min_size=8, max_size=8)), flags=_flags(PingFrame, flags))
    elif kind == 8:
        f = GoAwayFrame(0, last_stream_id=draw(stream_ids), error_code=draw(st.integers(0, 20)))
    elif kind == 9:
        f = WindowUpdateFrame(draw(stream_ids), window_increment=draw(st.integers(0, 2**31 - 1)))
    elif kind == 10:
        f = PushPromiseFrame(sid or 1, promised_stream_id=2, data=draw(payloads), flags=["END_HEADERS"])
    else:
        return draw(st.binary(max_size=64))  # not a frame at all
    return f.serialize()


def _header_blocks() -> list[bytes]:
    from hpack import Encoder

    encoder = Encoder()  # (a fresh encoder per block: no dynamic-table references)
    blocks = []
    for method, path in (("GET", "/"), ("POST", "/up?x=1"), ("HEAD", "/h"), ("CONNECT", None)):
        headers = [(":method", method), (":scheme", "https"), (":authority", "a")]
        if path is not None:
            headers.append((":path", path))
        blocks.append(Encoder().encode(headers))
    blocks.append(encoder.encode([("x-trailer", "v")]))
    return blocks


HEADER_BLOCKS = _header_blocks()

actions = st.lists(
    st.one_of(
        frames().map(lambda data: ("frames", data)),
        st.tuples(st.just("respond"), st.integers(100, 600), st.binary(max_size=40000), st.booleans()),
        st.tuples(st.just("body"), st.binary(max_size=40000), st.booleans()),
        st.tuples(st.just("trailers")),
        st.tuples(st.just("consumed"), st.integers(0, 70000)),
        st.tuples(st.just("reset"), st.integers(0, 13)),
        st.tuples(st.just("goaway")),
        st.tuples(st.just("expire"), st.floats(0, 200)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_no_exception_escapes_and_memory_stays_bounded(steps: list[tuple[Any, ...]]) -> None:
    pair = Pair(LIMITS)
    pair.request(end=False)  # one honest stream first, so that the responses have one to go to
    opened = [e.stream_id for e in pair.to_server() if isinstance(e, StreamOpened)]
    queued = 0
    for step in steps:
        name = step[0]
        if name == "frames":
            events = pair.to_server(step[1])
            opened += [e.stream_id for e in events if isinstance(e, StreamOpened)]
        elif opened:
            sid = opened[-1]
            try:
                if name == "respond":
                    pair.session.respond(sid, step[1], ((b"x", b"y"),), step[2], step[3])
                    queued += len(step[2])
                elif name == "body":
                    pair.session.send_body(sid, step[1], step[2])
                    queued += len(step[1])
                elif name == "trailers":
                    pair.session.send_trailers(sid, ((b"t", b"v"),))
                elif name == "consumed":
                    pair.session.consumed(sid, step[1])
                elif name == "reset":
                    pair.session.reset(sid, step[1])
                elif name == "goaway":
                    pair.session.goaway()
                else:
                    pair.now += step[1]
                    pair.session.expire(pair.now)
            except (Misuse, ValueError):
                pass  # our own call out of turn (BadResponse is a ValueError): not the client's doing
        out = pair.session.data_to_send()
        assert len(out) <= OUTPUT_PER_STEP_MAX
        assert pair.session.open_streams <= LIMITS.max_concurrent_streams + 1
        assert pair.session.pending_bytes <= queued
    pair.session.close(ErrorCodes.NO_ERROR)
    assert pair.session.state is SessionState.CLOSED and pair.session.open_streams == 0
