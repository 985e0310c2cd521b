"""wire.channel: what a ROUTER learns about peers that are gone (unsent events, monitor)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from wire import events as ev
from wire.channel import Channel, SocketMonitor, configure_dealer, configure_router

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


async def _until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _router(ctx: zmq.Context[Any], tmp_path: Path, **callbacks: Any) -> Channel:
    sock = ctx.socket(zmq.ROUTER)
    configure_router(sock)
    sock.bind(f"ipc://{tmp_path}/r.sock")
    ignore = lambda *args: None  # noqa: E731
    return Channel(sock, routed=True, on_events=ignore, on_bad_message=ignore, **callbacks)


def _dealer(ctx: zmq.Context[Any], tmp_path: Path, batches: list[list[Any]]) -> Channel:
    """A DEALER "w1" connected to _router's socket, appending each batch it receives."""
    sock = ctx.socket(zmq.DEALER)
    configure_dealer(sock, routing_id=b"w1")
    sock.connect(f"ipc://{tmp_path}/r.sock")
    return Channel(sock, routed=False, on_events=lambda _peer, events: batches.append(events),
                   on_bad_message=lambda *args: None)  # fmt: skip


async def test_unreachable_peer_gets_back_every_unsent_event(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    failed: list[tuple[bytes, list[Any]]] = []
    channel = _router(ctx, tmp_path, on_unreachable=lambda peer, events: failed.append((peer, events)))
    sent = [ev.Request(7, "POST", "http", "1.1", b"/", b"", "", (), None, None, b"x", False, False, {}),
            ev.Body(3, b"y" * 700_000, True), ev.Body(3, b"z" * 700_000, False)]  # fmt: skip
    for event in sent:
        channel.post(event, b"ghost")  # two messages: split at ~1 MiB of payload
    await _until(lambda: bool(failed))
    assert failed == [(b"ghost", sent)]
    channel.close()


async def test_discard_returns_what_never_left(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    failed: list[Any] = []
    channel = _router(ctx, tmp_path, on_unreachable=lambda peer, events: failed.append(peer))
    channel.post(ev.Heartbeat(), b"gone")
    channel.post(ev.Credit(5, 10), b"gone")
    channel.post(ev.Heartbeat(), b"other")
    assert channel.discard(b"gone") == [ev.Heartbeat(), ev.Credit(5, 10)]
    assert channel.discard(b"gone") == []
    await _until(lambda: bool(failed))
    await asyncio.sleep(0.05)
    assert failed == [b"other"]  # "gone" was never sent, so never failed
    channel.close()


async def test_monitor_sees_a_peer_connection_drop(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    seen: list[int] = []
    router = ctx.socket(zmq.ROUTER)
    configure_router(router)
    monitor = SocketMonitor(router, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED, lambda e, _: seen.append(e))
    router.bind(f"ipc://{tmp_path}/m.sock")
    dealer = ctx.socket(zmq.DEALER)
    configure_dealer(dealer, routing_id=b"w")
    dealer.connect(f"ipc://{tmp_path}/m.sock")
    await _until(lambda: zmq.EVENT_ACCEPTED in seen)
    dealer.close(linger=0)  # as a killed process's connection
    await _until(lambda: zmq.EVENT_DISCONNECTED in seen)
    monitor.close()
    monitor.close()  # idempotent
    router.close(linger=0)


def test_dealer_reconnects_quickly() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        configure_dealer(sock, routing_id=b"w")
        assert sock.getsockopt(zmq.RECONNECT_IVL) == 100
        assert 0 < sock.getsockopt(zmq.RECONNECT_IVL_MAX) <= 1000
    finally:
        sock.close(linger=0)
        ctx.term()


async def test_a_full_batch_leaves_at_once_and_in_order(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Rule 2: batches of at most BATCH_MAX_EVENTS, so the peer starts before the sender's
    iteration ends; the events arrive in posting order, each exactly once."""
    from wire.channel import BATCH_MAX_EVENTS

    router = _router(ctx, tmp_path)
    batches: list[list[Any]] = []
    dealer = _dealer(ctx, tmp_path, batches)
    dealer.post(ev.Heartbeat())  # the router learns the dealer's routing id
    await asyncio.sleep(0.2)  # connected, and the router has seen its routing id
    count = BATCH_MAX_EVENTS * 3 + 5
    for i in range(count):
        router.post(ev.Credit(i + 1, 10), b"w1")
    assert len(router._outbox[b"w1"]) == 5  # three full batches left during the posting
    await _until(lambda: sum(map(len, batches)) >= count)
    assert [e.stream_id for batch in batches for e in batch] == list(range(1, count + 1))
    assert max(map(len, batches)) <= BATCH_MAX_EVENTS
    router.close()
    dealer.close()


async def test_a_workers_batch_leaves_at_a_mebibyte_of_payload(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A worker streaming 64 KiB chunks without yielding sends them 16 to a message (1 MiB), not
    BATCH_MAX_EVENTS to one: the front end starts writing while the app goes on."""
    from wire.channel import BATCH_MAX_EVENTS, BATCH_MAX_PAYLOAD_BYTES

    received: list[list[Any]] = []
    router = _router(ctx, tmp_path)
    router._on_events = lambda _peer, events: received.append(events)
    dealer = _dealer(ctx, tmp_path, [])
    chunk = 64 * 1024
    per_message = BATCH_MAX_PAYLOAD_BYTES // chunk
    assert per_message < BATCH_MAX_EVENTS  # (else the event count would decide, not the payload)
    for _ in range(2 * per_message + 3):
        dealer.post(ev.Body(1, b"x" * chunk, True))
    assert len(dealer._outbox[None]) == 3  # two full batches left during the posting
    await _until(lambda: sum(map(len, received)) == 2 * per_message + 3)
    assert [len(batch) for batch in received] == [per_message, per_message, 3]
    router.close()
    dealer.close()


async def test_a_batch_held_by_a_long_iteration_leaves_with_the_next_post(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """An iteration that runs long (a CPU-bound app: two 2 ms requests...) does not hold what it
    posted first to its end: once the batch is STALE_BATCH_S old, the next post sends it all,
    and the flush at the iteration's end sends what is left, in order, each event once."""
    import time

    from wire.channel import STALE_BATCH_S

    router = _router(ctx, tmp_path)
    batches: list[list[Any]] = []
    dealer = _dealer(ctx, tmp_path, batches)
    dealer.post(ev.Heartbeat())
    await asyncio.sleep(0.2)
    router.post(ev.Credit(1, 10), b"w1")
    router.post(ev.Credit(2, 10), b"w1")
    assert len(router._outbox[b"w1"]) == 2  # young: waits for the iteration's end
    time.sleep(STALE_BATCH_S * 1.5)  # the app burns CPU, the loop does not turn
    router.post(ev.Credit(3, 10), b"w1")
    assert not router._outbox  # all three left, mid-iteration
    router.post(ev.Credit(4, 10), b"w1")
    assert len(router._outbox[b"w1"]) == 1
    await _until(lambda: sum(map(len, batches)) >= 4)
    assert [[e.stream_id for e in batch] for batch in batches] == [[1, 2, 3], [4]]
    router.close()
    dealer.close()


async def test_a_batch_leaves_mid_iteration_once_it_holds_hold_events(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """``hold_events`` and ``hold_s`` are the owner's (an adaptive worker sets them from its limit):
    a peer's batch leaves with the post that brings it to ``hold_events``, without the loop
    turning; the rest leaves at the iteration's end; a long ``hold_s`` keeps a young batch."""
    import time

    router = _router(ctx, tmp_path)
    batches: list[list[Any]] = []
    dealer = _dealer(ctx, tmp_path, batches)
    dealer.post(ev.Heartbeat())
    await asyncio.sleep(0.2)
    router.hold_events, router.hold_s = 2, 10.0
    for stream_id in (1, 2, 3):
        router.post(ev.Credit(stream_id, 10), b"w1")
        time.sleep(0.02)  # older than the default hold_s (STALE_BATCH_S): only the count decides
    assert len(router._outbox[b"w1"]) == 1  # 1 and 2 left at the second post, mid-iteration
    await _until(lambda: sum(map(len, batches)) >= 3)
    assert [[e.stream_id for e in batch] for batch in batches] == [[1, 2], [3]]
    router.close()
    dealer.close()


async def test_hold_while_keeps_a_small_young_batch_past_the_iteration_s_end(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """``hold_while`` (an adaptive worker whose loop lags, while requests run): a batch under
    ``hold_events`` waits past the end of its iteration until it is ``hold_s`` old, then leaves; one
    that reaches ``hold_events`` leaves at once; ``flush()`` sends what is held now; once
    ``hold_while()`` is false, or without it, a batch leaves at its iteration's end."""
    router = _router(ctx, tmp_path)
    batches: list[list[Any]] = []
    dealer = _dealer(ctx, tmp_path, batches)
    dealer.post(ev.Heartbeat())
    await asyncio.sleep(0.2)
    more_to_come = [True]
    router.hold_events, router.hold_s, router.hold_while = 3, 0.3, lambda: more_to_come[0]
    loop = asyncio.get_running_loop()
    started = loop.time()
    router.post(ev.Credit(1, 10), b"w1")
    await asyncio.sleep(0.1)  # many iterations later: still held
    assert not batches and len(router._outbox[b"w1"]) == 1
    router.post(ev.Credit(2, 10), b"w1")
    await _until(lambda: len(batches) == 1)
    assert loop.time() - started >= 0.3 - 0.01  # (the timer's clock and perf_counter may differ by a tick)
    assert [e.stream_id for e in batches[0]] == [1, 2]
    for stream_id in (3, 4, 5):  # hold_events reached: leaves with the third post
        router.post(ev.Credit(stream_id, 10), b"w1")
    await _until(lambda: len(batches) == 2)
    router.post(ev.Credit(6, 10), b"w1")
    await asyncio.sleep(0)
    router.flush()  # the owner's flush does not wait
    await _until(lambda: len(batches) == 3)
    assert [[e.stream_id for e in batch] for batch in batches] == [[1, 2], [3, 4, 5], [6]]
    more_to_come[0] = False  # nothing more coming: a batch leaves at its iteration's end
    router.post(ev.Credit(7, 10), b"w1")
    await _until(lambda: len(batches) == 4, timeout_s=0.2)
    router.hold_while = None  # and without it
    router.post(ev.Credit(8, 10), b"w1")
    await _until(lambda: len(batches) == 5, timeout_s=0.2)
    router.close()
    dealer.close()


async def test_payload_views_receive_large_bodies_uncopied(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """payload_views (the front end's channel): a body frame of VIEW_MIN_BYTES or more arrives as a
    memoryview, smaller ones and every other kind's payload as bytes; the bytes are the same."""
    from wire.channel import VIEW_MIN_BYTES

    got: list[Any] = []
    sock = ctx.socket(zmq.ROUTER)
    configure_router(sock)
    sock.bind(f"ipc://{tmp_path}/r.sock")
    router = Channel(sock, routed=True, on_events=lambda _peer, events: got.extend(events),
                     on_bad_message=lambda *args: None, payload_views=True)  # fmt: skip
    dealer_sock = ctx.socket(zmq.DEALER)
    configure_dealer(dealer_sock, routing_id=b"w1")
    dealer_sock.connect(f"ipc://{tmp_path}/r.sock")
    dealer = Channel(dealer_sock, routed=False, on_events=lambda *args: None, on_bad_message=lambda *args: None)
    big, mid = bytes(range(256)) * (VIEW_MIN_BYTES // 256 + 1), b"m" * (VIEW_MIN_BYTES - 1)
    sent = [ev.Body(1, big, True), ev.Body(1, mid, False), ev.WsMessage(2, False, big), ev.Body(3, b"s", False)]
    for event in sent:
        dealer.post(event)
    await _until(lambda: len(got) >= len(sent))
    assert got == sent
    assert [type(e.body if isinstance(e, ev.Body) else e.data) for e in got] == [memoryview, bytes, bytes, bytes]
    router.close()
    dealer.close()
