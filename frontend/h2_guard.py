"""Flood limits for one HTTP/2 connection: which client frames cost us work without paying for it.

Each known HTTP/2 denial of service is a stream of frames that are legal one by
one and cheap for the client, but make the server work, answer, or hold
memory. The counters here see the h2 events those frames produce and say when
a client is past what any honest one does; the session then ends the
connection with GOAWAY ``ENHANCE_YOUR_CALM`` (RFC 9113 §5.4.1, as nginx, Envoy
and Go do), and only that connection.

* Rapid reset (CVE-2023-44487): streams opened and reset at once by the client.
  Each costs a dispatch to a worker; the concurrent-streams limit does not
  bound them, since a reset stream no longer counts as open.
* SETTINGS and PING floods (CVE-2019-9512, -9515): each must be acknowledged, so
  a client that does not read makes our output grow.
* Control frames that carry nothing (PRIORITY, WINDOW_UPDATE, SETTINGS/PING
  acknowledgements, unknown frame types; CVE-2019-9513, -9516 family): bounded
  by a rate, plus what our own DATA frames earn back (a downloading client
  updates windows often; Envoy's "window updates per data frame sent").
* Empty DATA frames (CVE-2019-9518): more than ``max_empty_data`` in a row.

CONTINUATION floods (CVE-2024-27316) and HPACK bombs are bounded by h2 itself
(64 frames per header block, ``SETTINGS_MAX_HEADER_LIST_SIZE`` on decoding);
too many concurrent streams is h2's too (``TooManyStreamsError``). The session
turns those into GOAWAY as well.

Pure: the clock is an argument, as in pool.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from h2 import events as h2e

CONTROL_EARNED_PER_DATA_FRAME = 4  # control frames a client may send per DATA frame we send it


class Budget:
    """A token bucket: ``burst`` at once, ``rate_per_s`` sustained."""

    __slots__ = ("burst", "rate_per_s", "tokens", "_at")

    def __init__(self, burst: float, rate_per_s: float) -> None:
        self.burst = burst
        self.rate_per_s = rate_per_s
        self.tokens = burst
        self._at: float | None = None

    def spend(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens; False (and nothing taken) when there are not that many."""
        if self._at is not None and now > self._at:
            self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def earn(self, n: float) -> None:
        self.tokens = min(self.burst, self.tokens + n)


@dataclass(frozen=True, kw_only=True)
class FloodLimits:
    """Per connection. Defaults: far above what browsers, curl, h2load or gRPC clients do."""

    resets_burst: int = 200  # client RST_STREAMs at once (2 x the default concurrent streams)
    resets_per_s: float = 100.0
    acked_burst: int = 100  # SETTINGS and PING frames we must answer
    acked_per_s: float = 20.0
    control_burst: int = 2000  # frames that carry nothing
    control_per_s: float = 1000.0
    max_empty_data: int = 32  # consecutive DATA frames without payload or END_STREAM

    def __post_init__(self) -> None:
        for name in ("resets_burst", "resets_per_s", "acked_burst", "acked_per_s",
                     "control_burst", "control_per_s", "max_empty_data"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"http2 {name} must be positive, got {getattr(self, name)}")


_ACKED = (h2e.PingReceived, h2e.RemoteSettingsChanged)
_CONTROL = (
    h2e.PriorityUpdated, h2e.WindowUpdated, h2e.SettingsAcknowledged, h2e.PingAckReceived,
    h2e.UnknownFrameReceived,
)  # fmt: skip


class FloodGuard:
    """Watches one connection's h2 events; ``check`` names the flood, or returns None."""

    __slots__ = ("limits", "_resets", "_acked", "_control", "_empty_run")

    def __init__(self, limits: FloodLimits) -> None:
        self.limits = limits
        self._resets = Budget(limits.resets_burst, limits.resets_per_s)
        self._acked = Budget(limits.acked_burst, limits.acked_per_s)
        self._control = Budget(limits.control_burst, limits.control_per_s)
        self._empty_run = 0

    def check(self, event: h2e.Event, now: float) -> str | None:
        kind = type(event)
        if kind is h2e.DataReceived:
            return self._data(event)  # type: ignore[arg-type]
        if kind is h2e.StreamReset:
            if event.remote_reset and not self._resets.spend(now):  # type: ignore[attr-defined]
                return "rapid reset: too many streams cancelled by the client"
            return None
        if kind in _ACKED:
            return None if self._acked.spend(now) else "SETTINGS/PING flood"
        if kind in _CONTROL:
            return None if self._control.spend(now) else "control frame flood"
        return None

    def _data(self, event: h2e.DataReceived) -> str | None:
        # Only a DATA frame with payload ends a run: interleaved frames of other kinds must not.
        if event.data or event.stream_ended is not None:
            self._empty_run = 0
            return None
        self._empty_run += 1
        if self._empty_run > self.limits.max_empty_data:
            return "empty DATA frame flood"
        return None

    def data_frames_sent(self, n: int) -> None:
        """Our DATA frames let an honest client send window updates in return."""
        self._control.earn(n * CONTROL_EARNED_PER_DATA_FRAME)
