"""One HTTP/2 connection, sans-IO: bytes in, events out; responses in, bytes out.

Theory of operation. ``H2Session`` wraps h2's ``H2Connection`` (the protocol
itself: frames, HPACK, stream states, flow-control windows) and adds what a
server needs on top: our settings, streams as HTTP exchanges, flow control
tied to the consumers on both sides, graceful GOAWAY, and the flood limits
(h2_guard). It does no I/O and reads no clock: the glue feeds it what the
socket read (``receive``), writes what ``data_to_send`` returns, and passes
``now``.

What the glue gets (``receive`` returns them, in order):
* ``StreamOpened``: a request's head; its fields map one to one onto the
  wire's REQUEST (``http_version`` "2", the headers with ``host`` from
  ``:authority`` and cookies joined, as RFC 9113 §8.3.1 and §8.2.3 ask).
* ``BodyReceived``: request body bytes (``end`` on the last; request trailers
  are dropped, the wire has none). The client's window for them reopens only
  when the glue calls ``consumed`` (the body went on to the worker), so a
  slow app holds at most a stream window per stream and a connection window
  per connection here.
* ``Sent``: response bytes that left for the client once its window opened;
  the glue credits them to the worker (``wire`` CREDIT). ``respond`` and
  ``send_body`` return what they sent at once. A response the client does
  not read waits here, bounded by the worker's credit window.
* ``StreamCancelled``: the client reset the stream (or it stalled past
  ``stall_timeout_s``, or the connection ended): DISCONNECT for the worker.
* ``ConnectionEnded``: GOAWAY was sent or received; every open stream got its
  ``StreamCancelled`` first. The glue sends what is left and closes.

Each stream has two halves with their own states and transition tables
(h2_stream): the request (client -> us) and the response (us -> client). A stream
is forgotten once both are over. Bad client input never raises: h2's
protocol errors, header limits and floods all end in GOAWAY with the code that
names them (PROTOCOL_ERROR, COMPRESSION_ERROR, ENHANCE_YOUR_CALM...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from h2 import events as h2e
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from .h2_guard import FloodGuard, FloodLimits
from .h2_stream import (
    REQUEST_TRANSITIONS,
    RESPONSE_TRANSITIONS,
    BadResponse,
    BodyReceived,
    ConnectionEnded,
    Event,
    H2Stream,
    Headers,
    Misuse,
    RequestHalf,
    ResponseHalf,
    Sent,
    StreamCancelled,
    StreamOpened,
    clean_fields,
    move,
)  # fmt: skip

__all__ = [
    "BadResponse", "BodyReceived", "ConnectionEnded", "Event", "H2Limits", "H2Session", "Misuse", "Sent",
    "SessionState", "StreamCancelled", "StreamOpened",
]  # fmt: skip

KIB = 1024
Payload = bytes | bytearray | memoryview  # (the wire's: a worker's body arrives as any buffer)
_R, _S = RequestHalf, ResponseHalf
_RESPONSE_OVER = (_S.DONE, _S.RESET)
_BODILESS_STATUS = frozenset({204, 304})


@dataclass(frozen=True, kw_only=True)
class H2Limits:
    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS (h2's and nginx's default)
    max_header_list_bytes: int = 64 * KIB  # SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2 sizing)
    max_field_bytes: int = 16 * KIB  # one field (name + value): 431, as --limit-max-header-size
    max_headers: int = 100  # fields per request: 431, as --limit-max-headers
    stream_window_bytes: int = 256 * KIB  # request body a stream may send ahead of the worker
    connection_window_bytes: int = 1024 * KIB  # the same for all streams of a connection together
    stall_timeout_s: float = 60.0  # a response the client's window blocks this long: reset (CANCEL)
    floods: FloodLimits = field(default_factory=FloodLimits)

    def __post_init__(self) -> None:
        for name in ("max_concurrent_streams", "max_header_list_bytes", "max_field_bytes", "max_headers",
                     "stream_window_bytes", "connection_window_bytes", "stall_timeout_s"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"http2 {name} must be positive, got {getattr(self, name)}")
        if self.stream_window_bytes > 2**31 - 1 or self.connection_window_bytes > 2**31 - 1:
            raise ValueError("http2 windows must be below 2 GiB (RFC 9113 §6.9.1)")
        if self.connection_window_bytes < 65535:
            raise ValueError("http2 connection_window_bytes must be >= 65535 (RFC 9113's initial window)")


class SessionState(Enum):
    OPEN = "open"
    DRAINING = "draining"  # GOAWAY sent: in-flight streams finish, new ones are refused
    CLOSED = "closed"  # GOAWAY with an error, or the client's GOAWAY: nothing more is sent


SESSION_TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.OPEN, "goaway"): SessionState.DRAINING,
    (SessionState.OPEN, "close"): SessionState.CLOSED,
    (SessionState.DRAINING, "goaway"): SessionState.DRAINING,
    (SessionState.DRAINING, "close"): SessionState.CLOSED,
}

# ------------------------------------------------------------------ the session


class H2Session:
    def __init__(self, limits: H2Limits | None = None) -> None:
        self.limits = limits = limits or H2Limits()
        # Outbound headers are checked and lower-cased by clean_fields (one pass): h2's own outbound
        # validation would walk them again per field. Inbound validation stays on: that is the client.
        config = H2Configuration(
            client_side=False, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
        )  # fmt: skip
        self._conn = conn = H2Connection(config)
        conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # Enforced from the first header block, not only once the client acknowledges our
        # SETTINGS (h2 would apply its 64 KiB default until then): an HPACK bomb in the very
        # first request must meet the limit too.
        conn.decoder.max_header_list_size = limits.max_header_list_bytes
        self._guard = FloodGuard(limits.floods)
        self._streams: dict[int, H2Stream] = {}
        self.state = SessionState.OPEN
        self._last_stream_id = 0  # the GOAWAY's: higher streams are refused while draining
        self._extra = b""  # frames we wrote ourselves (graceful GOAWAY), sent after h2's

    # ----------------------------------------------------------- connection

    def start(self, upgrade_settings: bytes | None = None) -> None:
        """Our preface: SETTINGS and the connection window. ``upgrade_settings``: the client's
        HTTP2-Settings header of an ``Upgrade: h2c`` request (its request becomes stream 1)."""
        conn = self._conn
        if upgrade_settings is None:
            conn.initiate_connection()
        else:
            conn.initiate_upgrade_connection(upgrade_settings)
        extra = self.limits.connection_window_bytes - 65535  # (the RFC's initial connection window)
        if extra > 0:
            conn.increment_flow_control_window(extra)

    def data_to_send(self) -> bytes:
        data = self._conn.data_to_send()
        if self._extra:
            data, self._extra = data + self._extra, b""
        return data

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def _to(self, symbol: str) -> None:
        self.state = move(SESSION_TRANSITIONS, self.state, symbol, 0)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def finished(self) -> bool:
        """Nothing more will happen: closed, or draining with every stream over."""
        return self.state is SessionState.CLOSED or (
            self.state is SessionState.DRAINING and not self._streams
        )

    def pending(self, stream_id: int) -> int:
        """Response bytes of one stream waiting for the client's window."""
        stream = self._streams.get(stream_id)
        return sum(len(chunk) for chunk in stream.out) if stream is not None else 0

    @property
    def pending_bytes(self) -> int:
        """Response bytes held here for clients' windows (memory the session holds)."""
        return sum(sum(len(chunk) for chunk in s.out) for s in self._streams.values())

    def goaway(self) -> None:
        """Graceful shutdown: GOAWAY(NO_ERROR, last stream id); streams up to it go on, later ones
        are refused (REFUSED_STREAM: the client may retry them elsewhere)."""
        if self.state is not SessionState.OPEN:
            return
        self._to("goaway")
        self._last_stream_id = self._conn.highest_inbound_stream_id
        # h2's close_connection would stop the in-flight streams too (its connection state
        # machine allows nothing after it): this GOAWAY is written beside h2, with hyperframe.
        frame = GoAwayFrame(0, last_stream_id=self._last_stream_id, error_code=ErrorCodes.NO_ERROR)
        self._extra += frame.serialize()

    def close(self, error_code: int = ErrorCodes.NO_ERROR, reason: str = "") -> list[Event]:
        """End the connection now: GOAWAY(error_code), every stream cancelled."""
        if self.state is SessionState.CLOSED:
            return []
        events = self._cancel_all(error_code)
        self._to("close")
        try:
            self._conn.close_connection(error_code, additional_data=reason.encode()[:256] or None)
        except H2Error:
            pass  # h2 sent its own GOAWAY already
        events.append(ConnectionEnded(int(error_code), reason, by_client=False))
        return events

    # ----------------------------------------------------------- client -> us

    def receive(self, data: bytes, now: float) -> list[Event]:
        if self.state is SessionState.CLOSED:
            return []
        try:
            h2_events = self._conn.receive_data(data)
        except ProtocolError as exc:
            # h2 queued GOAWAY with the error's code already (TooManyStreamsError, a CONTINUATION
            # backlog, an HPACK bomb (DenialOfServiceError: ENHANCE_YOUR_CALM), bad frames...).
            return self._ended_by_h2(int(exc.error_code), str(exc) or type(exc).__name__)
        except (H2Error, ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
            # Not a protocol error h2 names, but bad input all the same (fuzzing found these
            # shapes in h2's frame parsing): PROTOCOL_ERROR, never a traceback.
            return self.close(ErrorCodes.PROTOCOL_ERROR, f"bad frame: {type(exc).__name__}")
        out: list[Event] = []
        for event in h2_events:
            flood = self._guard.check(event, now)
            if flood is not None:
                out.extend(self.close(ErrorCodes.ENHANCE_YOUR_CALM, flood))
                return out
            self._on_h2_event(event, out)
            if self.closed:
                break
        return out

    def _ended_by_h2(self, error_code: int, reason: str) -> list[Event]:
        if self.closed:
            return []
        events = self._cancel_all(error_code)
        self._to("close")
        events.append(ConnectionEnded(error_code, reason, by_client=False))
        return events

    def _on_h2_event(self, event: h2e.Event, out: list[Event]) -> None:
        kind = type(event)
        if kind is h2e.DataReceived:
            self._on_data(event, out)  # type: ignore[arg-type]
        elif kind is h2e.RequestReceived:
            self._on_request(event, out)  # type: ignore[arg-type]
        elif kind is h2e.WindowUpdated:
            sid = event.stream_id  # type: ignore[attr-defined]
            self._flush_all(out) if sid == 0 else self._flush_one(sid, out)
        elif kind is h2e.RemoteSettingsChanged:
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:  # type: ignore[attr-defined]
                self._flush_all(out)
        elif kind is h2e.StreamReset:
            self._on_reset(event.stream_id, int(event.error_code), out)  # type: ignore[attr-defined]
        elif kind is h2e.TrailersReceived:
            self._on_trailers(event, out)  # type: ignore[arg-type]
        elif kind is h2e.ConnectionTerminated:
            # After the client's GOAWAY h2 sends nothing more (its state machine is closed), so
            # the streams in flight cannot be answered: all are cancelled.
            events = self._cancel_all(ErrorCodes.CANCEL)
            self._to("close")
            code = int(event.error_code or 0)  # type: ignore[attr-defined]
            out.extend(events)
            out.append(ConnectionEnded(code, "GOAWAY from the client", by_client=True))

    def _on_request(self, event: h2e.RequestReceived, out: list[Event]) -> None:
        sid = event.stream_id
        end = event.stream_ended is not None
        if self.state is SessionState.DRAINING and sid > self._last_stream_id:
            self._conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        pseudo: dict[bytes, bytes] = {}
        fields: list[tuple[bytes, bytes]] = []
        too_big = False
        max_field = self.limits.max_field_bytes
        for name, value in event.headers:
            if len(name) + len(value) > max_field:
                too_big = True
            if name[:1] == b":":
                pseudo[name] = value
            else:
                fields.append((name, value))
        stream = self._streams[sid] = H2Stream(sid, pseudo.get(b":method", b"").decode("latin-1"), end)
        if too_big or len(fields) > self.limits.max_headers:
            self._refuse(stream, 431)
            return
        if stream.method == "CONNECT":  # no tunnels (RFC 8441 WebSockets are not offered)
            self._refuse(stream, 405)
            return
        authority = pseudo.get(b":authority", b"")
        if authority and not any(name == b"host" for name, _ in fields):
            fields.insert(0, (b"host", authority))  # ASGI and HTTP/1 apps look for Host
        path, _, query = pseudo.get(b":path", b"/").partition(b"?")
        out.append(StreamOpened(
            sid, stream.method, pseudo.get(b":scheme", b"https").decode("latin-1"), authority,
            path, query, tuple(fields), end,
        ))  # fmt: skip

    def _refuse(self, stream: H2Stream, status: int) -> None:
        """Answer a request we will not pass on, here (no body; the rest of its body dropped)."""
        self.respond(stream.stream_id, status, ((b"content-length", b"0"),), end=True)

    def _on_data(self, event: h2e.DataReceived, out: list[Event]) -> None:
        sid = event.stream_id
        data = event.data
        stream = self._streams.get(sid)
        padding = event.flow_controlled_length - len(data)
        end = event.stream_ended is not None
        if stream is None or stream.request is not _R.RECEIVING:
            # Nobody reads it: the client's window reopens at once.
            self._conn.acknowledge_received_data(event.flow_controlled_length, sid)
            return
        if padding:
            self._conn.acknowledge_received_data(padding, sid)
        stream.unacked += len(data)
        stream.request = move(REQUEST_TRANSITIONS, stream.request, "end" if end else "data", sid)
        if not data and not end:
            return
        last = out[-1] if out else None
        if type(last) is BodyReceived and last.stream_id == sid and not last.end:
            last.data += data  # several frames in one read: one event
            last.end = end
        else:
            out.append(BodyReceived(sid, data, end))
        if end:
            self._maybe_forget(stream)

    def _on_trailers(self, event: h2e.TrailersReceived, out: list[Event]) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None and stream.request is _R.RECEIVING:
            stream.request = move(REQUEST_TRANSITIONS, stream.request, "end", stream.stream_id)
            out.append(BodyReceived(stream.stream_id, b"", True))
            self._maybe_forget(stream)

    def _on_reset(self, sid: int, error_code: int, out: list[Event]) -> None:
        stream = self._streams.pop(sid, None)
        if stream is None:
            return
        self._abandon(stream)
        if stream.response not in _RESPONSE_OVER:
            stream.response = move(RESPONSE_TRANSITIONS, stream.response, "reset", sid)
        out.append(StreamCancelled(sid, error_code))

    def consumed(self, stream_id: int, n: int) -> None:
        """``n`` request body bytes went on to the worker: reopen the client's window by that much."""
        stream = self._streams.get(stream_id)
        if stream is None or n <= 0 or self.state is SessionState.CLOSED:
            return
        n = min(n, stream.unacked)
        if n:
            stream.unacked -= n
            self._conn.acknowledge_received_data(n, stream_id)

    # ----------------------------------------------------------- us -> client

    def inform(self, stream_id: int, status: int, headers: Headers) -> None:
        """A 1xx (103 Early Hints) before the response."""
        stream = self._stream(stream_id)
        move(RESPONSE_TRANSITIONS, stream.response, "inform", stream_id)
        if not 100 <= status < 200 or status == 101:
            raise BadResponse(f"informational status {status}")
        self._send_headers(stream, status, headers, end=False)

    def respond(self, stream_id: int, status: int, headers: Headers, body: Payload = b"",
                end: bool = False) -> int:  # fmt: skip
        """The response head and its first body bytes; returns the bytes sent at once.

        Raises:
            BadResponse: the head cannot be sent (nothing was): the caller may answer 502.
        """
        stream = self._stream(stream_id)
        if not 200 <= status <= 999:
            raise BadResponse(f"status {status}")
        bodiless = stream.method == "HEAD" or status in _BODILESS_STATUS
        symbol = "respond_bodiless" if bodiless else "respond"
        new = move(RESPONSE_TRANSITIONS, stream.response, symbol, stream_id)
        self._send_headers(stream, status, headers, end=bodiless)
        stream.response = new
        if bodiless:
            if stream.request is _R.RECEIVING:
                self._stop_request(stream)
            if end:
                stream.response = move(RESPONSE_TRANSITIONS, new, "end", stream_id)
                self._maybe_forget(stream)
            return len(body)  # dropped, and credited: the worker need not wait for a window
        return self.send_body(stream_id, body, end)

    def send_body(self, stream_id: int, data: Payload, end: bool = False) -> int:
        """Queue body bytes (``end``: the body and the response are complete); returns what went
        out at once, the rest follows as the client's windows open (``Sent`` events)."""
        stream = self._streams.get(stream_id)
        if stream is None:  # reset meanwhile: the worker's bytes are dropped (and credited)
            return len(data)
        if stream.response is _S.DISCARDING:
            if end:
                stream.response = move(RESPONSE_TRANSITIONS, stream.response, "end", stream_id)
                self._maybe_forget(stream)
            return len(data)
        stream.response = move(RESPONSE_TRANSITIONS, stream.response, "end" if end else "body", stream_id)
        if data:
            stream.out.append(bytes(data))
        return self._flush(stream)

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        """End the response with trailers (after the body still waiting for the window)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.response is _S.DISCARDING:
            stream.response = move(RESPONSE_TRANSITIONS, stream.response, "end", stream_id)
            self._maybe_forget(stream)
            return
        stream.response = move(RESPONSE_TRANSITIONS, stream.response, "end", stream_id)
        stream.trailers = clean_fields(headers)
        self._flush(stream)

    def reset(self, stream_id: int, error_code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """We give up on a stream (the worker failed mid-response, or the stream stalled)."""
        stream = self._streams.pop(stream_id, None)
        if stream is None or self.state is SessionState.CLOSED:
            return
        self._abandon(stream)
        if stream.response not in _RESPONSE_OVER:
            stream.response = move(RESPONSE_TRANSITIONS, stream.response, "reset", stream_id)
        try:
            self._conn.reset_stream(stream_id, error_code)
        except H2Error:
            pass  # h2 already closed it (the client ended it first)

    def expire(self, now: float) -> list[Event]:
        """Reset streams whose response the client's window has blocked past ``stall_timeout_s``
        (slowloris over HTTP/2: a zero window never updated)."""
        events: list[Event] = []
        timeout = self.limits.stall_timeout_s
        for stream in list(self._streams.values()):
            if not stream.out and stream.response is not _S.ENDING:
                stream.stalled_since = None
            elif stream.stalled_since is None:
                stream.stalled_since = now
            elif now - stream.stalled_since > timeout:
                self.reset(stream.stream_id, ErrorCodes.CANCEL)
                events.append(StreamCancelled(stream.stream_id, int(ErrorCodes.CANCEL)))
        return events

    # ----------------------------------------------------------- helpers

    def _stream(self, stream_id: int) -> H2Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise Misuse(f"stream {stream_id} is not open")
        return stream

    def _send_headers(self, stream: H2Stream, status: int, headers: Headers, end: bool) -> None:
        fields = [(b":status", b"%d" % status), *clean_fields(headers)]
        try:
            self._conn.send_headers(stream.stream_id, fields, end_stream=end)
        except (H2Error, ValueError, TypeError) as exc:
            raise BadResponse(str(exc) or type(exc).__name__) from None

    def _flush(self, stream: H2Stream) -> int:
        """Send what the windows allow; end the stream when all is out. Returns body bytes sent."""
        conn, sid, out = self._conn, stream.stream_id, stream.out
        sent = frames = 0
        while out:
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = out[0]
            if len(chunk) <= room:
                out.popleft()
            else:
                chunk, out[0] = chunk[:room], chunk[room:]
            last = not out and stream.response is _S.ENDING and stream.trailers is None
            conn.send_data(sid, chunk, end_stream=last)
            sent += len(chunk)
            frames += 1
            if last:
                stream.response = move(RESPONSE_TRANSITIONS, stream.response, "flushed", sid)
        if sent:
            stream.stalled_since = None
            self._guard.data_frames_sent(frames)
        if not out and stream.response is _S.ENDING:
            if stream.trailers:
                conn.send_headers(sid, stream.trailers, end_stream=True)
            else:
                conn.end_stream(sid)
            stream.response = move(RESPONSE_TRANSITIONS, stream.response, "flushed", sid)
        if stream.response is _S.DONE:
            if stream.request is _R.RECEIVING:
                self._stop_request(stream)
            self._maybe_forget(stream)
        return sent

    def _flush_one(self, stream_id: int, out: list[Event]) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and (stream.out or stream.response is _S.ENDING):
            n = self._flush(stream)
            if n:
                out.append(Sent(stream_id, n))

    def _flush_all(self, out: list[Event]) -> None:
        for stream in list(self._streams.values()):
            if stream.out or stream.response is _S.ENDING:
                n = self._flush(stream)
                if n:
                    out.append(Sent(stream.stream_id, n))
            if self._conn.outbound_flow_control_window <= 0:
                break

    def _stop_request(self, stream: H2Stream) -> None:
        """Answered before the request ended: tell the client to stop sending (RFC 9113 §8.1)."""
        self._abandon(stream)
        try:
            self._conn.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
        except H2Error:
            pass

    def _abandon(self, stream: H2Stream) -> None:
        """No more request bytes will be read: give what is held back to the connection window."""
        stream.request = move(REQUEST_TRANSITIONS, stream.request, "abandon", stream.stream_id)
        if stream.unacked and self.state is not SessionState.CLOSED:
            n, stream.unacked = stream.unacked, 0
            self._conn.acknowledge_received_data(n, stream.stream_id)

    def _maybe_forget(self, stream: H2Stream) -> None:
        if stream.response in _RESPONSE_OVER and stream.request is not _R.RECEIVING:
            if stream.unacked and self.state is not SessionState.CLOSED:  # read, not yet consumed
                self._abandon(stream)
            self._streams.pop(stream.stream_id, None)

    def _cancel_all(self, error_code: int) -> list[Event]:
        events: list[Event] = [StreamCancelled(sid, int(error_code)) for sid in self._streams]
        self._streams.clear()
        return events
