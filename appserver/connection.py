"""One worker <-> front end connection: a DEALER, the handshake, liveness; streams go to routing.py.

Theory of operation (PROTOCOL.md §4):

    HANDSHAKING --WELCOME--> READY --drain()--> DRAINING --close()--> CLOSED
         ^  |                  |                    |
         |  +--REFUSE--> REFUSED (final: the worker exits 3)
         +--silence / BYE / UNKNOWN_PEER / no WELCOME in time (re-HELLO; while
            draining there is nothing to come back for: CLOSED)

* Before WELCOME nothing leaves but HELLO. No WELCOME within the back-off
  delay: close the socket (linger 0), open a new one with a new routing id
  (``worker_id/N``) and say HELLO again, doubling the delay up to
  ``reconnect_max_s`` (Rule 10, the Paranoid Pirate).
* The link (``Link``) under the handshake is watched with ZeroMQ's monitor.
  HELLO goes out when a connection is up (ZMTP handshake done), so a
  restarted front end hears it as soon as ZeroMQ reconnects (within
  RECONNECT_IVL_MAX, wire/channel.py), not after a silence. A connection that
  drops takes the handshake with it: the streams fail locally (the front end,
  old or new, forgot them), anything still queued is dropped, and the next
  connection starts with HELLO on the same socket. Whatever arrives while the
  link is down is the dead connection's leftovers and is dropped.
* CurveZMQ (``curve``): the DEALER is a CURVE client. A failed handshake
  (our key refused, a wrong server key, a security mismatch) is logged once
  and retried on a new socket with the same back-off; a refused key is
  indistinguishable from a front end that changed its mind, so never fatal.
* One timer on the event loop that runs the app ticks twice per heartbeat
  interval: it sends HEARTBEAT if nothing was sent since the last tick and
  counts ticks without hearing anything (Rule 9). Counters, not clocks, so
  the hot path pays an integer increment per event.
* Streams are ``StreamRouter``'s business (routing.py): every stream event
  of a welcomed connection goes there. Losing the front end (silence, BYE,
  UNKNOWN_PEER) fails every open stream locally -- the front end has
  already forgotten them -- and re-handshakes; stream ids start over with
  the new handshake.
* Features: "websocket" and "ws-denial" are announced only with a
  ``ws_capacity`` above 0, "limit" only with adaptive admission
  (``admission``, admission.py); a feature is used only if WELCOME agrees
  (Rule 7). With "limit" agreed the front end opens nothing until it hears
  our limit: WELCOME sends it at once, and every change follows (§7.1).
  With "pulse" agreed, ``pulse_target`` tells the worker's pulse thread
  (pulse.py) to speak for this connection: PULSE from a socket of its own,
  so a blocked loop looks busy, not dead (Rule 9a).
* Drain, then maybe linger (worker.py decides): ``drain`` sends DRAIN;
  ``linger`` sends LINGER (feature "linger", Rule 11a) once only sessions are
  left; ``close`` says BYE. The connection stays DRAINING throughout: the
  streams go on exactly as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from enum import Enum
from typing import Any

import zmq

import wire
from wire import events as ev
from wire import shm
from wire.channel import Channel, SocketMonitor, configure_dealer
from wire.curve import ClientKeys, apply_client

from .admission import Admission, Hold
from .pulse import PulseTarget
from .routing import StreamRouter
from .stream import RESPONSE_CHUNK_BYTES, StreamSettings

log = logging.getLogger(__name__)

WORKER_FEATURES = ("http", "trailers", "pathsend", "linger", "pulse", "early-hints")
WS_FEATURES = ("websocket", "ws-denial", "handoff")  # announced only when ws_capacity > 0
RECONNECT_MIN_S = 0.25  # first wait for WELCOME; doubles while the front end stays silent
BYE_LINGER_MS = 1000  # BYE is the one message worth waiting for on close
NOT_ANSWERING_S = 10.0  # no ZMTP handshake this long after connecting: say so in the log


_LINK_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)  # fmt: skip


class Link(Enum):
    DOWN = "down"  # no ZeroMQ connection to the front end (not yet, or it dropped)
    UP = "up"  # connected, ZMTP handshake done: HELLO can go


class ConnPhase(Enum):
    HANDSHAKING = "handshaking"
    READY = "ready"
    DRAINING = "draining"
    REFUSED = "refused"
    CLOSED = "closed"


# (hot-path rule 1: tests/benchmarks/README.md)
_READY, _DRAINING, _LINK_DOWN = ConnPhase.READY, ConnPhase.DRAINING, Link.DOWN


class FrontendConnection:
    def __init__(
        self,
        *,
        ctx: zmq.Context[Any],
        endpoint: str,
        worker_id: str,
        app: Callable[..., Any],
        capacity: int,
        ws_capacity: int,
        window_bytes: int,
        reconnect_max_s: float,
        state: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        curve: ClientKeys | None = None,
        admission: Admission | None = None,
        shm_bodies: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.phase = ConnPhase.CLOSED
        self.welcomed = asyncio.Event()  # set at the first WELCOME, stays set
        self.refused = asyncio.Event()
        self.refuse_reason = ""
        self.frontend_id = ""
        self._ctx = ctx
        features = WORKER_FEATURES + (WS_FEATURES if ws_capacity > 0 else ())
        features += ("limit",) if admission is not None else ()
        features += ("shm-body",) if shm_bodies else ()
        self._hello = ev.Hello(0, wire.PROTOCOL_VERSION, worker_id, os.getpid(), capacity, ws_capacity,
                               window_bytes, features, info or {})  # fmt: skip
        self._window_bytes = window_bytes
        self._state = state
        self._reconnect_max_s = reconnect_max_s
        self._backoff_s = RECONNECT_MIN_S
        self._loop = asyncio.get_running_loop()
        self._channel: Channel | None = None
        self._monitor: SocketMonitor | None = None
        self.link = Link.DOWN
        self._curve = curve
        self._shm: shm.Writer | None = None  # this handshake's segment ("shm-body": a new one per HELLO)
        self._link_failures = 0  # failed ZMTP handshakes in a row (logged once)
        self._counter = 0  # routing ids worker_id/1, /2, ...
        self._timer: asyncio.TimerHandle | None = None
        self._tick_s = 0.5
        self._liveness_ticks = 6
        self._sent = self._heard = 0  # events out / messages in; the tick compares
        self._sent_mark = self._heard_mark = self._silent_ticks = 0
        self._admission = admission
        self._limit_agreed = False  # WELCOME agreed to feature "limit"
        self._reported = 0  # the last LIMIT sent on this handshake
        self._linger_agreed = False  # WELCOME agreed to feature "linger"
        self._routing_id = b""  # this socket's, the front end's name for us
        self._pulse: PulseTarget | None = None  # WELCOME agreed to feature "pulse" (pulse.py)
        self._streams = StreamRouter(app=app, post=self._emit_stream, endpoint=endpoint, capacity=capacity,
                                     ws_capacity=ws_capacity,
                                     completed=admission.completed if admission else None)  # fmt: skip
        if admission is not None:
            admission.attach(self)

    # ------------------------------------------------------------ public

    @property
    def open_streams(self) -> int:
        return self._streams.open_streams

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The app tasks still running (HTTP and WebSocket)."""
        return self._streams.http_tasks | self._streams.ws_tasks

    @property
    def streams(self) -> StreamRouter:
        """This connection's streams: what a draining worker waits for, keeps or closes."""
        return self._streams

    def start(self) -> None:
        """Open the socket and say HELLO; the rest happens on the loop."""
        self._connect()

    def drain(self) -> None:
        """Send DRAIN and take no new streams; open ones go on."""
        if self.phase is ConnPhase.READY:
            self._post(ev.Drain())
            self.phase = ConnPhase.DRAINING
            self._streams.accepting = False  # READY only comes back with a WELCOME, which sets it
            self._streams.start_drain()
        elif self.phase is ConnPhase.HANDSHAKING:
            # Not welcomed on this socket, so no streams: nothing to drain.
            self._close_socket()
            self.phase = ConnPhase.CLOSED

    def linger(self) -> None:
        """Tell the front end that only sessions are left here (LINGER), if it agreed to hear it."""
        if self.phase is ConnPhase.DRAINING and self._linger_agreed:
            self._post(ev.Linger())

    async def finish_streams(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the app tasks, close open WebSockets (1012), cancel the rest."""
        await self._streams.finish(timeout_s)

    async def cancel_streams(self) -> None:
        await self._streams.cancel()

    @property
    def pulse_target(self) -> PulseTarget | None:
        """Where the pulse thread (pulse.py) speaks for this connection: welcomed with "pulse"."""
        phase = self.phase
        return self._pulse if phase is _READY or phase is _DRAINING else None

    def cycle_of(self, task: Any) -> Any:
        return self._streams.cycle_of(task)

    @property
    def reports_limit(self) -> bool:
        """Welcomed with feature "limit" and taking streams (admission.Reporter)."""
        return self._limit_agreed and self.phase is _READY

    def admission_counts(self) -> tuple[int, int]:
        return self._streams.admission_counts()

    def admission_peak(self) -> int:
        return self._streams.take_peak()

    def report_limit(self, limit: int, held: Hold) -> None:
        """LIMIT to the front end, if it changed (§7.1); our answers to it are held by ``held``."""
        if self.phase is not _READY:
            return
        if limit != self._reported:
            self._reported = limit
            self._post(ev.Limit(0, limit))
        channel = self._channel
        if channel is not None:
            channel.hold_events, channel.hold_s = held.events, held.seconds
            # past the iteration's end only while requests run here: their answers are coming
            channel.hold_while = self._streams.has_http_open if held.across else None

    def close(self, reason: str = "worker stopped") -> None:
        """Say BYE (if the front end knows us) and close the socket."""
        if self._admission is not None:
            self._admission.detach(self)
        if self._channel is not None and self.phase in (ConnPhase.READY, ConnPhase.DRAINING):
            self._post(ev.Bye(0, reason))
            self._channel.flush()
        self._close_socket(linger_ms=BYE_LINGER_MS)
        self._streams.fail_all("connection closed")
        if self.phase is not ConnPhase.REFUSED:
            self.phase = ConnPhase.CLOSED

    # ------------------------------------------------------------ socket and handshake

    def _connect(self) -> None:
        self._close_socket()
        self._counter += 1
        sock = self._ctx.socket(zmq.DEALER)
        self._routing_id = f"{self.worker_id}/{self._counter}".encode()
        configure_dealer(sock, routing_id=self._routing_id)
        if self._curve is not None:
            apply_client(sock, self._curve)
        self._monitor = SocketMonitor(sock, _LINK_EVENTS, self._on_link_event)  # before connect: miss nothing
        sock.connect(self.endpoint)
        self._channel = Channel(
            sock, routed=False, on_events=self._on_events, on_bad_message=self._on_bad_message
        )
        self.link = Link.DOWN
        self.phase = ConnPhase.HANDSHAKING  # HELLO goes when the link is up
        self._set_timer(NOT_ANSWERING_S, self._not_answering)  # the link coming up replaces it

    def _hello_again(self) -> None:
        self._post(self._new_hello())
        self._set_timer(self._backoff_s, self._on_handshake_timeout)

    def _new_hello(self) -> ev.Hello:
        """HELLO, with a new shared segment on offer if "shm-body" is ours to offer: nothing of an
        earlier handshake's segment is ever reused (wire/shm.py)."""
        hello = self._hello
        self._drop_shm()
        if "shm-body" not in hello.features:
            return hello
        writer = self._shm = shm.Writer.create()
        if writer is None:
            log.info("no shared memory for response bodies (%s unusable): they go in messages", shm.DIRECTORY)
            features = tuple(f for f in hello.features if f != "shm-body")
            return ev.Hello(0, hello.protocol, hello.worker_id, hello.pid, hello.capacity, hello.ws_capacity,
                            hello.window_bytes, features, hello.info)  # fmt: skip
        info = dict(hello.info)
        info["shm"] = writer.offer
        return ev.Hello(0, hello.protocol, hello.worker_id, hello.pid, hello.capacity, hello.ws_capacity,
                        hello.window_bytes, hello.features, info)  # fmt: skip

    def _drop_shm(self) -> None:
        writer, self._shm = self._shm, None
        if writer is not None:
            if self._channel is not None:
                self._channel.unshare(None)  # our segment, and the front end's (SHARE)
            writer.close()

    def _on_handshake_timeout(self) -> None:
        self._backoff_s = min(self._backoff_s * 2, self._reconnect_max_s)
        log.info("no WELCOME from %s; reconnecting", self.endpoint)
        self._connect()

    def _close_socket(self, *, linger_ms: int = 0) -> None:
        self._cancel_timer()
        self._drop_shm()
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.close()
        self.link = Link.DOWN
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close(linger_ms=linger_ms)

    def _lost(self, why: str, *, expected: bool = False) -> None:
        """The front end is gone (silence, BYE): fail its streams, reconnect unless draining.
        ``expected``: it retired, a successor serves its port (a front-end roll): nothing to warn of."""
        (log.info if expected else log.warning)("front end %s lost (%s)", self.endpoint, why)
        self._streams.fail_all(why)
        if self.phase is ConnPhase.DRAINING:
            self._close_socket()
            self.phase = ConnPhase.CLOSED
        else:
            self._connect()

    def _on_link_event(self, event: int, endpoint: str) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.link = Link.UP
            self._link_failures = 0
            if self.phase is ConnPhase.HANDSHAKING:
                self._hello_again()
        elif event == zmq.EVENT_DISCONNECTED:
            self.link = Link.DOWN
            self._link_down()
        else:
            self._handshake_failed(event)

    def _handshake_failed(self, event: int) -> None:
        """The ZMTP/CURVE handshake failed. libzmq would retry at once, ten times a second (wrong
        server key), or never again (a ZAP refusal): back off and retry on a new socket instead."""
        self._link_failures += 1
        delay, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, self._reconnect_max_s)
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = "refused this worker's CurveZMQ key (is its public key in the front end's authorized keys?)"
        elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self._curve is not None:
            why = "did not complete the CurveZMQ handshake (wrong --curve-server-key?)"
        else:
            why = "failed the ZeroMQ handshake (CurveZMQ on one side only? not a zasgi front end?)"
        level = logging.WARNING if self._link_failures == 1 else logging.DEBUG  # once per streak
        log.log(level, "front end %s %s; retrying every <= %.0fs", self.endpoint, why, self._reconnect_max_s)
        self._close_socket()
        self._set_timer(delay, self._connect)

    def _not_answering(self) -> None:
        log.warning("front end %s is not answering (not running? unreachable? refusing this worker?); "
                    "still trying", self.endpoint)  # fmt: skip

    def _link_down(self) -> None:
        """The connection dropped (front end killed or restarting, network reset): start over."""
        if self._channel is not None:
            self._channel.discard()  # stale: heartbeats, a HELLO, stream events for the old peer
        if self.phase is ConnPhase.READY:
            log.warning("connection to front end %s dropped; saying HELLO when it is back", self.endpoint)
            self._streams.fail_all("connection to the front end dropped")
            self.phase = ConnPhase.HANDSHAKING
        elif self.phase is ConnPhase.DRAINING:
            self._streams.fail_all("connection to the front end dropped")
            self._close_socket()
            self.phase = ConnPhase.CLOSED
        self._cancel_timer()  # no silence or WELCOME timeout while there is nobody to hear

    def _on_welcome(self, welcome: ev.Welcome) -> None:
        if self.phase is not ConnPhase.HANDSHAKING:
            log.warning("unexpected WELCOME from %s ignored", self.endpoint)
            return
        features = frozenset(welcome.features) & frozenset(self._hello.features)
        writer = self._shm
        if writer is not None:
            writer.unlink()  # the front end has mapped it, or never will
            if "shm-body" in features and self._channel is not None:
                self._channel.share_writer(None, writer)
            else:
                self._drop_shm()
        settings = StreamSettings(
            request_window_bytes=self._window_bytes,
            response_window_bytes=welcome.window_bytes,
            chunk_bytes=max(1, min(welcome.max_payload_bytes, RESPONSE_CHUNK_BYTES)),
            max_payload_bytes=welcome.max_payload_bytes,
            trailers="trailers" in features,
            pathsend="pathsend" in features,
            ws_denial="ws-denial" in features,
            handoff="handoff" in features,
            early_hints="early-hints" in features,
            state=self._state,
        )
        self._streams.welcomed(settings, websocket="websocket" in features)
        self._linger_agreed = "linger" in features
        pulse = "pulse" in features
        interval_s = max(welcome.heartbeat_ms, 1) / 1000
        self._pulse = PulseTarget(self.endpoint, self._routing_id, interval_s) if pulse else None
        self.frontend_id = welcome.frontend_id
        self._tick_s = max(welcome.heartbeat_ms, 1) / 2000  # two ticks per interval
        self._liveness_ticks = 2 * max(welcome.liveness, 1)
        self._backoff_s = RECONNECT_MIN_S
        self._silent_ticks = 0
        self.phase = ConnPhase.READY
        log.info("welcomed by front end %s at %s", welcome.frontend_id, self.endpoint)
        self.welcomed.set()
        self._set_timer(self._tick_s, self._tick)
        self._limit_agreed, self._reported = "limit" in features, 0
        if self._limit_agreed and self._admission is not None:
            self._admission.welcomed(self)

    def _on_refuse(self, refuse: ev.Refuse) -> None:
        if self.phase is not ConnPhase.HANDSHAKING:  # REFUSE answers HELLO (Rule 6): a stray one, no exit
            log.warning("unexpected REFUSE from %s ignored: %s", self.endpoint, refuse.reason)
            return
        self.refuse_reason = refuse.reason
        self.phase = ConnPhase.REFUSED
        self._close_socket()
        self._streams.fail_all("refused")
        self.refused.set()

    # ------------------------------------------------------------ liveness

    def _tick(self) -> None:
        if self._heard == self._heard_mark:
            self._silent_ticks += 1
            if self._silent_ticks >= self._liveness_ticks:
                self._lost(f"silent for {self._silent_ticks * self._tick_s:.1f}s")
                return
        else:
            self._silent_ticks = 0
        if self._sent == self._sent_mark:
            self._post(ev.Heartbeat())
        self._heard_mark, self._sent_mark = self._heard, self._sent
        self._set_timer(self._tick_s, self._tick)

    def _set_timer(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay_s, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------ inbound

    def _on_bad_message(self, peer: Any, reason: str) -> None:
        log.warning("dropped an unreadable message from %s: %s", self.endpoint, reason)

    def _on_events(self, peer: Any, events: list[Any]) -> None:
        if self.link is _LINK_DOWN:
            log.debug("dropped a message from a dropped connection to %s", self.endpoint)
            return
        self._heard += 1
        channel = self._channel
        on_stream_event = self._streams.on_event
        for event in events:
            if self._channel is not channel:  # an event above dropped this socket
                return
            if event.stream_id == 0:
                self._on_control(event)
            elif self.phase is _READY or self.phase is _DRAINING:
                on_stream_event(event)
            else:
                log.debug("stream event before WELCOME from %s ignored", self.endpoint)

    def _on_control(self, event: Any) -> None:
        kind = type(event)
        if kind is ev.Heartbeat:
            return
        if kind is ev.Welcome:
            self._on_welcome(event)
        elif kind is ev.Freed:
            self._on_freed(event.slots)
        elif kind is ev.Share:
            self._on_share(event.segment)
        elif kind is ev.Refuse:
            self._on_refuse(event)
        elif kind is ev.UnknownPeer:
            self._on_unknown_peer()
        elif kind is ev.Bye:
            # A retired front end (frontend/retire.py) says so: part of a roll, not a failure.
            retired = event.reason.startswith("front end retired")
            self._lost(f"front end said BYE: {event.reason}", expected=retired)
        elif kind is ev.Invalid:
            log.warning("invalid control event from %s (%s); reconnecting", self.endpoint, event.reason)
            self._lost("invalid control event")
        else:
            log.warning("unexpected %s from %s ignored", kind.__name__, self.endpoint)

    def _on_freed(self, slots: tuple[int, ...]) -> None:
        writer = self._shm
        if writer is None:
            log.debug("FREED from %s without a shared segment; ignored", self.endpoint)
            return
        if writer.release(slots):
            log.warning("front end %s freed shared slots not in use (%s); ignored", self.endpoint, slots)

    def _on_share(self, segment: dict[str, Any]) -> None:
        """The front end's segment for request bodies: map it, and take it by freeing its slots."""
        channel = self._channel
        if self._shm is None or channel is None or not (self.phase is _READY or self.phase is _DRAINING):
            log.debug("SHARE from %s without shm-body agreed; ignored", self.endpoint)
            return
        reader = shm.Reader.open(segment, copy=True)  # the app gets bytes: copied, freed at once
        if reader is None:
            log.info("cannot map front end %s's segment: request bodies come in messages", self.endpoint)
            return
        channel.share_reader(None, reader)
        self._post(ev.Freed(0, tuple(range(reader.slots))))

    def _on_unknown_peer(self) -> None:
        # Rule 8: the front end forgot us (restart, expiry). Our streams are gone there.
        log.info("front end %s does not know us; saying HELLO again", self.endpoint)
        self._streams.fail_all("front end forgot this worker")
        if self.phase is ConnPhase.DRAINING:
            self._close_socket()
            self.phase = ConnPhase.CLOSED
            return
        self.phase = ConnPhase.HANDSHAKING
        self._hello_again()

    # ------------------------------------------------------------ outbound

    def _emit_stream(self, event: Any) -> None:
        # Belt and braces: streams of a lost handshake are failed and stay silent.
        if self.phase is _READY or self.phase is _DRAINING:
            channel = self._channel  # = self._post(event), inline: once per event out
            if channel is not None:
                self._sent += 1
                channel.post(event)

    def _post(self, event: Any) -> None:
        channel = self._channel
        if channel is not None:
            self._sent += 1
            channel.post(event)
