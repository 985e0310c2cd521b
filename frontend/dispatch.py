"""The backend: one ROUTER socket, the worker handshake, liveness, and routing.

Theory of operation. ``wire.channel.Channel`` calls ``_on_events`` from the
loop's reader callback with every decoded message; everything here is
synchronous and delivers worker events to streams by direct method calls
(``Stream.on_event``), so a request costs no task, queue or future beyond the
one future its handler awaits.

* Handshake (PROTOCOL §4.1): HELLO -> WELCOME (features = what both support)
  or REFUSE. Any other event from a peer without a handshake -> UNKNOWN_PEER
  (Rule 8), once per message.
* Liveness (Rule 9/10): a timer ticks every half heartbeat interval. It expires
  silent workers (``Pool.expire``) and sends HEARTBEAT to every worker that
  was sent nothing since the previous tick. That is the fallback (a partition
  sends no signal); a worker that dies (kill -9, OOM) closes its connection,
  and a monitor on the ROUTER sees that at once: the event names no worker,
  so every worker is probed with a HEARTBEAT (``ProbePlan``), and the one whose
  pipe is gone fails the send (ROUTER_MANDATORY) -> unreachable.
* Busy is not lost (Rule 9a, feature "pulse"): a worker's pulse thread sends
  PULSE from a connection of its own (a peer with no handshake, named in the
  PULSE by the worker's routing id), whatever its event loop does. A PULSE
  keeps the worker alive; one saying its loop has been stalled for half a
  heartbeat interval makes it BUSY (no new streams, its own go on and are
  never replayed) until one says the loop runs again. Each ended stall is
  observed in ``loop_blocked`` (zasgi_worker_loop_blocked_seconds). Blocked
  past ``heartbeat.blocked_timeout_s`` (--timeout-worker-blocked; off by
  default), it is evicted by the tick (Rule 9b): EVICT to its pulse
  connection (it exits, its supervisor starts another), and it is lost with
  ``evicted`` set, so its streams answer 504 and none is replayed.
* A lost worker (silence, BYE, unreachable, undecodable input, re-HELLO) has
  each of its streams told ``on_worker_lost``; the stream decides to replay or
  fail (PROTOCOL §9; once at most, replay.py). Before that the record is
  marked with what is known about delivery: events still queued for it are
  dropped, and the streams whose opening event was among them (or in a send
  that failed) never left. The replays that follow leave spread over a
  quarter second (``replay.ReplaySpread``), so a poison request among them
  takes few others down with the next worker it kills.
* Capacity: ``acquire`` takes a slot on the least loaded READY worker, or
  waits in a queue that sheds by delay (slots.py, codel.py); ``close_stream``
  frees the slot and hands it to the next waiter. A worker's HTTP slots are
  its capacity, or the limit it reports with LIMIT (feature "limit", §7.1),
  which grows and shrinks with what its app can take. WebSocket slots
  (HELLO.ws_capacity) have a queue of their own, so long-lived WebSockets
  never use up HTTP capacity. The queues hear of every change in the READY
  workers (``_workers_changed``): with none for a while they refuse at once.

* CurveZMQ (``config.backend.curve``): the ROUTER is a CURVE server and a
  ZAP handler on this loop (``wire.curve.WorkerAuthenticator``) lets in only
  workers whose keys are in the authorized-keys directory, re-read when it
  changes; a refused worker never gets as far as HELLO.

Stream ids come from one counter for the whole process: strictly increasing on
every connection, as Rule 13 requires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Protocol

import zmq

import wire
from wire import curve, shm
from wire import events as ev
from wire.channel import Channel, SocketMonitor, configure_router
from wire.codec import Limits
from wire.states import WorkerState

from .config import FrontendConfig
from .metrics import BLOCKED_BUCKETS_S
from .pool import Pool, ProbePlan, WorkerRecord
from .replay import ReplaySpread
from .slots import SlotQueue
from .traffic import Buckets

log = logging.getLogger(__name__)

BYE_GRACE_S = 0.05  # lets ZeroMQ's I/O thread put the BYEs on the wire before linger-0 close
_OPENING = (ev.Request, ev.WsConnect, ev.WsResume)  # the events that give a stream to a worker


class Outbox(Protocol):
    """What the dispatcher uses of its ``wire.channel.Channel``. A Protocol: to the compiled
    dispatcher any such object (wire/compiled.py), so micro_frontend.py can stand a list in."""

    def post(self, event: Any, peer: Any) -> None: ...
    def flush(self) -> None: ...
    def discard(self, peer: Any) -> list[Any]: ...
    def close(self) -> None: ...
    def share_reader(self, peer: Any, reader: shm.Reader) -> None: ...
    def share_writer(self, peer: Any, writer: shm.Writer | None) -> None: ...
    def unshare(self, peer: Any) -> None: ...


class Stream(Protocol):
    stream_id: int
    worker: WorkerRecord | None
    websocket: bool  # which kind of slot the stream holds

    def on_event(self, event: Any) -> None: ...  # a wire event from the stream's worker
    def on_violation(self, reason: str) -> None: ...  # the worker sent an undecodable event
    def on_worker_lost(self) -> None: ...  # the worker is gone


class Dispatcher:
    """Resource handling: ``start`` binds the ROUTER (creating an ipc directory
    with mode 0700) and starts the ZAP handler if CurveZMQ is on; ``aclose``
    says BYE to every worker, fails the waiters, closes the socket and stops
    the ZAP handler."""

    def __init__(self, config: FrontendConfig, ctx: zmq.Context[Any], *, frontend_id: str = "") -> None:
        self.config = config
        self.frontend_id = frontend_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.pool = Pool(dead_after_s=config.heartbeat.dead_after_s)
        self.endpoint = config.backend.endpoint  # the bound one after start()
        self.window_bytes = config.backend.window_bytes  # each stream's response window (WELCOME)
        self.max_payload_bytes = config.backend.max_payload_bytes  # the window's one-event slack
        features = {"http", "trailers", "websocket", "ws-denial", "handoff", "limit", "linger", "pulse",
                    "early-hints", "shm-body"}  # fmt: skip -- shm-body: agreed only if its segment maps
        features |= {"pathsend"} if config.backend.is_local else set()
        self.features = frozenset(features)
        self._ctx = ctx
        self._channel: Outbox | None = None
        self._monitor: SocketMonitor | None = None
        self._probes = ProbePlan()
        self._probe_timer: asyncio.Handle | None = None
        self._probe_at = 0.0  # when _probe_timer fires
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        q = config.queue
        self.slots = SlotQueue(
            self.pool, size=q.size, timeout_s=q.timeout_s, target_s=q.target_s, interval_s=q.interval_s,
            no_worker_grace_s=q.no_worker_grace_s,
        )  # fmt: skip
        self.ws_slots = SlotQueue(
            self.pool, size=q.size, timeout_s=q.timeout_s, no_worker_grace_s=q.no_worker_grace_s,
            websocket=True,
        )  # fmt: skip  -- WebSockets are long-lived: a standing queue of them is no sign of overload
        self._sent_to: set[bytes] = set()  # peers posted to since the last tick
        self._shm: dict[bytes, shm.Writer] = {}  # each "shm-body" worker's request-body segment (SHARE)
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._auth: curve.WorkerAuthenticator | None = None  # ZAP, with CurveZMQ only
        self.loop_blocked = Buckets(BLOCKED_BUCKETS_S)  # workers' event-loop stalls, from PULSE
        self._spread = ReplaySpread()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        backend = self.config.backend
        if backend.curve is not None and backend.authorized_keys is not None:
            # Before the bind: a CURVE server without a ZAP handler would let every key in.
            self._auth = curve.WorkerAuthenticator(self._ctx, backend.authorized_keys)
            self._auth.start()
        sock = self._ctx.socket(zmq.ROUTER)
        try:
            configure_router(sock)
            if backend.curve is not None:
                curve.apply_server(sock, backend.curve)
            self._monitor = SocketMonitor(sock, zmq.EVENT_DISCONNECTED, self._on_transport_event)
            if self.endpoint.startswith("ipc://"):
                _make_private_dir(self.endpoint[len("ipc://") :])
            sock.bind(self.endpoint)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException:
            if self._monitor is not None:
                self._monitor.close()
                self._monitor = None
            sock.close(linger=0)
            self._stop_auth()
            raise
        limits = Limits(max_payload_bytes=self.config.backend.max_payload_bytes)
        self._channel = Channel(
            sock, routed=True, on_events=self._on_events, on_bad_message=self._on_bad_message,
            on_unreachable=self._on_unreachable, limits=limits,
            payload_views=True,  # response bodies are only written on: no copy (wire/channel.py)
        )  # fmt: skip
        self._schedule_tick()
        self._workers_changed()

    async def aclose(self, reason: str = "front end shutting down") -> None:
        """BYE (with ``reason``) to every worker, then close."""
        self._closing = True
        self.slots.close()
        self.ws_slots.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        channel, self._channel = self._channel, None
        if channel is None:
            self._stop_auth()
            return
        for record in self.pool:
            channel.post(ev.Bye(0, reason), record.peer)
        channel.flush()
        if len(self.pool):
            await asyncio.sleep(BYE_GRACE_S)
        channel.close()
        for writer in self._shm.values():
            writer.close()
        self._shm.clear()
        self._stop_auth()

    def _stop_auth(self) -> None:
        auth, self._auth = self._auth, None
        if auth is not None:
            auth.stop()

    @property
    def streams_open(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------- slots and streams

    async def acquire(self, *, websocket: bool = False, replay: bool = False) -> WorkerRecord:
        """A worker slot for a new stream (see ``slots.SlotQueue.acquire``); a replay goes first, paced
        after a loss (``replay.ReplaySpread``)."""
        if replay and self._loop is not None:
            delay = self._spread.delay(self._loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
        return await (self.ws_slots if websocket else self.slots).acquire(first=replay)

    def try_acquire(self) -> WorkerRecord | None:
        """An HTTP slot if one is free right now (no await); else None: ``acquire`` queues."""
        return self.slots.try_acquire()

    def open_stream(self, stream: Stream) -> int:
        """A new stream id, routed to ``stream`` (whose ``worker`` holds a slot)."""
        stream_id = self._next_id
        self._next_id += 1
        self._streams[stream_id] = stream
        return stream_id

    def close_stream(self, stream: Stream) -> None:
        """The stream is closed on the wire: forget its id, free its slot."""
        if self._streams.pop(stream.stream_id, None) is not None and stream.worker is not None:
            self.pool.release(stream.worker, stream.websocket)
            slots = self.ws_slots if stream.websocket else self.slots
            if slots.waiters:
                slots.wake()

    def post(self, event: Any, worker: WorkerRecord) -> None:
        if self._channel is not None:
            self._sent_to.add(worker.peer)
            self._channel.post(event, worker.peer)

    # ----------------------------------------------------------- receiving

    def _on_events(self, peer: bytes, events: list[Any]) -> None:
        assert self._loop is not None
        record = self.pool.seen(peer, self._loop.time())
        for event in events:
            if record is None:
                if type(event) is ev.Hello:
                    record = self._handshake(peer, event)
                    continue
                if type(event) is ev.Pulse:  # from a worker's pulse connection: no handshake of its own
                    self._pulse(peer, event)
                    continue
                self._post_peer(ev.UnknownPeer(), peer)  # Rule 8; dedup'd below
                break
            if event.stream_id:
                self._route(record, event)
            else:
                record = self._control(record, event)

    def _route(self, record: WorkerRecord, event: Any) -> None:
        stream_id = event.stream_id
        stream = self._streams.get(stream_id)
        if stream is None or stream.worker is not record:
            if stream is not None:
                log.warning("worker %s sent %s for stream %d it does not own; dropped",
                            record.worker_id, type(event).__name__, stream_id)  # fmt: skip
            elif stream_id >= self._next_id or type(event) is ev.Invalid:
                reason = getattr(event, "reason", "") or "stream was never opened"
                self.post(ev.Reset(stream_id, wire.ResetCode.PROTOCOL_ERROR, reason), record)
            return  # else: a closed stream's straggler (Rule 14)
        if type(event) is ev.Invalid:
            log.warning("worker %s: bad event on stream %d: %s", record.worker_id, stream_id, event.reason)
            stream.on_violation(event.reason)
        else:
            stream.on_event(event)

    def _control(self, record: WorkerRecord, event: Any) -> WorkerRecord | None:
        kind = type(event)
        if kind is ev.Heartbeat:
            return record
        if kind is ev.Limit:
            self._limit(record, event.limit)
            return record
        if kind is ev.Freed:
            self._freed(record, event.slots)
            return record
        if kind is ev.Pulse:
            self._pulse(record.peer, event)
            return record
        if kind is ev.Drain:
            log.info("worker %s is draining", record.worker_id)
            self.pool.drain(record.peer)
            self._workers_changed()
            return record
        if kind is ev.Linger:
            sessions = record.in_flight + record.ws_in_flight
            log.info("worker %s lingers with %d open stream(s)", record.worker_id, sessions)
            self.pool.linger(record.peer)
            return record
        if kind is ev.Bye:
            log.info("worker %s said bye: %s", record.worker_id, event.reason)
            record.said_bye = True
            self._lose(record, "said bye")
            return None
        if kind is ev.Hello:  # it restarted its connection: the old streams are gone
            return self._handshake(record.peer, event)
        reason = event.reason if kind is ev.Invalid else f"{kind.__name__} is not a worker's event"
        log.warning("worker %s: bad control event (%s); forgetting it", record.worker_id, reason)
        self._lose(record, "protocol error")
        return None

    def _on_bad_message(self, peer: bytes, reason: str) -> None:
        record = self.pool.get(peer)
        log.warning("undecodable message from %s: %s", record.worker_id if record else peer, reason)
        if record is not None:
            self._lose(record, "undecodable message")

    def _on_unreachable(self, peer: bytes, unsent: list[Any]) -> None:
        record = self.pool.get(peer)
        if record is not None:
            self._lose(record, "unreachable", unsent)

    # ------------------------------------------------------------ handshake

    def _handshake(self, peer: bytes, hello: ev.Hello) -> WorkerRecord | None:
        old = self.pool.get(peer)
        if old is not None:
            self._lose(old, "said HELLO again")
        refusal = self._refusal(hello)
        if refusal:
            log.warning("refusing worker %s (pid %d): %s", hello.worker_id, hello.pid, refusal)
            self._post_peer(ev.Refuse(0, refusal), peer)
            return None
        if self._closing:
            return None  # it will find our successor (Rule 12)
        assert self._loop is not None
        features = frozenset(f for f in hello.features if f in self.features)
        reader = None
        if "shm-body" in features:
            reader = shm.Reader.open(hello.info.get("shm"))
            if reader is None:  # another host, container or user: bodies come in messages
                features -= {"shm-body"}
        record = WorkerRecord(
            peer=peer, worker_id=hello.worker_id, pid=hello.pid, capacity=hello.capacity,
            ws_capacity=hello.ws_capacity, window_bytes=hello.window_bytes, features=features,
            info=hello.info, now=self._loop.time(),
        )  # fmt: skip
        self.pool.add(record)
        if reader is not None and self._channel is not None:
            self._channel.share_reader(peer, reader)
        hb, backend = self.config.heartbeat, self.config.backend
        welcome = ev.Welcome(
            0, self.frontend_id, hb.interval_ms, hb.liveness, backend.window_bytes,
            backend.max_payload_bytes, tuple(sorted(features)),
        )  # fmt: skip
        self.post(welcome, record)
        if reader is not None:
            self._share(record)
        self.pool.welcome(peer, self._loop.time())
        log.info("worker %s (pid %d) joined: capacity %d, ws_capacity %d, features %s", hello.worker_id,
                 hello.pid, hello.capacity, hello.ws_capacity, ",".join(sorted(features)))  # fmt: skip
        self._workers_changed()
        return record

    def _share(self, record: WorkerRecord) -> None:
        """Request bodies through shared memory too (§7.2): offer a segment; its slots are ours to
        use once the worker has mapped it and FREED them."""
        writer = shm.Writer.create(slots=shm.UPLOAD_SLOTS, slot_bytes=shm.UPLOAD_SLOT_BYTES,
                                   min_bytes=shm.UPLOAD_MIN_BYTES, granted=False)  # fmt: skip
        if writer is None or self._channel is None:
            return
        self._shm[record.peer] = writer
        self._channel.share_writer(record.peer, writer)
        self.post(ev.Share(0, writer.offer), record)

    def _freed(self, record: WorkerRecord, slots: tuple[int, ...]) -> None:
        writer = self._shm.get(record.peer)
        if writer is None:
            log.warning("worker %s sent FREED without a segment of ours; ignored", record.worker_id)
            return
        writer.unlink()  # mapped by the worker (its FREED says so): the name has served
        if writer.release(slots):
            log.warning("worker %s freed shared slots not in use (%s); ignored", record.worker_id, slots)

    def _limit(self, record: WorkerRecord, limit: int) -> None:
        """LIMIT (§7.1): the worker's concurrency limit now; more room serves waiters at once."""
        if "limit" not in record.features:
            log.warning("worker %s sent LIMIT without agreeing to feature 'limit'; ignored", record.worker_id)
            return
        if limit > record.capacity:
            log.debug("worker %s: LIMIT %d over its capacity %d", record.worker_id, limit, record.capacity)
        if self.pool.set_limit(record, limit) and self.slots.waiters:
            self.slots.wake()

    def _pulse(self, peer: bytes, pulse: ev.Pulse) -> None:
        """PULSE (Rule 9a): the worker it names lives; busy while its loop is stalled."""
        record = self.pool.get(pulse.peer)
        if record is None or "pulse" not in record.features:
            log.debug("PULSE for %r, no worker that agreed to 'pulse'; ignored", pulse.peer)
            return
        assert self._loop is not None
        record.pulse_peer = peer
        stalled_s = pulse.stalled_ms / 1000
        if stalled_s:
            record.stall = (pulse.request_id, pulse.method, pulse.path)
        if pulse.blocked_ms:
            self.loop_blocked.observe(pulse.blocked_ms / 1000)
        if self.pool.pulse(record, stalled_s, self.config.heartbeat.interval_s / 2, self._loop.time()):
            if record.state is WorkerState.BUSY:
                log.warning("worker %s is busy: its event loop has not run for %.1fs (%s); no new requests "
                            "until it runs again, its %d stream(s) wait", record.worker_id, stalled_s,
                            describe_stall(record.stall), record.in_flight + record.ws_in_flight)  # fmt: skip
            else:
                log.info("worker %s runs again after %.1fs blocked", record.worker_id, pulse.blocked_ms / 1e3)
            self._workers_changed()

    def _workers_changed(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.slots.workers_changed(now)
        self.ws_slots.workers_changed(now)

    @staticmethod
    def _refusal(hello: ev.Hello) -> str:
        if hello.protocol != wire.PROTOCOL_VERSION:
            return (
                f"protocol {hello.protocol} is not supported (this front end speaks {wire.PROTOCOL_VERSION})"
            )
        if "http" not in hello.features:
            return "the worker does not offer the 'http' feature"
        return ""

    def _lose(self, record: WorkerRecord, why: str, unsent: list[Any] | None = None) -> None:
        self.pool.remove(record.peer)
        unsent = (unsent or []) + (self._channel.discard(record.peer) if self._channel else [])
        if self._channel is not None:
            self._channel.unshare(record.peer)
        writer = self._shm.pop(record.peer, None)
        if writer is not None:
            writer.close()
        record.unsent = frozenset(e.stream_id for e in unsent if type(e) in _OPENING)
        victims = [s for s in self._streams.values() if s.worker is record]
        log.warning("worker %s lost (%s) with %d open streams", record.worker_id, why, len(victims))
        if self._loop is not None:
            self._spread.lost(self._loop.time(), len(victims))
        for stream in victims:
            stream.on_worker_lost()
        if not self._closing:
            self._workers_changed()

    def _evict(self, record: WorkerRecord, now: float) -> None:
        """Rule 9b: blocked past --timeout-worker-blocked: its streams get 504, it is told to exit."""
        blocked_s = now - (record.blocked_since or now)
        log.error("worker %s (pid %d): event loop blocked for %.1fs by %s (--timeout-worker-blocked %gs): "
                  "its %d stream(s) get 504; evicting it, its supervisor starts a new one", record.worker_id,
                  record.pid, blocked_s, describe_stall(record.stall), self.config.heartbeat.blocked_timeout_s,
                  record.in_flight + record.ws_in_flight)  # fmt: skip
        record.evicted = True
        self.loop_blocked.observe(blocked_s)
        if record.pulse_peer is not None and self._channel is not None:
            self._post_peer(ev.Evict(0, f"event loop blocked for {blocked_s:.1f}s"), record.pulse_peer)
            self._channel.flush()
        self._lose(record, f"blocked for {blocked_s:.1f}s, evicted")

    def _post_peer(self, event: Any, peer: bytes) -> None:
        if self._channel is not None:
            self._channel.post(event, peer)

    # ------------------------------------------------------------- liveness

    def _on_transport_event(self, event: int, endpoint: str) -> None:
        """A worker's connection closed (the monitor says which fd, not which worker): probe."""
        assert self._loop is not None
        if self._closing or not len(self.pool):
            return
        self._probes.disconnected(self._loop.time())
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        assert self._loop is not None
        at = self._probes.next_at()
        if at is None:
            return
        timer = self._probe_timer
        if timer is not None:
            if self._probe_at <= at:
                return
            timer.cancel()
        # uvloop returns a plain Handle (no .when()) for a time within a millisecond: keep our own.
        self._probe_at = at
        self._probe_timer = self._loop.call_at(at, self._probe)

    def _probe(self) -> None:
        assert self._loop is not None
        self._probe_timer = None
        if self._probes.take_due(self._loop.time()) and self._channel is not None:
            for record in self.pool:
                self.post(ev.Heartbeat(), record)
            self._channel.flush()  # a gone peer fails here: _on_unreachable -> _lose
        self._schedule_probe()

    def _schedule_tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.config.heartbeat.interval_s / 2, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for record in self.pool.expire(now):
            self._lose(record, f"silent for {self.pool.dead_after_s:.1f}s")
        limit_s = self.config.heartbeat.blocked_timeout_s
        if limit_s is not None:
            for record in self.pool.blocked_past(now, limit_s):
                self._evict(record, now)
        sent, self._sent_to = self._sent_to, set()
        for record in self.pool:
            if record.peer not in sent:
                self.post(ev.Heartbeat(), record)
        self._schedule_tick()


def describe_stall(stall: tuple[str, str, str]) -> str:
    rid, method, path = stall
    return f"request {rid or '-'} {method} {path}" if method else "no request on it"


def _make_private_dir(path: str) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
