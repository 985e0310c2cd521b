"""HttpCycle driven through its seams: feed() in, a list-collector emit out. No sockets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from appserver.cycle import ClientDisconnected
from wire import ProtocolViolation, RequestHalf, ResetCode, ResponseHalf
from wire import events as ev

from .helpers import CycleHarness, make_request, settle, until

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
HEADERS = ((b"content-type", b"text/plain"),)


def body(data: bytes = b"", more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def app_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "appserver.cycle" and r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- happy paths


async def test_get_is_one_coalesced_response_event() -> None:
    h = CycleHarness()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http" and scope["path"] == "/path" and scope["method"] == "GET"
        assert scope["headers"] == [(b"host", b"example.test")]
        assert await receive() == {"type": "http.request", "body": b"", "more_body": False}
        await send(START)
        await send(body(b"hello"))

    assert await h.run(app) == [ev.Response(1, 200, HEADERS, b"hello", False, False)]
    assert h.closed == [h.cycle]
    assert h.cycle.response_state is ResponseHalf.DONE


async def test_start_alone_leaves_on_the_next_tick_when_no_body_follows() -> None:
    h = CycleHarness()
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await gate.wait()  # e.g. SSE: headers must not wait for the first event
        await send(body(b"late"))

    h.start(app)
    await until(lambda: len(h.emitted) == 1)
    assert h.emitted == [ev.Response(1, 200, HEADERS, b"", True, False)]
    gate.set()
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert h.emitted[1] == ev.Body(1, b"late", False)


async def test_scope_state_is_a_shallow_copy_of_the_lifespan_state() -> None:
    state = {"db": object()}
    h = CycleHarness(state=state)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["state"] == state and scope["state"] is not state
        scope["state"]["per_request"] = 1
        await send(START)
        await send(body())

    await h.run(app)
    assert "per_request" not in state


async def test_large_body_is_split_into_64k_slices_without_copying() -> None:
    h = CycleHarness()
    data = bytes(range(256)) * 800  # 204800 bytes

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(data))

    emitted = await h.run(app)
    assert [len(e.body) for e in emitted] == [65536, 65536, 65536, 8192]
    assert [e.more_body for e in emitted] == [True, True, True, False]
    assert isinstance(emitted[1].body, memoryview) and emitted[1].body.obj is data
    assert b"".join(bytes(e.body) for e in emitted) == data


async def test_small_chunks_of_one_tick_leave_joined_up_to_64k() -> None:
    h = CycleHarness()
    piece = b"x" * 4096

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        for _ in range(20):  # 80 KiB in 4 KiB pieces, no await that yields in between
            await send(body(piece, more=True))
        await send(body(b"end"))

    emitted = await h.run(app)
    assert emitted == [
        ev.Response(1, 200, HEADERS, piece * 16, True, False),  # full at 64 KiB: out at once
        ev.Body(1, piece * 4 + b"end", False),  # the rest, with the final chunk
    ]


async def test_a_streamed_response_stays_streamed_even_when_sent_in_one_tick() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"0\n", more=True))  # e.g. a StreamingResponse over a list
        await send(body(b"1\n", more=True))
        await send(body())

    # more_body=True on the RESPONSE: the front end answers chunked, as it did chunk by chunk.
    assert await CycleHarness().run(app) == [
        ev.Response(1, 200, HEADERS, b"0\n1\n", True, False),
        ev.Body(1, b"", False),
    ]


async def test_a_held_chunk_leaves_on_the_next_tick_when_the_app_waits() -> None:
    h = CycleHarness()
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"event: 1\n\n", more=True))  # e.g. SSE: must not wait for the next event
        await gate.wait()
        await send(body(b"event: 2\n\n", more=True))
        await send(body())

    h.start(app)
    await until(lambda: len(h.emitted) == 1)
    assert h.emitted == [ev.Response(1, 200, HEADERS, b"event: 1\n\n", True, False)]
    gate.set()
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert h.emitted[1:] == [ev.Body(1, b"event: 2\n\n", False)]


async def test_full_size_chunks_are_never_copied_or_held() -> None:
    h = CycleHarness()
    chunk = b"y" * (64 * 1024)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"small", more=True))
        await send(body(chunk, more=True))
        await send(body(b""))

    emitted = await h.run(app)
    assert emitted == [
        ev.Response(1, 200, HEADERS, b"small", True, False),  # held, then pushed out by the full chunk
        ev.Body(1, chunk, True),
        ev.Body(1, b"", False),
    ]
    assert emitted[1].body is chunk


# ---------------------------------------------------------------- flow control


async def test_streaming_send_waits_for_credit_when_the_window_is_spent() -> None:
    h = CycleHarness(response_window_bytes=10)
    sent = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        for i in range(3):
            await send(body(b"12345678", more=True))
            sent.append(i)
        await send(body())

    h.start(app)
    await until(lambda: len(sent) == 2)
    await settle()
    # 10 -> 2 -> -6: the second chunk may overshoot (Rule 16), the third must wait.
    # The two sent in one tick left together, as soon as the app waited.
    assert sent == [0, 1] and h.emitted == [ev.Response(1, 200, HEADERS, b"12345678" * 2, True, False)]
    h.cycle.feed(ev.Credit(1, 16))
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert sent == [0, 1, 2]
    assert h.emitted[1:] == [ev.Body(1, b"12345678", False)]  # the last chunk took the empty final one along


async def test_request_body_across_request_and_body_returns_credit() -> None:
    h = CycleHarness(make_request(method="POST", body=b"a" * 600, more_body=True), request_window_bytes=1000)
    got: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message)
            if not message["more_body"]:
                break
        await send(START)
        await send(body(b"ok"))

    h.start(app)
    await until(lambda: len(got) == 1)
    assert got[0] == {"type": "http.request", "body": b"a" * 600, "more_body": True}
    assert h.of(ev.Credit) == [ev.Credit(1, 600)]  # over half the window: credited at once
    h.cycle.feed(ev.Body(1, b"b" * 100, True))
    await until(lambda: len(got) == 2)
    await settle()
    assert h.of(ev.Credit) == [ev.Credit(1, 600), ev.Credit(1, 100)]  # small: flushed when the app went idle
    h.cycle.feed(ev.Body(1, b"c" * 10, False))
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert got[2] == {"type": "http.request", "body": b"c" * 10, "more_body": False}
    assert len(h.of(ev.Credit)) == 2  # nothing owed for the last chunk
    assert h.cycle.request_state is RequestHalf.DONE


async def test_overrunning_the_request_window_is_a_protocol_violation() -> None:
    h = CycleHarness(make_request(body=b"x" * 100, more_body=True), request_window_bytes=100)
    with pytest.raises(ProtocolViolation):
        h.cycle.feed(ev.Body(1, b"x" * (64 * 1024 + 1), True))


async def test_expect_continue_grants_the_window_on_first_receive() -> None:
    h = CycleHarness(
        make_request(method="PUT", more_body=True, expect_continue=True), request_window_bytes=500
    )
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        message = await receive()
        await send(START)
        await send(body(message["body"]))

    h.start(app)
    await settle()
    assert h.emitted == []  # no credit until the app asks: the client sends nothing yet
    gate.set()
    await until(lambda: bool(h.emitted))
    assert h.emitted == [ev.Credit(1, 500)]
    h.cycle.feed(ev.Body(1, b"payload", False))
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert h.emitted[-1] == ev.Response(1, 200, HEADERS, b"payload", False, False)


async def test_unread_body_is_credited_and_discarded_after_the_response() -> None:
    h = CycleHarness(make_request(method="POST", body=b"a" * 100, more_body=True), request_window_bytes=1000)
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"answered early"))
        await done.wait()

    h.start(app)
    await until(lambda: bool(h.of(ev.Credit)))
    assert h.of(ev.Credit) == [ev.Credit(1, 100)]
    assert not h.closed  # the request half is still arriving
    h.cycle.feed(ev.Body(1, b"b" * 600, True))  # the app still runs: keep the body moving
    assert h.of(ev.Credit)[-1] == ev.Credit(1, 600)
    done.set()
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    # §6.1: the app finished without reading the rest: RESET closes the request half.
    assert h.emitted[-1] == ev.Reset(1, ResetCode.CANCELLED, "app finished without reading the body")
    assert h.closed == [h.cycle]
    assert h.cycle.response_state is ResponseHalf.DONE


async def test_body_finishing_before_the_app_returns_closes_without_reset() -> None:
    h = CycleHarness(make_request(method="POST", body=b"a" * 100, more_body=True), request_window_bytes=1000)
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"answered early"))
        await done.wait()

    h.start(app)
    await until(lambda: bool(h.of(ev.Credit)))
    h.cycle.feed(ev.Body(1, b"", False))
    assert h.closed == [h.cycle]
    done.set()
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert h.of(ev.Reset) == []


# ---------------------------------------------------------------- disconnects


async def test_disconnect_wakes_receive_and_send_raises_client_disconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = CycleHarness()
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())  # request done, response not: blocks until disconnect
        await send(START)

    h.start(app)
    await until(lambda: len(seen) == 1)
    await settle()
    assert len(seen) == 1
    h.cycle.feed(ev.Disconnect(1))
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert seen[1] == {"type": "http.disconnect"}
    assert h.emitted == [ev.Reset(1, ResetCode.CANCELLED, "client went away")]
    assert app_errors(caplog) == []
    assert h.closed == [h.cycle]


async def test_disconnect_while_waiting_for_credit_raises_in_send() -> None:
    h = CycleHarness(response_window_bytes=1)
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"ab", more=True))
        try:
            await send(body(b"cd", more=True))
        except ClientDisconnected as exc:
            raised.append(exc)
            raise

    h.start(app)
    await until(lambda: len(h.emitted) == 1)
    h.cycle.feed(ev.Disconnect(1))
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert len(raised) == 1 and isinstance(raised[0], OSError)
    assert h.emitted[-1].code == ResetCode.CANCELLED


async def test_reset_from_the_front_end_fails_the_stream() -> None:
    h = CycleHarness()
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        seen.append(await receive())
        with pytest.raises(ClientDisconnected):
            await send(START)

    h.start(app)
    await until(lambda: h.task is not None)
    await settle()
    h.cycle.feed(ev.Reset(1, ResetCode.CANCELLED, "client timeout"))
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert seen == [{"type": "http.disconnect"}]
    assert h.emitted == []  # the front end reset it: nothing to say back
    assert h.closed == [h.cycle]


# ---------------------------------------------------------------- misuse matrix


async def test_exception_before_start_resets_with_app_error(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    emitted = await CycleHarness().run(app)
    assert emitted == [ev.Reset(1, ResetCode.APP_ERROR, "app raised ValueError")]
    errors = app_errors(caplog)
    assert len(errors) == 1 and errors[0].exc_info is not None


async def test_exception_after_start_resets_instead_of_truncating(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"part", more=True))
        raise ValueError("boom")

    emitted = await CycleHarness().run(app)
    assert emitted[0] == ev.Response(1, 200, HEADERS, b"part", True, False)
    assert emitted[1] == ev.Reset(1, ResetCode.APP_ERROR, "app raised ValueError")
    assert len(app_errors(caplog)) == 1


async def test_start_then_exception_in_the_same_tick_is_a_clean_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        raise ValueError("boom")

    emitted = await CycleHarness().run(app)
    assert emitted == [ev.Reset(1, ResetCode.APP_ERROR, "app raised ValueError")]


async def test_return_without_start(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    emitted = await CycleHarness().run(app)
    assert emitted == [ev.Reset(1, ResetCode.APP_ERROR, "ASGI app returned without starting a response")]
    assert len(app_errors(caplog)) == 1


async def test_return_with_partial_body(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(body(b"part", more=True))

    emitted = await CycleHarness().run(app)
    assert emitted[-1] == ev.Reset(
        1, ResetCode.APP_ERROR, "ASGI app returned without completing the response"
    )
    assert len(app_errors(caplog)) == 1


@pytest.mark.parametrize(
    "messages, error",
    [
        ([START, START], "sent twice"),
        ([body(b"x")], "before http.response.start"),
        ([START, body(b"x"), body(b"y")], "after the response body completed"),
        ([START, body(b"x"), START], "sent twice"),
        ([{"type": "http.response.start", "status": 42}], "status must be an int"),
        ([{"type": "http.response.start", "status": "200"}], "status must be an int"),
        ([{"type": "http.response.start", "status": 200, "headers": [("a", "b")]}], "(bytes, bytes) pairs"),
        ([{"type": "http.response.start", "status": 200, "headers": [(b"a",)]}], "(bytes, bytes) pairs"),
        ([START, {"type": "http.response.trailers", "headers": []}], "trailers=True"),
        ([{"type": "websocket.accept"}], "unexpected ASGI message type"),
    ],
    ids=[
        "double-start",
        "body-before-start",
        "send-after-completion",
        "start-after-completion",
        "status-out-of-range",
        "status-not-int",
        "str-headers",
        "bad-header-pair",
        "trailers-not-announced",
        "wrong-protocol",
    ],  # fmt: skip
)
async def test_illegal_sends_raise_runtime_error_in_the_app(
    messages: list[dict[str, Any]], error: str
) -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            for message in messages:
                await send(message)
        except RuntimeError as exc:
            raised.append(exc)

    await CycleHarness().run(app)
    assert len(raised) == 1 and error in str(raised[0])


async def test_bad_status_uncaught_becomes_a_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 1000})

    emitted = await CycleHarness().run(app)
    assert emitted == [ev.Reset(1, ResetCode.APP_ERROR, "app raised RuntimeError")]


async def test_client_disconnected_escaping_the_app_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = CycleHarness()
    h.cycle.feed(ev.Disconnect(1))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)

    await h.run(app)
    assert app_errors(caplog) == []


async def test_log_records_carry_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    await CycleHarness(make_request(request_id="abc-123")).run(app)
    (record,) = app_errors(caplog)
    assert record.request_id == "abc-123"  # type: ignore[attr-defined]
    assert "abc-123" in record.getMessage()


# ---------------------------------------------------------------- extensions


async def test_trailers() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "http.response.trailers" in scope["extensions"]
        await send({**START, "trailers": True})
        await send(body(b"data"))
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})

    h = CycleHarness()
    emitted = await h.run(app)
    assert emitted == [
        ev.Response(1, 200, HEADERS, b"data", False, True),
        ev.Trailers(1, ((b"x-checksum", b"abc"),), False),
    ]
    assert h.closed == [h.cycle]


async def test_trailers_extension_hidden_when_the_front_end_did_not_accept_it() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "http.response.trailers" not in scope["extensions"]
        with pytest.raises(RuntimeError, match="does not support"):
            await send({**START, "trailers": True})
        await send(START)
        await send(body())

    await CycleHarness(trailers=False).run(app)


async def test_pathsend_with_the_feature_sends_pathsend(tmp_path: Any) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 10)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        await send(START)
        await send({"type": "http.response.pathsend", "path": str(path)})

    emitted = await CycleHarness(pathsend=True).run(app)
    assert emitted == [ev.Response(1, 200, HEADERS, b"", True, False), ev.Pathsend(1, str(path))]


async def test_pathsend_without_the_feature_streams_the_file_under_credit(tmp_path: Any) -> None:
    data = bytes(range(256)) * 600  # 153600 bytes: three chunks
    path = tmp_path / "file.bin"
    path.write_bytes(data)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send({"type": "http.response.pathsend", "path": str(path)})

    def sent() -> int:
        return sum(len(e.body) for e in h.emitted)

    h = CycleHarness(pathsend=False, response_window_bytes=70000)
    h.start(app)
    await until(lambda: sent() == 2 * 65536)  # 64 KiB + 64 KiB: the window is spent
    await settle()
    assert sent() == 2 * 65536
    h.cycle.feed(ev.Credit(1, 1 << 20))
    await asyncio.wait_for(h.task, 5)  # type: ignore[arg-type]
    assert type(h.emitted[0]) is ev.Response and h.emitted[-1].more_body is False
    assert b"".join(bytes(e.body) for e in h.emitted) == data
    assert h.cycle.response_state is ResponseHalf.DONE


async def test_pathsend_needs_an_absolute_path() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        with pytest.raises(RuntimeError, match="absolute"):
            await send({"type": "http.response.pathsend", "path": "relative.txt"})
        await send(body())

    await CycleHarness(pathsend=True).run(app)


# ---------------------------------------------------------------- peer misbehaviour


async def test_body_after_the_request_ended_is_a_protocol_violation() -> None:
    h = CycleHarness()
    with pytest.raises(ProtocolViolation):
        h.cycle.feed(ev.Body(1, b"x", False))


async def test_cancelled_stream_is_reset_with_cancelled() -> None:
    h = CycleHarness()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()

    task = h.start(app)
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.emitted == [ev.Reset(1, ResetCode.CANCELLED, "worker stopped the request")]
