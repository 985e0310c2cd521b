"""The thin ZeroMQ layer beside the sans-IO core: one socket on an asyncio loop.

Why not zmq.asyncio: its sockets make one future per receive. Here the loop's
reader callback on the socket's FD drains every ready message per wake-up,
and everything posted for a peer during one loop iteration leaves as one
multipart message (PROTOCOL.md Rule 2). Measured on the target machine the
same ROUTER<->DEALER round trip runs ~2.5x faster this way.

ZeroMQ's FD is edge-like: it signals "events may have changed", and a send
can swallow the edge of an arrival. So after every flush we look at
``zmq.EVENTS`` and schedule a read if input is waiting.

``SocketMonitor`` watches a socket's connections (ZeroMQ's monitor, read the
same way), so a peer whose TCP/ipc connection drops is noticed at once rather
than after heartbeat silence.

This module is the only one in ``wire`` that imports zmq or asyncio; the
package's ``__init__`` does not import it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from struct import error as struct_error
from time import perf_counter
from typing import Any, cast

import zmq
from zmq.backend import Socket as _BackendSocket
from zmq.utils.monitor import parse_monitor_message

from . import codec, shm
from . import events as ev
from .errors import DecodeError
from .event_classes import WS_MESSAGE_CLS
from .flow import cost

log = logging.getLogger(__name__)

MAX_MESSAGES_PER_WAKEUP = 256  # then yield to the loop so other work runs
# Below this pyzmq copies the frame. Zero-copy sends go through pyzmq's garbage-collector
# thread (one notification per frame, and it takes the GIL): for 64 KiB body chunks copying
# measured 9-36% more download MiB/s and ~30% less app-server CPU per MiB (tests/benchmarks).
ZERO_COPY_MIN_BYTES = 1024 * 1024
# A payload frame from this size up is received without a copy (``payload_views``): the event
# holds a memoryview of ZeroMQ's message until it is written. Below it a Frame object costs
# more than the copy.
VIEW_MIN_BYTES = 64 * 1024
BATCH_MAX_PAYLOAD_BYTES = 1024 * 1024  # Rule 2: keep one message under ~1 MiB
# A peer's batch leaves as soon as it holds this many events, even mid-iteration: a batch
# held to the end of a busy iteration made front end and app server take turns (each idle
# while the other worked); each message costs both sides a ZeroMQ hop (tests/benchmarks/README.md
# "Session 12": most of it the I/O threads' wake-ups), so fewer, larger ones pay while neither
# side waits. 16 -> 32, hello (bench.py and per-process CPU, interleaved, five runs, 2026-12-07):
# ~2 us less CPU a request at c64 and c256 (~5%), c256 +5% req/s, c64 unchanged within the
# noise; 48 lost c64 throughput (the take-turns effect again).
BATCH_MAX_EVENTS = 32
# An event carrying this much payload leaves at once, not at the end of the iteration: an app
# streaming a download does not yield while its window is open, so its chunks would otherwise
# leave together when the window closes, and the front end would sit idle while the app fills it.
# Leaving one by one, the two processes work on consecutive chunks at once (10 MiB download,
# tests/benchmarks/README.md "Session 7"). A worker's (DEALER) sends only: the front end's bodies
# are upload chunks of 64 KiB, and a ROUTER's unreachable peer is best told all it missed at once.
EAGER_PAYLOAD_BYTES = 256 * 1024
# A batch that has waited this long leaves with the next post, mid-iteration. An app that burns
# CPU runs every request the worker read in one loop iteration (8 requests of 2 ms: 16 ms), and
# their responses, held to the iteration's end, left together: the front end could send more
# only after that, and the worker sat idle meanwhile (~50 sleeps/s, 10% of its time, at the
# adaptive floor of 8; bench.py cpu-overload). 1 ms ended the sleeps too but doubled the front
# end's wakeups; at 10 ms it wakes ~1.5x as often. Fast apps fill BATCH_MAX_EVENTS long before.
# The default of ``Channel.hold_s``: an adaptive worker holds its answers by its limit instead
# (appserver/admission.py ``hold``).
STALE_BATCH_S = 0.01
# ZeroMQ's FD does not reliably signal when a blocked pipe becomes writable (a
# DEALER with IMMEDIATE=1 sending before its connection is up), so while sends
# are blocked we also retry on a timer, backing off to RETRY_MAX_S.
RETRY_MIN_S = 0.002
RETRY_MAX_S = 0.1
# A DEALER whose peer went away reconnects after RECONNECT_IVL, doubling up to
# RECONNECT_IVL_MAX: a restarted front end is found again within half a second.
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 500

# (hot-path rule 2: tests/benchmarks/README.md)
_NOBLOCK = int(zmq.NOBLOCK)
_SEND = _BackendSocket.send
_RECV = _BackendSocket.recv
_NOBLOCK_SNDMORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)

# Called with (peer, events); peer is the ROUTER routing id, or None on a DEALER.
OnEvents = Callable[[Any, list[Any]], None]
OnBadMessage = Callable[[Any, str], None]
# Called with (peer, events that were not sent: this batch and the rest queued for the peer).
OnUnreachable = Callable[[Any, list[Any]], None]
OnMonitorEvent = Callable[[int, str], None]  # (zmq.EVENT_*, endpoint)


def configure_router(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    _common_options(sock)


def configure_dealer(sock: zmq.Socket[Any], *, routing_id: bytes) -> None:
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    _common_options(sock)


def _common_options(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    # Credit windows bound memory; the HWM only guards against a runaway.
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)


class Channel:
    """Batching, non-blocking send and receive of wire events on one socket.

    Resource handling: ``close()`` removes the reader and closes the socket
    with linger 0; queued unsent messages are dropped (the peer is gone or
    we are shutting down).
    """

    def __init__(
        self,
        sock: zmq.Socket[Any],
        *,
        routed: bool,
        on_events: OnEvents,
        on_bad_message: OnBadMessage,
        on_unreachable: OnUnreachable | None = None,
        limits: codec.Limits = codec.DEFAULT_LIMITS,
        payload_views: bool = False,
    ) -> None:
        self.sock = sock
        self.routed = routed  # ROUTER: first frame is the peer's routing id
        # Large payload frames as memoryviews, not copies: BODY and RESPONSE bodies then arrive as
        # memoryview (the codec copies any other kind's). For a receiver that only writes them on
        # (the front end); an app server hands request bodies to ASGI apps, which expect bytes.
        self._payload_views = payload_views
        self._on_events = on_events
        self._on_bad_message = on_bad_message
        self._on_unreachable = on_unreachable
        self._limits = limits
        self._packer = codec.new_packer()  # one per channel: its owner's thread alone encodes
        self._loop = asyncio.get_running_loop()
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._outbox: dict[Any, list[Any]] = {}
        self._flush_scheduled = False
        # A batch leaves mid-iteration once a peer's holds ``hold_events`` or it has waited
        # ``hold_s``; while ``hold_while()`` is true (the owner has more to send soon) a smaller,
        # younger one also waits past the iteration's end. The owner may set all three (an
        # adaptive worker: appserver/admission.py ``hold``).
        self.hold_events = BATCH_MAX_EVENTS
        self.hold_s = STALE_BATCH_S
        self.hold_while: Callable[[], bool] | None = None
        self._held: asyncio.TimerHandle | None = None  # the end-of-iteration flush, put off
        self._batch_since = 0.0  # perf_counter() of the first post of the batch waiting to leave
        self._batch_bytes = 0  # payload in a DEALER's waiting batch (_dealer_batch_full)
        self._blocked: deque[_Blocked] = deque()  # encoded, waiting for POLLOUT
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._retry_s = RETRY_MIN_S
        # Feature "shm-body" (wire/shm.py): the segment we write large bodies into (a worker's
        # DEALER), or each peer's segment we read them from (the front end's ROUTER).
        self._writers: dict[Any, shm.Writer] = {}
        self._readers: dict[Any, shm.Reader] = {}
        self._loop.add_reader(self._fd, self._on_fd)

    # ------------------------------------------------------------- shared memory

    def share_writer(self, peer: Any, writer: shm.Writer | None) -> None:
        """From now on ``peer``'s BODY and RESPONSE payloads of ``writer.min_bytes`` and more go
        through ``writer`` while it has a free slot (None: frames only). FREED events for it come
        to the owner, who closes it."""
        if writer is None:
            self._writers.pop(peer, None)
        else:
            self._writers[peer] = writer

    def share_reader(self, peer: Any, reader: shm.Reader) -> None:
        """``peer``'s shared payloads are read from ``reader``; FREED goes back as slots free up."""
        self._readers[peer] = reader
        reader.on_freed = lambda: self._loop.call_soon(self._post_freed, peer, reader)

    def unshare(self, peer: Any) -> None:
        """``peer`` is gone: its segment's slots are no longer ours to free, ours no longer its."""
        self._writers.pop(peer, None)
        reader = self._readers.pop(peer, None)
        if reader is not None:
            reader.close()

    def _post_freed(self, peer: Any, reader: shm.Reader) -> None:
        slots = reader.take_freed()
        if slots and not reader.closed and not self._closed:
            self.post(ev.Freed(0, slots), peer)

    def _to_shared(self, writer: shm.Writer, events: list[Any]) -> None:
        """Large BODY and RESPONSE payloads into slots of ``writer``, while any is free."""
        for i, event in enumerate(events):
            kind = type(event)
            if kind is ev.Body or kind is ev.Response:
                body = event.body
                if len(body) < writer.min_bytes or type(body) is shm.Shared:
                    continue
                shared: Any = writer.put(body)
                if shared is None:
                    return  # no free slot: the rest go in frames
                if kind is ev.Body:
                    events[i] = ev.Body(event.stream_id, shared, event.more_body)
                else:
                    events[i] = ev.Response(
                        event.stream_id, event.status, event.headers, shared, event.more_body, event.trailers
                    )

    # ------------------------------------------------------------- sending

    def post(self, event: Any, peer: Any = None) -> None:
        """Queue ``event`` for ``peer``; it leaves with this loop iteration's batch (``hold_while``:
        up to ``hold_s`` after its first event, unless a peer's holds ``hold_events``), or at once when
        the peer's batch holds ``hold_events`` or the batch has waited ``hold_s``, or (a DEALER) the
        event carries EAGER_PAYLOAD_BYTES or more, or the batch BATCH_MAX_PAYLOAD_BYTES."""
        box = self._outbox.get(peer)
        if box is None:
            box = self._outbox[peer] = []
        box.append(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._batch_since = perf_counter()
            self._loop.call_soon(self._flush_at_end)
        else:
            now = perf_counter()
            if now - self._batch_since >= self.hold_s:
                self._batch_since = now  # the scheduled flush still runs: it sends what is left
                self._send_outbox(mid_post=True)
                return
        if len(box) >= self.hold_events or (not self.routed and self._dealer_batch_full(event)):
            self._batch_bytes = 0
            unsent = self._flush_peer(peer, self._outbox.pop(peer))
            if unsent is not None:  # the caller is mid-post: tell the owner from the loop
                self._loop.call_soon(self._unreachable, peer, unsent)
            self._check_input()

    def _dealer_batch_full(self, event: Any) -> bool:
        """A worker's batch leaves at an event of EAGER_PAYLOAD_BYTES, or once it holds
        BATCH_MAX_PAYLOAD_BYTES of payload: a download's 64 KiB chunks go 16 to a message, as
        before BATCH_MAX_EVENTS grew to 32 (32 to a message: 2-5% fewer MiB/s, 410 -> 428 us a MiB)."""
        n = cost(event)
        self._batch_bytes += n
        return n >= EAGER_PAYLOAD_BYTES or self._batch_bytes >= BATCH_MAX_PAYLOAD_BYTES

    def _flush_at_end(self) -> None:
        """The end of the iteration that posted; while ``hold_while()``, at most ``hold_s`` later."""
        self._held = None
        hold_while = self.hold_while
        if hold_while is not None and self._outbox and not self._closed and hold_while():
            wait = self.hold_s - (perf_counter() - self._batch_since)
            if wait > 0 and max([len(box) for box in self._outbox.values()]) < self.hold_events:
                self._held = self._loop.call_later(wait, self._flush_at_end)
                return
        self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._held is not None:
            self._held.cancel()
            self._held = None
        if self._closed or not self._outbox:
            return
        self._send_outbox(mid_post=False)

    def _send_outbox(self, *, mid_post: bool) -> None:
        """Every peer's batch, now; ``mid_post``: the owner hears of unreachable peers from the loop."""
        boxes, self._outbox = self._outbox, {}
        self._batch_bytes = 0
        for peer, events in boxes.items():
            unsent = self._flush_peer(peer, events)
            if unsent is None:
                continue
            if mid_post:
                self._loop.call_soon(self._unreachable, peer, unsent)
            else:
                self._unreachable(peer, unsent)
        self._check_input()

    def _flush_peer(self, peer: Any, events: list[Any]) -> list[Any] | None:
        """Encode and send ``events``; the events not sent if ``peer`` is unreachable."""
        if self._writers:
            writer = self._writers.get(peer)
            if writer is not None:
                self._to_shared(writer, events)
        chunks = _split_batch(events)
        for i, chunk in enumerate(chunks):
            frames = codec.encode(chunk, packer=self._packer)
            if self.routed:
                frames.insert(0, peer)
            if not self._send_or_queue(_Blocked(frames, peer, chunk)):
                return [e for rest in chunks[i:] for e in rest]
        return None

    def discard(self, peer: Any = None) -> list[Any]:
        """Drop and return the events for ``peer`` not yet handed to ZeroMQ (it is gone)."""
        events = self._outbox.pop(peer, [])
        self._batch_bytes = 0
        if any(b.peer == peer for b in self._blocked):
            kept: deque[_Blocked] = deque()
            for blocked in self._blocked:
                if blocked.peer == peer:
                    events[:0] = blocked.events
                else:
                    kept.append(blocked)
            self._blocked = kept
        return events

    def _send_or_queue(self, item: _Blocked) -> bool:
        """False: the peer is unreachable (ROUTER_MANDATORY) and nothing was sent."""
        if self._blocked:
            self._blocked.append(item)
            return True
        try:
            self._send_frames(item.frames)
        except zmq.Again:
            self._blocked.append(item)
            self._schedule_retry()
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            log.warning("send to %r failed: %s", item.peer, exc)
        return True

    def _unreachable(self, peer: Any, unsent: list[Any]) -> None:
        unsent += self.discard(peer)
        if self._on_unreachable is not None:
            self._on_unreachable(peer, unsent)
        else:
            log.warning("peer %r is unreachable; %d events dropped", peer, len(unsent))

    def _schedule_retry(self) -> None:
        if self._retry is None and not self._closed:
            self._retry = self._loop.call_later(self._retry_s, self._on_retry)
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    def _on_retry(self) -> None:
        self._retry = None
        self._on_fd()

    def _send_frames(self, frames: list[Any]) -> None:
        last = len(frames) - 1
        sock = self.sock
        for i, frame in enumerate(frames):
            _SEND(sock, frame, _NOBLOCK_SNDMORE if i < last else _NOBLOCK, len(frame) < ZERO_COPY_MIN_BYTES)  # copy

    def _retry_blocked(self) -> None:
        while self._blocked:
            item = self._blocked[0]
            try:
                self._send_frames(item.frames)
            except zmq.Again:
                self._schedule_retry()
                return
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    self._blocked.popleft()
                    self._unreachable(item.peer, list(item.events))
                    continue
                log.warning("send to %r failed: %s", item.peer, exc)
            self._blocked.popleft()
        self._retry_s = RETRY_MIN_S

    @property
    def closed(self) -> bool:
        """``close()`` was called (an event handler may call it mid-wakeup)."""
        return self._closed

    # ----------------------------------------------------------- receiving

    def _on_fd(self) -> None:
        if self._closed:
            return
        if self._blocked:
            self._retry_blocked()
        n = 0
        sock = self.sock
        while n < MAX_MESSAGES_PER_WAKEUP:
            try:
                # After a message, ZMQ_EVENTS says whether another waits (~1.5 µs) where a receive
                # would fail: pyzmq raises EAGAIN as zmq.Again, whose constructor imports (~5 µs).
                if n and not cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:
                    break
                frames = self._recv()
            except zmq.Again:
                break
            except zmq.ZMQError as exc:  # socket closed under us
                log.debug("receive failed: %s", exc)
                return
            n += 1
            self._deliver(frames)
            if self.closed:  # (the property: mypy keeps _closed narrowed to False across the call)
                return
        else:
            self._loop.call_soon(self._on_fd)  # more may be waiting: yield first
            return
        # The look that found nothing (a failed receive or ZMQ_EVENTS) left the FD armed for the next
        # arrival: only a send (which can swallow its edge) needs another look afterwards.
        if self._outbox and not self._flush_scheduled:
            self.flush()
        elif self._blocked:
            self._check_input()

    def _recv(self) -> list[Any]:
        """One message, as ``recv_multipart`` reads it but for ~0.8 µs less: each frame says
        whether more follow (``Frame.more``), where ``recv_multipart`` asks ZMQ_RCVMORE per frame.
        With ``payload_views``, payload frames of VIEW_MIN_BYTES and more stay memoryviews of
        ZeroMQ's messages (zero-copy; the view keeps the message alive); every other frame is bytes.

        Raises:
            zmq.Again: nothing to read.
        """
        sock = self.sock
        views = self._payload_views
        plain = 2 if self.routed else 1  # the routing id and the header frame: always bytes
        frame = _RECV(sock, _NOBLOCK, False)  # copy=False
        frames: list[Any] = [frame.bytes]
        while frame.more:
            frame = _RECV(sock, _NOBLOCK, False)  # copy=False
            if views and len(frames) >= plain and len(frame) >= VIEW_MIN_BYTES:
                frames.append(frame.buffer)
            else:
                frames.append(frame.bytes)
        return frames

    def _deliver(self, frames: list[Any]) -> None:
        peer = None
        if self.routed:
            if len(frames) < 2:
                return
            peer, frames = frames[0], frames[1:]
        try:
            shared = self._readers.get(peer) if self._readers else None
            events = codec.decode(frames, limits=self._limits, shared=shared)
        except DecodeError as exc:
            self._on_bad_message(peer, str(exc))
            return
        self._on_events(peer, events)

    def _check_input(self) -> None:
        try:
            ready = cast(int, self.sock.getsockopt(_EVENTS))
        except zmq.ZMQError:
            return
        if ready & _POLLIN or (self._blocked and ready & _POLLOUT):
            self._loop.call_soon(self._on_fd)

    # ------------------------------------------------------------- closing

    def close(self, *, linger_ms: int = 0) -> None:
        """``linger_ms`` > 0 lets already-flushed messages (a final BYE) still leave."""
        if self._closed:
            return
        self._closed = True
        for timer in (self._retry, self._held):
            if timer is not None:
                timer.cancel()
        self._loop.remove_reader(self._fd)
        self.sock.close(linger=linger_ms)
        for peer in list(self._readers):
            self.unshare(peer)
        self._writers.clear()  # (their owners close them)


class _Blocked:
    """One encoded message and the events in it (returned by ``discard`` if never sent)."""

    __slots__ = ("frames", "peer", "events")

    def __init__(self, frames: list[Any], peer: Any, events: list[Any]) -> None:
        self.frames = frames
        self.peer = peer
        self.events = events


class SocketMonitor:
    """ZeroMQ's socket monitor, read from the loop like ``Channel``: ``on_event(event, endpoint)``
    for each of ``events`` (``zmq.EVENT_*`` flags). Only a ROUTER's peers' fds travel in
    these events, never routing ids, so callers probe rather than map (libzmq without DRAFT).

    Resource handling: ``close()`` before closing the watched socket; it removes the reader,
    stops monitoring and closes the monitor's PAIR socket (linger 0)."""

    def __init__(self, sock: zmq.Socket[Any], events: int, on_event: OnMonitorEvent) -> None:
        self._sock = sock
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._pair = sock.get_monitor_socket(events)
        self._fd = cast(int, self._pair.getsockopt(zmq.FD))
        self._closed = False
        self._loop.add_reader(self._fd, self._drain)
        self._loop.call_soon(self._drain)  # events queued before the reader was added

    def _drain(self) -> None:
        n = 0
        while not self._closed and n < MAX_MESSAGES_PER_WAKEUP:
            try:
                frames = self._pair.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.debug("monitor receive failed: %s", exc)
                return
            n += 1
            try:
                message = parse_monitor_message(frames)
            except (ValueError, TypeError, IndexError, struct_error) as exc:
                log.debug("unreadable monitor message: %s", exc)
                continue
            endpoint = message.get("endpoint", b"")
            name = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
            self._on_event(int(message["event"]), name)
        if not self._closed:
            self._loop.call_soon(self._drain)  # more may be waiting: yield first

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass  # the socket is already closed
        self._pair.close(linger=0)


def _split_batch(events: list[Any]) -> list[list[Any]]:
    """Cut one peer's events into messages of at most ~BATCH_MAX_PAYLOAD_BYTES."""
    chunks: list[list[Any]] = [[]]
    size = 0
    for event in events:
        n = cost(event)  # the payload's length (a WebSocket message's, plus 32)
        # (not getattr(event, "body", None): on a WS_MESSAGE that raised and caught, ~0.5 µs)
        if n and type(event) is not WS_MESSAGE_CLS and type(event.body) is shm.Shared:
            n = 0  # its bytes are not in the message
        if chunks[-1] and size + n > BATCH_MAX_PAYLOAD_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += n
    return chunks
