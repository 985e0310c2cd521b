"""A client ``H2Connection`` wired to an ``H2Session`` in memory: bytes move only when told."""

from __future__ import annotations

from typing import Any

from h2 import events as h2e
from h2.config import H2Configuration
from h2.connection import H2Connection
from hyperframe.frame import Frame

from frontend.h2_session import Event, H2Limits, H2Session

REQUEST = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/a?x=1")]


def post_headers(path: str = "/up") -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "https"), (":authority", "example.com"), (":path", path)]


class Pair:
    def __init__(
        self, limits: H2Limits | None = None, *, client_settings: dict[int, int] | None = None
    ) -> None:
        self.session = H2Session(limits)
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        if client_settings:
            self.client.update_settings(client_settings)
        self.session.start()
        self.now = 0.0
        self.events: list[Event] = []  # everything the session reported, in order
        self.client_events: list[h2e.Event] = []
        self.to_server()
        self.to_client()

    def to_server(self, data: bytes | None = None) -> list[Event]:
        """Client bytes (or ``data``, raw) into the session; returns the session's events."""
        payload = self.client.data_to_send() if data is None else data
        events = self.session.receive(payload, self.now) if payload else []
        self.events.extend(events)
        return events

    def to_client(self) -> list[h2e.Event]:
        data = self.session.data_to_send()
        events = self.client.receive_data(data) if data else []
        self.client_events.extend(events)
        # The client acknowledges what it reads at once, as a browser does.
        for event in events:
            if isinstance(event, h2e.DataReceived) and event.flow_controlled_length:
                self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        return events

    def frames(self, *frames: Frame) -> list[Event]:
        """Raw frames (attacks) straight to the session."""
        return self.to_server(b"".join(frame.serialize() for frame in frames))

    def request(self, headers: Any = None, *, end: bool = True) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers or REQUEST, end_stream=end)
        return sid

    def of(self, kind: type, sid: int | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and (sid is None or e.stream_id == sid)]

    def client_of(self, kind: type, sid: int | None = None) -> list[Any]:
        return [e for e in self.client_events if isinstance(e, kind) and (sid is None or e.stream_id == sid)]

    def goaway_code(self) -> int | None:
        ended = self.client_of(h2e.ConnectionTerminated)
        return int(ended[-1].error_code) if ended else None
