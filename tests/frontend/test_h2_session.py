"""frontend.h2_session: the sans-IO HTTP/2 session, driven by h2 as the client."""

from __future__ import annotations

import pytest
from h2 import events as h2e
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)  # fmt: skip

from frontend.h2_guard import Budget, FloodLimits
from frontend.h2_session import (
    BadResponse,
    BodyReceived,
    ConnectionEnded,
    H2Limits,
    H2Session,
    Misuse,
    Sent,
    SessionState,
    StreamCancelled,
    StreamOpened,
)  # fmt: skip
from frontend.h2_stream import REQUEST_TRANSITIONS, RESPONSE_TRANSITIONS, RequestHalf, ResponseHalf
from tests.frontend.h2_pair import REQUEST, Pair, post_headers


def parse_frames(data: bytes) -> list[Frame]:
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


# ---------------------------------------------------------------- requests and responses


def test_get_becomes_a_stream_with_the_wire_request_fields() -> None:
    pair = Pair()
    sid = pair.request(REQUEST + [("cookie", "a=1"), ("cookie", "b=2"), ("x-thing", "v")])
    [opened] = pair.to_server()
    assert isinstance(opened, StreamOpened)
    assert (opened.stream_id, opened.method, opened.scheme, opened.http_version) == (sid, "GET", "https", "2")
    assert (opened.raw_path, opened.query_string, opened.end) == (b"/a", b"x=1", True)
    headers = dict(opened.headers)
    assert headers[b"host"] == b"example.com"  # from :authority
    assert headers[b"cookie"] == b"a=1; b=2"  # RFC 9113 §8.2.3
    assert not any(name.startswith(b":") for name, _ in opened.headers)


def test_whole_response_then_stream_forgotten() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    sent = pair.session.respond(sid, 200, ((b"Content-Type", b"text/plain"),), b"hello", end=True)
    assert sent == 5
    pair.to_client()
    [resp] = pair.client_of(h2e.ResponseReceived, sid)
    assert dict(resp.headers) == {b":status": b"200", b"content-type": b"text/plain"}
    assert b"".join(e.data for e in pair.client_of(h2e.DataReceived, sid)) == b"hello"
    assert pair.client_of(h2e.StreamEnded, sid)
    assert pair.session.open_streams == 0


def test_request_body_streams_and_window_reopens_only_when_consumed() -> None:
    limits = H2Limits(stream_window_bytes=16 * 1024, connection_window_bytes=64 * 1024)
    pair = Pair(limits)
    pair.to_client()  # our SETTINGS reach the client, its ACK reaches us
    pair.to_server()
    pair.to_client()
    sid = pair.request(post_headers(), end=False)
    pair.to_server()
    window = pair.client.local_flow_control_window(sid)
    assert window == 16 * 1024
    pair.client.send_data(sid, b"x" * window)
    [body] = pair.to_server()
    assert isinstance(body, BodyReceived) and len(body.data) == window and not body.end
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == 0  # not consumed: no WINDOW_UPDATE
    pair.session.consumed(sid, window)
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == window
    pair.client.send_data(sid, b"end", end_stream=True)
    [last] = pair.to_server()
    assert last == BodyReceived(sid, b"end", True)


def test_response_waits_for_the_clients_window_and_reports_sent() -> None:
    pair = Pair(client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    pair.to_client()
    sid = pair.request()
    pair.to_server()
    pair.to_client()
    sent = pair.session.respond(sid, 200, (), b"y" * 2500, end=True)
    assert sent == 1000  # the window
    assert pair.session.pending_bytes == 1500
    data = pair.session.data_to_send()
    pair.client.receive_data(data)  # the client reads but does not acknowledge yet
    pair.client.acknowledge_received_data(1000, sid)
    events = pair.to_server()
    assert Sent(sid, 1000) in events
    pair.client.receive_data(pair.session.data_to_send())
    pair.client.acknowledge_received_data(1000, sid)
    assert Sent(sid, 500) in pair.to_server()
    pair.to_client()
    assert pair.client_of(h2e.StreamEnded, sid)
    assert pair.session.open_streams == 0 and pair.session.pending_bytes == 0


def test_trailers_follow_the_body() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.session.respond(sid, 200, ((b"trailer", b"x-checksum"),), b"part")
    pair.session.send_body(sid, b"-more")
    pair.session.send_trailers(sid, ((b"x-checksum", b"abc"),))
    pair.to_client()
    [trailers] = pair.client_of(h2e.TrailersReceived, sid)
    assert trailers.headers == [(b"x-checksum", b"abc")]
    assert pair.session.open_streams == 0


def test_head_and_204_end_at_the_headers_and_drop_the_body() -> None:
    pair = Pair()
    head = pair.request([(":method", "HEAD")] + REQUEST[1:])
    pair.to_server()
    assert pair.session.respond(head, 200, ((b"content-length", b"10"),), b"0123", end=False) == 4
    assert pair.session.send_body(head, b"456789", end=True) == 6
    pair.to_client()
    assert not pair.client_of(h2e.DataReceived, head)
    assert pair.client_of(h2e.StreamEnded, head)
    assert pair.session.open_streams == 0


def test_hop_by_hop_fields_are_dropped_and_bad_values_refused() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    with pytest.raises(BadResponse):
        pair.session.respond(sid, 200, ((b"x-evil", b"a\r\nb"),))
    pair.session.respond(sid, 200, ((b"Connection", b"close"), (b"Transfer-Encoding", b"chunked")), end=True)
    pair.to_client()
    [resp] = pair.client_of(h2e.ResponseReceived, sid)
    assert dict(resp.headers) == {b":status": b"200"}


def test_early_hints_before_the_response() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.session.inform(sid, 103, ((b"link", b"</a.css>; rel=preload"),))
    pair.session.respond(sid, 200, (), b"ok", end=True)
    pair.to_client()
    assert pair.client_of(h2e.InformationalResponseReceived, sid)
    with pytest.raises(Misuse):
        pair.session.inform(sid, 103, ())


def test_answered_before_the_body_ended_resets_no_error() -> None:
    pair = Pair()
    sid = pair.request(post_headers(), end=False)
    pair.client.send_data(sid, b"abc")
    pair.to_server()
    pair.session.respond(sid, 413, (), b"", end=True)
    pair.to_client()
    [reset] = pair.client_of(h2e.StreamReset, sid)
    assert reset.error_code == ErrorCodes.NO_ERROR
    assert pair.session.open_streams == 0


def test_client_reset_cancels_the_stream() -> None:
    pair = Pair()
    sid = pair.request(post_headers(), end=False)
    pair.to_server()
    pair.client.reset_stream(sid, ErrorCodes.CANCEL)
    assert pair.to_server() == [StreamCancelled(sid, ErrorCodes.CANCEL)]
    assert pair.session.send_body(sid, b"late") == 4  # dropped, credited
    assert pair.session.open_streams == 0


def test_oversized_field_and_too_many_fields_get_431() -> None:
    pair = Pair(H2Limits(max_field_bytes=100, max_headers=3))
    big = pair.request(REQUEST + [("x-big", "v" * 200)])
    many = pair.request(REQUEST + [(f"x-{i}", "v") for i in range(5)])
    assert pair.to_server() == []
    pair.to_client()
    statuses = {e.stream_id: dict(e.headers)[b":status"] for e in pair.client_of(h2e.ResponseReceived)}
    assert statuses == {big: b"431", many: b"431"}


def test_connect_is_refused_with_405() -> None:
    pair = Pair()
    sid = pair.request([(":method", "CONNECT"), (":authority", "example.com:443")], end=False)
    assert pair.to_server() == []
    pair.to_client()
    assert dict(pair.client_of(h2e.ResponseReceived, sid)[0].headers)[b":status"] == b"405"


def test_stalled_response_is_reset_after_the_timeout() -> None:
    pair = Pair(H2Limits(stall_timeout_s=5.0), client_settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
    pair.to_client()
    sid = pair.request()
    pair.to_server()
    pair.to_client()
    assert pair.session.respond(sid, 200, (), b"z" * 100, end=True) == 0
    assert pair.session.expire(0.0) == []
    assert pair.session.expire(4.0) == []
    assert pair.session.expire(6.0) == [StreamCancelled(sid, ErrorCodes.CANCEL)]
    pair.to_client()
    assert pair.client_of(h2e.StreamReset, sid)[0].error_code == ErrorCodes.CANCEL
    assert pair.session.pending_bytes == 0


# ---------------------------------------------------------------- GOAWAY


def test_graceful_goaway_names_the_last_stream_and_refuses_later_ones() -> None:
    pair = Pair()
    first = pair.request()
    pair.to_server()
    pair.session.goaway()
    [goaway] = [f for f in parse_frames(pair.session.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert (goaway.last_stream_id, goaway.error_code) == (first, 0)
    assert pair.session.state is SessionState.DRAINING and not pair.session.finished
    later = pair.request()
    assert pair.to_server() == []  # refused, not opened
    frames = parse_frames(pair.session.data_to_send())
    assert [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)] == [
        (later, ErrorCodes.REFUSED_STREAM)
    ]
    pair.session.respond(first, 200, (), b"done", end=True)  # in flight: still answered
    assert any(isinstance(f, DataFrame) for f in parse_frames(pair.session.data_to_send()))
    assert pair.session.finished
    events = pair.session.close()
    assert events == [ConnectionEnded(0, "", by_client=False)]


def test_client_goaway_cancels_streams() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.client.close_connection()
    events = pair.to_server()
    assert events[0] == StreamCancelled(sid, ErrorCodes.CANCEL)
    assert isinstance(events[-1], ConnectionEnded) and events[-1].by_client
    assert pair.session.state is SessionState.CLOSED


# ---------------------------------------------------------------- protocol errors and floods


def ended_with(pair: Pair, events: list, code: int) -> None:
    assert isinstance(events[-1], ConnectionEnded), events
    assert events[-1].error_code == code, events[-1]
    pair.to_client()
    assert pair.goaway_code() == code
    assert pair.session.receive(b"more bytes", pair.now) == []  # closed: nothing more is read


def test_garbage_preface_is_a_protocol_error() -> None:
    session = H2Session()
    session.start()
    events = session.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == ErrorCodes.PROTOCOL_ERROR


def test_too_many_concurrent_streams() -> None:
    pair = Pair(H2Limits(max_concurrent_streams=3))
    pair.to_client()
    pair.to_server()
    for _ in range(3):
        pair.request()
    opened = pair.to_server()
    assert len(opened) == 3
    block = pair.client.encoder.encode([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")])
    events = pair.frames(HeadersFrame(7, block, flags=["END_HEADERS", "END_STREAM"]))
    assert {type(e) for e in events[:-1]} == {StreamCancelled}
    ended_with(pair, events, ErrorCodes.PROTOCOL_ERROR)


def test_rapid_reset_is_cut_with_enhance_your_calm() -> None:
    floods = FloodLimits(resets_burst=20, resets_per_s=10)
    pair = Pair(H2Limits(floods=floods))
    events: list = []
    for _ in range(30):
        sid = pair.request()
        pair.client.reset_stream(sid, ErrorCodes.CANCEL)
        events = pair.to_server()
        if events and isinstance(events[-1], ConnectionEnded):
            break
    assert len(pair.of(StreamOpened)) == 21
    ended_with(pair, events, ErrorCodes.ENHANCE_YOUR_CALM)


def test_resets_at_an_honest_pace_are_fine() -> None:
    pair = Pair(H2Limits(floods=FloodLimits(resets_burst=5, resets_per_s=10)))
    for i in range(50):
        pair.now = i * 0.2  # 5 per second, under the rate
        sid = pair.request()
        pair.client.reset_stream(sid, ErrorCodes.CANCEL)
        pair.to_server()
    assert not pair.of(ConnectionEnded)


def test_ping_flood() -> None:
    pair = Pair(H2Limits(floods=FloodLimits(acked_burst=10, acked_per_s=1)))
    events = pair.frames(*[PingFrame(0, opaque_data=b"%08d" % i) for i in range(20)])
    ended_with(pair, events, ErrorCodes.ENHANCE_YOUR_CALM)


def test_settings_flood() -> None:
    pair = Pair(H2Limits(floods=FloodLimits(acked_burst=10, acked_per_s=1)))
    events = pair.frames(*[SettingsFrame(0, settings={SettingCodes.ENABLE_PUSH: 0}) for _ in range(20)])
    ended_with(pair, events, ErrorCodes.ENHANCE_YOUR_CALM)


def test_priority_and_window_update_flood() -> None:
    pair = Pair(H2Limits(floods=FloodLimits(control_burst=50, control_per_s=10)))
    frames = [PriorityFrame(1, depends_on=0, stream_weight=16) for _ in range(30)]
    frames += [WindowUpdateFrame(0, window_increment=1) for _ in range(30)]
    ended_with(pair, pair.frames(*frames), ErrorCodes.ENHANCE_YOUR_CALM)


def test_empty_data_flood() -> None:
    pair = Pair(H2Limits(floods=FloodLimits(max_empty_data=10)))
    sid = pair.request(post_headers(), end=False)
    pair.to_server()
    events = pair.frames(*[DataFrame(sid, b"") for _ in range(11)])
    ended_with(pair, events, ErrorCodes.ENHANCE_YOUR_CALM)


def test_empty_data_interleaved_with_data_is_fine() -> None:
    pair = Pair(H2Limits(floods=FloodLimits(max_empty_data=3)))
    sid = pair.request(post_headers(), end=False)
    pair.to_server()
    frames = [DataFrame(sid, b"") if i % 3 else DataFrame(sid, b"x") for i in range(30)]
    events = pair.frames(*frames)
    assert not any(isinstance(e, ConnectionEnded) for e in events)


def test_continuation_flood_is_bounded() -> None:
    pair = Pair()
    block = pair.client.encoder.encode(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]
    )
    frames: list[Frame] = [HeadersFrame(1, block)]
    frames += [ContinuationFrame(1, b"") for _ in range(200)]  # never END_HEADERS
    ended_with(pair, pair.frames(*frames), ErrorCodes.PROTOCOL_ERROR)


def test_header_list_over_the_limit_is_an_hpack_bomb() -> None:
    pair = Pair(H2Limits(max_header_list_bytes=4096))
    headers = REQUEST + [(f"x-{i}", "v" * 100) for i in range(60)]  # ~8 KiB decoded
    pair.request(headers)
    ended_with(pair, pair.to_server(), ErrorCodes.ENHANCE_YOUR_CALM)


def test_frame_over_max_frame_size() -> None:
    pair = Pair()
    sid = pair.request(post_headers(), end=False)
    pair.to_server()
    ended_with(pair, pair.frames(DataFrame(sid, b"x" * 20000)), ErrorCodes.FRAME_SIZE_ERROR)


def test_data_over_the_window_is_a_flow_control_error() -> None:
    pair = Pair(H2Limits(stream_window_bytes=16384, connection_window_bytes=65535))
    pair.to_client()
    pair.to_server()
    sid = pair.request(post_headers(), end=False)
    pair.to_server()
    events = pair.frames(*[DataFrame(sid, b"x" * 16000) for _ in range(5)])
    ended_with(pair, events, ErrorCodes.FLOW_CONTROL_ERROR)


def test_unacked_stream_is_abandoned_to_the_connection_window_on_reset() -> None:
    pair = Pair(H2Limits(stream_window_bytes=32768, connection_window_bytes=65535))
    pair.to_client()
    pair.to_server()
    pair.to_client()
    sid = pair.request(post_headers(), end=False)
    for _ in range(2):
        pair.client.send_data(sid, b"x" * 16384)
    pair.to_server()  # held, not consumed
    conn_before = pair.client.outbound_flow_control_window
    pair.client.reset_stream(sid, ErrorCodes.CANCEL)
    pair.to_server()
    pair.to_client()
    assert pair.client.outbound_flow_control_window > conn_before  # given back


# ---------------------------------------------------------------- tables and budget


def test_tables_cover_every_non_terminal_state() -> None:
    assert {s for s, _ in REQUEST_TRANSITIONS} == set(RequestHalf)
    assert {s for s, _ in RESPONSE_TRANSITIONS} | {ResponseHalf.DONE, ResponseHalf.RESET} == set(ResponseHalf)
    assert not any(s in (ResponseHalf.DONE, ResponseHalf.RESET) for s, _ in RESPONSE_TRANSITIONS)


def test_misuse_is_named() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.session.respond(sid, 200, (), b"", end=False)
    with pytest.raises(Misuse, match="respond"):
        pair.session.respond(sid, 200, ())
    with pytest.raises(Misuse):
        pair.session.respond(99, 200, ())


def test_budget_refills_at_its_rate() -> None:
    budget = Budget(2, 1.0)
    assert budget.spend(0.0) and budget.spend(0.0) and not budget.spend(0.0)
    assert not budget.spend(0.5)
    assert budget.spend(1.0)
    assert budget.spend(100.0) and budget.spend(100.0) and not budget.spend(100.0)  # capped at burst


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_concurrent_streams"):
        H2Limits(max_concurrent_streams=0)
    with pytest.raises(ValueError, match="resets_per_s"):
        FloodLimits(resets_per_s=0)
    with pytest.raises(ValueError, match="2 GiB"):
        H2Limits(stream_window_bytes=2**31)
    with pytest.raises(ValueError, match="65535"):
        H2Limits(connection_window_bytes=1000)
