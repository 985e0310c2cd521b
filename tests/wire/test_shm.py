"""wire.shm and its use by the codec and the channel: response bodies through a shared segment
(PROTOCOL.md §7.2). A slot is the writer's again only after the reader let go of every view."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import codec, shm
from wire import events as ev
from wire.channel import Channel, configure_dealer, configure_router

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair() -> Iterator[tuple[shm.Writer, shm.Reader]]:
    writer = shm.Writer.create(slots=4, slot_bytes=256 * 1024)
    assert writer is not None
    reader = shm.Reader.open(writer.offer)
    assert reader is not None
    yield writer, reader
    reader.close()
    writer.close()


def _through(events: list[Any], reader: shm.Reader | None) -> list[Any]:
    """Encoded as a channel sends them, decoded as a channel receives them."""
    return codec.decode(codec.encode(events), shared=reader)


def test_a_body_goes_through_a_slot_and_the_slot_comes_back(pair: tuple[shm.Writer, shm.Reader]) -> None:
    writer, reader = pair
    data = os.urandom(200_000)
    freed_calls: list[int] = []
    reader.on_freed = lambda: freed_calls.append(1)
    shared = writer.put(data)
    assert shared is not None and len(shared) == len(data) and writer.free == 3
    (event,) = _through([ev.Body(5, shared, True)], reader)  # type: ignore[arg-type]
    assert type(event) is ev.Body and event.more_body and bytes(event.body) == data
    assert reader.held == 1
    tail = event.body[100:]  # a slice (a transport keeps the unsent rest so) holds the slot too
    del event
    gc.collect()
    assert reader.held == 1 and not reader.freed
    del tail
    assert reader.held == 0 and reader.freed == [shared.slot] and freed_calls == [1]
    assert reader.take_freed() == (shared.slot,) and reader.freed == []
    assert writer.release((shared.slot,)) == 0 and writer.free == 4


def test_pieces_go_into_a_slot_one_by_one_or_are_joined_once_for_a_frame(
    pair: tuple[shm.Writer, shm.Reader],
) -> None:
    """Parts: the app's sends land in the slot piece after piece (no join first); with no slot,
    the encoder joins them into the one frame it would have sent; either way the same bytes."""
    writer, reader = pair
    pieces = [os.urandom(64 * 1024) for _ in range(3)] + [b"tail"]
    parts = shm.joinable(pieces, sum(map(len, pieces)))
    assert type(parts) is shm.Parts and len(parts) == 3 * 64 * 1024 + 4 and parts == b"".join(pieces)
    shared = writer.put(parts)
    assert shared is not None and len(shared) == len(parts)
    (event,) = _through([ev.Body(5, shared, True)], reader)  # type: ignore[arg-type]
    assert bytes(event.body) == b"".join(pieces)
    (event,) = codec.decode(codec.encode([ev.Body(6, parts, False)]))  # type: ignore[arg-type]
    assert type(event) is ev.Body and event.body == b"".join(pieces) and not event.more_body
    # A piece the app may still change (a bytearray) is copied now, as before.
    mutable = shm.joinable([b"a", bytearray(b"b")], 2)
    assert type(mutable) is bytes and mutable == b"ab"


def test_a_response_start_with_its_body_in_a_slot(pair: tuple[shm.Writer, shm.Reader]) -> None:
    writer, reader = pair
    shared = writer.put(b"r" * 70_000)
    headers = ((b"content-type", b"application/octet-stream"),)
    (event,) = _through([ev.Response(3, 200, headers, shared, False, False)], reader)  # type: ignore[arg-type]
    assert type(event) is ev.Response and event.status == 200 and event.headers == headers
    assert bytes(event.body) == b"r" * 70_000


def test_put_declines_what_does_not_fit(pair: tuple[shm.Writer, shm.Reader]) -> None:
    writer, _ = pair
    assert writer.put(b"") is None
    assert writer.put(b"x" * (writer.slot_bytes + 1)) is None
    taken = [writer.put(b"x" * 1000) for _ in range(writer.slots)]
    assert all(s is not None for s in taken)
    assert sorted(s.slot for s in taken if s) == list(range(writer.slots))
    assert writer.put(b"x") is None  # all in use: the caller sends a frame instead


def test_release_of_a_slot_not_in_use_is_counted_and_ignored(pair: tuple[shm.Writer, shm.Reader]) -> None:
    writer, _ = pair
    shared = writer.put(b"a" * 10)
    assert shared is not None
    assert writer.release((shared.slot, shared.slot, 99, -1)) == 3  # one good, then never twice
    assert writer.free == writer.slots


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ((0, 0), "does not fit"),
        ((0, 256 * 1024 + 1), "does not fit"),
        ((4, 10), "does not exist"),
        ((-1, 10), "does not exist"),
    ],
)
def test_a_bad_slot_reference_is_one_invalid_event(
    pair: tuple[shm.Writer, shm.Reader], payload: tuple[int, int], reason: str
) -> None:
    _, reader = pair
    raw = codec.pack_value([[int(ev.Kind.BODY), 1, list(payload), True], [int(ev.Kind.CREDIT), 1, 5]])
    bad, credit = codec.decode([raw], shared=reader)
    assert type(bad) is ev.Invalid and reason in bad.reason
    assert credit == ev.Credit(1, 5)
    assert reader.held == 0


def test_a_slot_still_held_cannot_be_used_again(pair: tuple[shm.Writer, shm.Reader]) -> None:
    _, reader = pair
    raw = codec.pack_value([[int(ev.Kind.BODY), 1, [2, 10], True]])
    (first,) = codec.decode([raw], shared=reader)
    (second,) = codec.decode([raw], shared=reader)  # a confused worker: the same slot again
    assert type(first) is ev.Body and type(second) is ev.Invalid and "still in use" in second.reason


def test_shared_payloads_need_an_agreed_segment_and_a_body_kind(pair: tuple[shm.Writer, shm.Reader]) -> None:
    _, reader = pair
    raw = codec.pack_value([[int(ev.Kind.BODY), 1, [0, 10], True]])
    (event,) = codec.decode([raw])
    assert type(event) is ev.Invalid and "shm-body" in event.reason
    raw = codec.pack_value([[int(ev.Kind.WS_MESSAGE), 1, True, [0, 10]]])
    (event,) = codec.decode([raw], shared=reader)
    assert type(event) is ev.Invalid and "BODY and RESPONSE" in event.reason


def test_reader_open_refuses_anything_but_an_offered_segment(tmp_path: Path) -> None:
    writer = shm.Writer.create(slots=2, slot_bytes=4096)
    assert writer is not None
    offer = writer.offer
    for info in (
        None, "x", {}, {**offer, "slots": "2"}, {**offer, "slots": 0}, {**offer, "slot_bytes": 2**40},
        {**offer, "path": str(tmp_path / "zasgi-x")},  # not in /dev/shm
        {**offer, "path": "/dev/shm/other"},  # not one of ours
        {**offer, "path": offer["path"] + "-gone"},  # no such file: another host's
        {**offer, "slots": 3},  # the size disagrees
    ):  # fmt: skip
        assert shm.Reader.open(info) is None, info
    assert os.path.exists(offer["path"])
    reader = shm.Reader.open(offer)
    assert reader is not None
    assert not os.path.exists(offer["path"])  # mapped: unlinked at once
    assert shm.Reader.open(offer) is None  # and nobody else maps it after us
    writer.close()


def test_create_where_there_is_no_shared_memory_is_none(tmp_path: Path) -> None:
    assert shm.Writer.create(directory=str(tmp_path / "missing")) is None


def test_sweep_unlinks_the_segments_of_one_pid_only(tmp_path: Path) -> None:
    writer = shm.Writer.create(directory=str(tmp_path))
    assert writer is not None and writer.path.startswith(str(tmp_path / shm.prefix(os.getpid())))
    stranger = tmp_path / f"{shm.prefix(os.getpid() + 1)}00"
    stranger.write_bytes(b"")
    assert shm.sweep(os.getpid(), str(tmp_path)) == 1
    assert list(tmp_path.iterdir()) == [stranger]
    assert shm.sweep(os.getpid(), str(tmp_path / "absent")) == 0
    writer.close()


def test_close_unlinks_and_a_closed_reader_stays_silent(pair: tuple[shm.Writer, shm.Reader]) -> None:
    writer, reader = pair
    calls: list[int] = []
    reader.on_freed = lambda: calls.append(1)
    (event,) = _through([ev.Body(1, writer.put(b"z" * 5000), False)], reader)  # type: ignore[arg-type]
    reader.close()  # the worker was lost
    writer.close()
    assert bytes(event.body) == b"z" * 5000  # the mapping lives while a view does
    del event
    assert reader.held == 0 and reader.freed == [] and calls == []
    assert not os.path.exists(writer.path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "drop", "free"]), st.integers(0, 7)), max_size=60))
def test_no_slot_is_ever_handed_out_while_the_reader_holds_it(ops: list[tuple[str, int]]) -> None:
    writer = shm.Writer.create(slots=3, slot_bytes=4096)
    assert writer is not None
    reader = shm.Reader.open(writer.offer)
    assert reader is not None
    views: list[Any] = []
    try:
        for op, i in ops:
            if op == "put":
                shared = writer.put(bytes([i]) * 100)
                if shared is not None:
                    (event,) = _through([ev.Body(1, shared, True)], reader)  # type: ignore[arg-type]
                    assert type(event) is ev.Body, event  # never "still in use"
                    views.append((event.body, i))
            elif op == "drop" and views:
                views.pop(i % len(views))
            elif op == "free":
                writer.release(reader.take_freed())
            for view, byte in views:  # what the front end still writes is what was put
                assert bytes(view) == bytes([byte]) * 100
    finally:
        views.clear()
        reader.close()
        writer.close()


# ------------------------------------------------------------------ through a real channel


async def _until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_channels_move_bodies_through_slots_and_free_them(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    got: list[Any] = []
    freed: list[tuple[int, ...]] = []
    router_sock = ctx.socket(zmq.ROUTER)
    configure_router(router_sock)
    router_sock.bind(f"ipc://{tmp_path}/s.sock")
    ignore = lambda *args: None  # noqa: E731
    router = Channel(router_sock, routed=True, on_events=lambda peer, events: got.extend(events),
                     on_bad_message=ignore, payload_views=True)  # fmt: skip
    writer = shm.Writer.create(slots=2, slot_bytes=1024 * 1024)
    assert writer is not None

    def on_dealer_events(peer: Any, events: list[Any]) -> None:  # as the worker's connection does
        for event in events:
            if type(event) is ev.Freed:
                freed.append(event.slots)
                assert writer.release(event.slots) == 0

    dealer_sock = ctx.socket(zmq.DEALER)
    configure_dealer(dealer_sock, routing_id=b"w1")
    dealer_sock.connect(f"ipc://{tmp_path}/s.sock")
    dealer = Channel(dealer_sock, routed=False, on_bad_message=ignore, on_events=on_dealer_events)
    reader = shm.Reader.open(writer.offer)
    assert reader is not None
    router.share_reader(b"w1", reader)
    dealer.share_writer(None, writer)
    try:
        bodies = [os.urandom(300_000), os.urandom(400_000), os.urandom(500_000), b"small"]
        for i, body in enumerate(bodies):
            dealer.post(ev.Body(1, body, i < len(bodies) - 1))
        await _until(lambda: len(got) == len(bodies))
        assert [bytes(e.body) for e in got] == bodies
        assert writer.free == 0  # two slots used, the third large body went in a frame
        assert reader.held == 2
        got.clear()  # the front end wrote them: the views die, FREED goes back
        await _until(lambda: writer.free == 2)
        assert sorted(s for batch in freed for s in batch) == [0, 1]
        router.unshare(b"w1")
        assert reader.closed
    finally:
        router.close()
        dealer.close()
        writer.close()
        ctx.destroy(linger=0)


def test_a_segment_not_granted_is_used_only_after_freed_and_copies_for_the_app() -> None:
    """The front end's segment for request bodies (SHARE): no slot until the worker has mapped it
    and FREED them; the worker's reader hands the app bytes and frees the slot at once."""
    writer = shm.Writer.create(slots=4, slot_bytes=64 * 1024, min_bytes=shm.UPLOAD_MIN_BYTES, granted=False)
    assert writer is not None
    assert writer.put(b"u" * 20_000) is None  # not granted yet: frames
    reader = shm.Reader.open(writer.offer, copy=True)
    assert reader is not None
    calls: list[int] = []
    reader.on_freed = lambda: calls.append(1)
    assert writer.release(tuple(range(reader.slots))) == 0  # the worker's first FREED
    data = os.urandom(64 * 1024)
    shared = writer.put(data)
    assert shared is not None
    (event,) = _through([ev.Body(9, shared, True)], reader)  # type: ignore[arg-type]
    assert type(event.body) is bytes and event.body == data
    assert reader.held == 0 and reader.take_freed() == (shared.slot,) and calls == [1]
    reader.close()
    writer.close()
