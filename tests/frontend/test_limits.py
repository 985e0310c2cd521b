"""Front-end limits and request-smuggling defences, byte by byte: an in-process front end,
a ScriptedWorker (so "the app never saw it" is checkable), raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from typing import Any

import click
import pytest

from frontend import config as cfg
from frontend.cli import build_config, command
from wire import events as ev

from .rawhttp import RawConn, header, status_of

pytestmark = pytest.mark.timeout(60)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: x\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
NEVER_S = 0.1  # how long "the worker never got a REQUEST" is watched (serves() checks again)


def limits(**kw: Any) -> cfg.HttpLimits:
    return replace(cfg.HttpLimits(), **kw)


async def answered(conn: RawConn) -> tuple[int, bytes, bytes]:
    """(status, head, body) of a response that must end with the connection closed."""
    data = await conn.read_to_close()
    conn.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return status_of(head), head, body


async def serves(fe: Any, w: Any) -> None:
    """The front end still answers a normal request."""
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    req = await w.request()
    assert req.raw_path == b"/ok"  # not a rejected request reaching the worker late
    w.respond(req.stream_id, 200, ((b"content-length", b"2"),), b"ok")
    head = await conn.read_head()
    assert status_of(head) == 200 and await conn.read_exactly(2) == b"ok"
    conn.close()


async def never_dispatched(w: Any) -> None:
    with pytest.raises(TimeoutError):
        await w.expect(ev.Request, ev.WsConnect, timeout=NEVER_S)


# ------------------------------------------------------------------ malformed heads and smuggling

SMUGGLING = {
    "cl-and-te": POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate-cl": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "duplicate-cl-same": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-list": POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-plus": POST + b"Content-Length: +5\r\n\r\nhello",
    "cl-negative": POST + b"Content-Length: -5\r\n\r\nhello",
    "cl-hex": POST + b"Content-Length: 0x5\r\n\r\nhello",
    "cl-overflow": POST + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "obs-fold-te": POST + b"Transfer-Encoding: gzip,\r\n chunked\r\n\r\n0\r\n\r\n",
    "te-chunked-not-last": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te-unknown": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-space-before-colon": POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-twice": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-in-http10": b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk-size-not-hex": CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-0x": CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED + b"ffffffffffffffffffff\r\nx\r\n",
    "chunk-size-space": CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n",
    "chunk-data-too-long": CHUNKED + b"5\r\nhelloXX0\r\n\r\n",
    "chunk-bare-lf": CHUNKED + b"5\nhello\n0\n\n",
}
MALFORMED = {
    "bare-lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare-cr": b"GET / HTTP/1.1\rHost: x\r\n\r\n",
    "bad-method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "http-0.9": b"GET /\r\nHost: x\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "ctl-in-target": b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n",
    "empty-name": b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "tls-on-plain-port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,
}


@pytest.mark.parametrize("raw", list(SMUGGLING.values()) + list(MALFORMED.values()),
                         ids=list(SMUGGLING) + list(MALFORMED))  # fmt: skip
async def test_bad_request_is_400_closed_and_never_reaches_the_app(
    start_frontend: Any, worker_for: Any, raw: bytes
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(raw + GET)  # a smuggled request behind it must not be served either
    status, head, body = await answered(conn)
    assert status == 400
    assert header(head, b"connection") == [b"close"]
    assert body == b"400 Bad Request\n"  # nothing of the input echoed
    await never_dispatched(w)
    await serves(fe, w)


async def test_bad_chunk_after_dispatch_is_400_and_closed(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(CHUNKED + b"5\r\nhello\r\n")
    req = await w.request()  # the body streams: the head was dispatched
    await conn.send(b"zz\r\n" + GET)
    reset = await w.expect(ev.Reset, ev.Body)
    while type(reset) is ev.Body:
        reset = await w.expect(ev.Reset, ev.Body)
    assert reset.stream_id == req.stream_id
    status, head, _ = await answered(conn)
    assert status == 400 and header(head, b"connection") == [b"close"]
    await never_dispatched(w)


# ------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"a" * 2000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(20)) + b"\r\n", 431),
    ],
    ids=["request-line", "header-field", "header-count"],
)
async def test_oversize_head(start_frontend: Any, worker_for: Any, raw: bytes, status: int) -> None:
    fe = await start_frontend(http=limits(max_line_bytes=1000, max_field_bytes=1000, max_headers=10))
    w = await worker_for(fe)
    for chunks in ([raw], [raw[:500], raw[500:1500], raw[1500:]]):  # in one read or in several
        conn = await RawConn.open(fe.port)
        for chunk in chunks:
            await conn.send(chunk)
            await asyncio.sleep(0.01)
        got, head, _ = await answered(conn)
        assert got == status and header(head, b"connection") == [b"close"]
    await never_dispatched(w)
    await serves(fe, w)


async def test_content_length_over_the_limit_is_413_before_dispatch(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend(http=limits(max_body_bytes=1000))
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(POST + b"Content-Length: 1001\r\n\r\n" + b"a" * 1001)
    status, head, _ = await answered(conn)
    assert status == 413 and header(head, b"connection") == [b"close"]
    await never_dispatched(w)
    await serves(fe, w)


async def test_chunked_body_growing_past_the_limit_is_413(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(http=limits(max_body_bytes=1000))
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(CHUNKED + b"258\r\n" + b"a" * 600 + b"\r\n")
    req = await w.request()
    await conn.send(b"258\r\n" + b"b" * 600 + b"\r\n")  # 1200 bytes: over
    event = await w.expect(ev.Reset, ev.Body)
    while type(event) is ev.Body:
        event = await w.expect(ev.Reset, ev.Body)
    assert event.stream_id == req.stream_id  # the app learns its request is gone
    head = await conn.read_head()
    assert status_of(head) == 413 and header(head, b"connection") == [b"close"]
    # aiohttp drains what the client still sends for a while (a close with unread data would
    # reset the connection and could destroy the 413 before the client reads it), then closes.
    await conn.send(b"0\r\n\r\n")
    await conn.read_to_close()
    await serves(fe, w)


# ------------------------------------------------------------------ time


async def test_slowloris_gets_408_and_others_are_served_meanwhile(
    start_frontend: Any, worker_for: Any
) -> None:
    fe = await start_frontend(http=limits(header_timeout_s=1.0, keepalive_timeout_s=0.3))
    w = await worker_for(fe)
    slow = await RawConn.open(fe.port)

    async def trickle() -> None:  # a byte every 50 ms: the head would take 1.25 s
        with contextlib.suppress(ConnectionError):
            for byte in GET[:-2]:
                await slow.send(bytes([byte]))
                await asyncio.sleep(0.05)

    started = time.monotonic()
    sender = asyncio.ensure_future(trickle())
    try:
        await serves(fe, w)
        await serves(fe, w)
        status, head, body = await answered(slow)
    finally:
        sender.cancel()
    elapsed = time.monotonic() - started
    assert status == 408 and header(head, b"connection") == [b"close"] and body == b"408 Request Timeout\n"
    assert 0.9 <= elapsed < 8  # the header timeout, not the (shorter) keep-alive timeout
    await never_dispatched(w)
    await serves(fe, w)


async def test_slow_head_on_a_keep_alive_connection_gets_408(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(http=limits(header_timeout_s=0.5))
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(GET)
    req = await w.request()
    w.respond(req.stream_id, 200, ((b"content-length", b"0"),))
    assert status_of(await conn.read_head()) == 200
    await conn.send(b"GET / HT")  # the second request's head stalls
    status, _, _ = await answered(conn)
    assert status == 408


async def test_long_request_is_not_cut_by_the_header_timeout(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(http=limits(header_timeout_s=0.3))
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(b"GET / HT")
    await asyncio.sleep(0.1)
    await conn.send(b"TP/1.1\r\nHost: x\r\n\r\n")
    req = await w.request()
    await asyncio.sleep(0.6)  # the app takes longer than the header timeout
    w.respond(req.stream_id, 200, ((b"content-length", b"2"),), b"ok")
    assert status_of(await conn.read_head()) == 200 and await conn.read_exactly(2) == b"ok"
    await conn.send(GET)  # still usable
    req = await w.request()
    w.respond(req.stream_id, 204)
    assert status_of(await conn.read_head()) == 204
    conn.close()


async def test_idle_keep_alive_is_closed_silently(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(http=limits(keepalive_timeout_s=0.3))
    w = await worker_for(fe)
    conn = await RawConn.open(fe.port)
    await conn.send(GET)
    req = await w.request()
    w.respond(req.stream_id, 204)
    assert status_of(await conn.read_head()) == 204
    started = time.monotonic()
    assert await conn.read_to_close() == b""  # idle: closed with no response
    assert time.monotonic() - started < 3
    idle = await RawConn.open(fe.port)  # a connection that never sends a byte
    assert await idle.read_to_close() == b""


# ------------------------------------------------------------------ connections


async def test_limit_concurrency_answers_503_beyond_it(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(http=limits(max_connections=2))
    w = await worker_for(fe)
    held = [await RawConn.open(fe.port) for _ in range(2)]
    for conn in held:
        await conn.send(GET)
        req = await w.request()
        w.respond(req.stream_id, 204)
        assert status_of(await conn.read_head()) == 204
    extra = await RawConn.open(fe.port)
    await extra.send(GET)
    status, head, _ = await answered(extra)
    assert (
        status == 503 and header(head, b"retry-after") == [b"1"] and header(head, b"connection") == [b"close"]
    )
    await never_dispatched(w)
    held.pop().close()
    deadline = time.monotonic() + 5  # the server sees the close a moment later
    while True:
        conn = await RawConn.open(fe.port)
        await conn.send(GET)
        try:
            req = await w.request(timeout=0.3)
            break
        except TimeoutError:
            assert status_of(await conn.read_head()) == 503 and time.monotonic() < deadline
            conn.close()
    w.respond(req.stream_id, 204)
    assert status_of(await conn.read_head()) == 204
    for c in (conn, *held):
        c.close()


# ------------------------------------------------------------------ options


def _config(args: list[str]) -> cfg.FrontendConfig:
    with command.make_context("frontend", args) as ctx:
        return build_config(ctx.params)


def test_limit_options_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(["--timeout-request-header", "2.5", "--limit-concurrency", "50"])
    assert (config.http.header_timeout_s, config.http.max_connections) == (2.5, 50)
    defaults = _config([])
    assert (defaults.http.header_timeout_s, defaults.http.max_connections) == (10.0, None)
    assert (defaults.proxy.enabled, defaults.proxy.trusted, defaults.tls.enabled) == (
        True,
        "127.0.0.1",
        False,
    )
    monkeypatch.setenv("ZASGI_LIMIT_CONCURRENCY", "7")
    monkeypatch.setenv("ZASGI_FORWARDED_ALLOW_IPS", "10.0.0.0/8,*")
    monkeypatch.setenv("ZASGI_PROXY_HEADERS", "false")
    config = _config([])
    assert config.http.max_connections == 7
    assert (config.proxy.enabled, config.proxy.trusted) == (False, "10.0.0.0/8,*")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--limit-concurrency", "0"], "0 is not in the range x>=1"),  # click, from the option table
        (["--timeout-request-header", "0"], "0.0 is not in the range x>0"),
        (["--forwarded-allow-ips", "10.0.0.0/33"], "forwarded-allow-ips"),
    ],
)
def test_bad_limit_options_are_usage_errors(args: list[str], needle: str) -> None:
    with pytest.raises(click.UsageError, match=needle):
        _config(args)
