"""HTTP/2 through the front end: an in-process front end, a ScriptedWorker, httpx and raw h2 clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest
from h2 import events as h2e
from h2.errors import ErrorCodes

from frontend import config as cfg
from wire import events as ev
from wire.events import ResetCode

from .rawh2 import RawH2, h2_setup

pytestmark = pytest.mark.timeout(30)


ANSWER_TIMEOUT_S = 15.0


def h2c_client() -> httpx.AsyncClient:
    """httpx speaking HTTP/2 with prior knowledge on cleartext (h2c)."""
    return httpx.AsyncClient(http1=False, http2=True)


async def answered(pending: Awaitable[Any]) -> Any:
    """An httpx request's answer, bounded: over HTTP/2, httpx's own timeouts do not always end a
    request whose connection broke (a stream can wait on after its connection's ReadError)."""
    return await asyncio.wait_for(pending, ANSWER_TIMEOUT_S)


async def test_get_over_h2c_is_a_wire_stream_with_version_2(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(root_path="/mnt")
    w = await worker_for(fe)
    async with h2c_client() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/a%20b?x=1", headers={"X-Foo": "Bar"}))
        req = await w.request()
        assert (req.method, req.http_version, req.scheme) == ("GET", "2", "http")
        assert (req.raw_path, req.query_string, req.root_path) == (b"/a%20b", b"x=1", "/mnt")
        assert (b"x-foo", b"Bar") in req.headers and (b"host", f"127.0.0.1:{fe.port}".encode()) in req.headers
        assert not req.more_body and req.ext["request_id"]
        w.respond(req.stream_id, 201, ((b"X-A", b"1"), (b"x-a", b"2"), (b"Connection", b"close")), b"hi")
        resp = await answered(pending)
    assert resp.http_version == "HTTP/2"
    assert (resp.status_code, resp.content) == (201, b"hi")
    assert resp.headers.get_list("x-a") == ["1", "2"] and "connection" not in resp.headers


async def test_post_body_and_streamed_response(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, window_bytes=64 * 1024)
    body = bytes(range(256)) * 2048  # 512 KiB: more than the worker's window and the stream's
    async with h2c_client() as client:
        pending = asyncio.ensure_future(client.post(fe.url + "/up", content=body))
        req = await w.request()
        got = bytearray(req.body)
        more = req.more_body
        while more:
            w.send(ev.Credit(req.stream_id, len(got)))  # consumed: the front end may send more
            piece = await w.expect(ev.Body)
            got += piece.body
            more = piece.more_body
            if more:
                w.send(ev.Credit(req.stream_id, len(piece.body)))
        assert bytes(got) == body
        w.respond(req.stream_id, 200, ((b"content-type", b"text/plain"),), b"a", more_body=True)
        for chunk in (b"b" * 70000, b"c"):
            w.send(ev.Body(req.stream_id, chunk, True))
        w.send(ev.Body(req.stream_id, b"", False))
        resp = await answered(pending)
    assert resp.content == b"a" + b"b" * 70000 + b"c"


async def test_many_concurrent_streams_on_one_connection(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, capacity=64)
    async with h2c_client() as client:
        pending = [asyncio.ensure_future(client.get(fe.url + f"/{i}")) for i in range(50)]
        for _ in range(50):
            req = await w.request()
            w.respond(req.stream_id, 200, (), req.raw_path)
        responses = await answered(asyncio.gather(*pending))
    assert sorted(r.content for r in responses) == sorted(f"/{i}".encode() for i in range(50))
    assert {r.http_version for r in responses} == {"HTTP/2"}


async def test_trailers_reach_the_client(start_frontend: Any, worker_for: Any) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for)
    sid = await raw.get("/t")
    req = await w.request()
    w.respond(req.stream_id, 200, (), b"body", more_body=False, trailers=True)
    w.send(ev.Trailers(req.stream_id, ((b"x-sum", b"1"),), True))
    w.send(ev.Trailers(req.stream_id, ((b"x-sum2", b"2"),), False))
    await raw.until(lambda events: raw.of(h2e.StreamEnded, sid))
    [trailers] = raw.of(h2e.TrailersReceived, sid)
    assert trailers.headers == [(b"x-sum", b"1"), (b"x-sum2", b"2")]


async def test_client_reset_is_a_disconnect_for_that_stream_only(
    start_frontend: Any, worker_for: Any
) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for)
    first, second = raw.request("/1"), raw.request("/2")
    await raw.flush()
    reqs = {(await w.request()).raw_path: None for _ in range(2)}
    assert set(reqs) == {b"/1", b"/2"}
    raw.conn.reset_stream(first, ErrorCodes.CANCEL)
    await raw.flush()
    disconnect = await w.expect(ev.Disconnect)
    w.respond(
        disconnect.stream_id + 1 if disconnect.stream_id % 2 else disconnect.stream_id - 1, 200, (), b"2"
    )
    await raw.until(lambda events: raw.of(h2e.StreamEnded, second))
    assert b"".join(e.data for e in raw.of(h2e.DataReceived, second)) == b"2"


async def test_a_stream_reset_while_queued_takes_no_slot(start_frontend: Any, worker_for: Any) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for, capacity=1)
    first = raw.request("/1")
    await raw.flush()
    req1 = await w.request()  # the only slot
    queued, last = raw.request("/2"), raw.request("/3")
    await raw.flush()
    await asyncio.sleep(0.1)  # (order only: both wait in the queue)
    raw.conn.reset_stream(queued, ErrorCodes.CANCEL)
    await raw.flush()
    await asyncio.sleep(0.1)  # (order only: the reset is seen before the slot frees)
    w.respond(req1.stream_id, 200, (), b"1")
    req3 = await w.request()  # the slot goes to /3, never to the stream reset
    assert req3.raw_path == b"/3"
    w.respond(req3.stream_id, 200, (), b"3")
    await raw.until(lambda events: raw.of(h2e.StreamEnded, last))
    assert b"".join(e.data for e in raw.of(h2e.DataReceived, first)) == b"1"


async def test_worker_reset_before_and_after_the_response(start_frontend: Any, worker_for: Any) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for)
    before, after = raw.request("/before"), raw.request("/after")
    await raw.flush()
    ids = {}
    for _ in range(2):
        req = await w.request()
        ids[req.raw_path] = req.stream_id
    w.send(ev.Reset(ids[b"/before"], ResetCode.APP_ERROR, "boom"))
    w.respond(ids[b"/after"], 200, (), b"start", more_body=True)
    w.send(ev.Reset(ids[b"/after"], ResetCode.APP_ERROR, "boom later"))
    await raw.until(lambda events: raw.of(h2e.StreamEnded, before) and raw.of(h2e.StreamReset, after))
    assert dict(raw.of(h2e.ResponseReceived, before)[0].headers)[b":status"] == b"500"
    assert raw.of(h2e.StreamReset, after)[0].error_code == ErrorCodes.INTERNAL_ERROR


async def test_no_worker_is_503_on_that_stream(start_frontend: Any) -> None:
    fe = await start_frontend(queue=cfg.Queue(size=10, timeout_s=0.3, no_worker_grace_s=0.1))
    async with h2c_client() as client:
        resp = await client.get(fe.url + "/")
    assert resp.status_code == 503 and resp.headers["retry-after"]


async def test_http1_still_served_beside_h2c(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    async with httpx.AsyncClient() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/one"))
        req = await w.request()
        assert req.http_version == "1.1"
        w.respond(req.stream_id, 200, (), b"ok")
        assert (await answered(pending)).http_version == "HTTP/1.1"


async def test_no_http2_means_the_preface_is_a_bad_request(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend(http2=None)
    await worker_for(fe)
    reader, writer = await asyncio.open_connection("127.0.0.1", fe.port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    head = await asyncio.wait_for(reader.read(100), 5)
    assert head.startswith(b"HTTP/1.1 4")
    writer.close()


async def test_graceful_shutdown_sends_goaway_and_finishes_the_stream(
    start_frontend: Any, worker_for: Any
) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for)
    sid = await raw.get("/slow")
    req = await w.request()
    fe.shutdown.set()
    await asyncio.sleep(0.2)
    w.respond(req.stream_id, 200, (), b"finished")
    data = b""
    async with asyncio.timeout(10):
        while chunk := await raw.reader.read(65536):
            data += chunk
    assert b"finished" in data  # the stream in flight completed
    from hyperframe.frame import Frame, GoAwayFrame

    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].last_stream_id == sid and goaways[0].error_code == 0


@pytest.fixture
def tls_files(tmp_path: Any) -> tuple[Any, str]:
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert = tmp_path / "cert.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    return ca, str(cert)


async def test_tls_alpn_negotiates_h2_and_http1(start_frontend: Any, worker_for: Any, tls_files: Any) -> None:
    import ssl

    ca, cert = tls_files
    fe = await start_frontend(tls=cfg.Tls(certfile=cert))
    w = await worker_for(fe)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
        async with httpx.AsyncClient(http2=http2, verify=ctx) as client:
            pending = asyncio.ensure_future(client.get(fe.url + "/tls"))
            req = await w.request()
            assert req.scheme == "https" and req.http_version == ("2" if http2 else "1.1")
            assert req.ext["tls"]["tls_version"] in (0x0303, 0x0304)
            w.respond(req.stream_id, 200, (), b"secure")
            resp = await answered(pending)
        assert (resp.http_version, resp.content) == (version, b"secure")


async def test_tls_without_http2_offers_only_http1(
    start_frontend: Any, worker_for: Any, tls_files: Any
) -> None:
    import ssl

    ca, cert = tls_files
    fe = await start_frontend(tls=cfg.Tls(certfile=cert), http2=None)
    w = await worker_for(fe)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with httpx.AsyncClient(http2=True, verify=ctx) as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/tls"))
        req = await w.request()
        w.respond(req.stream_id, 200, (), b"ok")
        assert (await answered(pending)).http_version == "HTTP/1.1"


async def _served(fe: Any, w: Any) -> None:
    """Another client is still served."""
    async with h2c_client() as client:
        pending = asyncio.ensure_future(client.get(fe.url + "/other"))
        req = await w.request()
        for _ in range(1000):  # (streams of the cut connection may still arrive)
            if req.raw_path == b"/other":
                break
            req = await w.request()
        w.respond(req.stream_id, 200, (), b"fine")
        assert (await answered(pending)).content == b"fine"


def _goaway(raw: RawH2) -> int | None:
    ended = raw.of(h2e.ConnectionTerminated)
    return int(ended[0].error_code) if ended else None


async def test_rapid_reset_flood_cuts_that_connection_only(start_frontend: Any, worker_for: Any) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for, capacity=64)
    for _ in range(1000):  # CVE-2023-44487: open, reset, at once, over and over
        sid = raw.request("/r")
        raw.conn.reset_stream(sid, ErrorCodes.CANCEL)
    await raw.flush()
    await raw.until(lambda events: _goaway(raw) is not None)
    assert _goaway(raw) == ErrorCodes.ENHANCE_YOUR_CALM
    await raw.until(lambda events: False, timeout=5)  # then the server closes the connection
    assert raw.closed
    await asyncio.sleep(0.2)
    dispatched = sum(type(e) is ev.Request for e in w.received)
    assert dispatched <= 200  # the reset budget's burst at most reached a worker
    print(f"rapid reset: {dispatched} of 1000 streams reached the worker before the GOAWAY")
    await _served(fe, w)


async def test_ping_flood_cuts_that_connection_only(start_frontend: Any, worker_for: Any) -> None:
    from hyperframe.frame import PingFrame

    fe, w, raw = await h2_setup(start_frontend, worker_for)
    raw.send_raw(b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(2000)))
    await raw.until(lambda events: _goaway(raw) is not None)
    assert _goaway(raw) == ErrorCodes.ENHANCE_YOUR_CALM
    await _served(fe, w)


async def test_header_list_over_the_limit_cuts_the_connection(start_frontend: Any, worker_for: Any) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for)
    headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
    headers += [(f"x-h{i}", "v" * 1000) for i in range(100)]  # ~100 KiB decoded, over 64 KiB
    raw.conn.send_headers(1, headers, end_stream=True)
    await raw.flush()
    await raw.until(lambda events: _goaway(raw) is not None)
    assert _goaway(raw) == ErrorCodes.ENHANCE_YOUR_CALM
    await _served(fe, w)


async def test_metrics_count_http2_connections_streams_and_cuts(start_frontend: Any, worker_for: Any) -> None:

    from prometheus_client.parser import text_string_to_metric_families

    fe = await start_frontend(admin=cfg.Admin(port=0))
    w = await worker_for(fe)
    await _served(fe, w)  # one connection, one stream
    raw = await RawH2.open(fe.port)
    for _ in range(300):
        raw.conn.reset_stream(raw.request("/r"), ErrorCodes.CANCEL)
    await raw.flush()
    await raw.until(lambda events: _goaway(raw) is not None)
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{fe.admin}/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("zasgi_http2_connections_total", ())] == 2
    assert samples[("zasgi_http2_streams_total", ())] >= 1
    assert samples[("zasgi_http2_goaway_total", (("code", "ENHANCE_YOUR_CALM"),))] == 1
    assert samples[("zasgi_http_requests_total", (("status", "200"),))] >= 1


async def test_zero_window_client_is_reset_after_the_stall_timeout(
    start_frontend: Any, worker_for: Any
) -> None:
    from h2.settings import SettingCodes

    from frontend.h2_session import H2Limits

    fe, w, raw = await h2_setup(start_frontend, worker_for, fe_kw={"http2": H2Limits(stall_timeout_s=1.0)})
    raw.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})  # slowloris for HTTP/2: never reads
    sid = await raw.get("/big")
    req = await w.request()
    w.respond(req.stream_id, 200, (), b"x" * 1000, more_body=True)
    disconnect = await w.expect(ev.Disconnect, timeout=10)  # the worker learns: that stream is over
    assert disconnect.stream_id == req.stream_id
    raw.conn.acknowledge_received_data = lambda *a: None  # (keep the window shut while reading)
    await raw.until(lambda events: raw.of(h2e.StreamReset, sid))
    assert raw.of(h2e.StreamReset, sid)[0].error_code == ErrorCodes.CANCEL
    await _served(fe, w)


async def test_stream_flood_beyond_the_queue_gets_503s(start_frontend: Any, worker_for: Any) -> None:
    fe, w, raw = await h2_setup(
        start_frontend, worker_for, fe_kw={"queue": cfg.Queue(size=5, timeout_s=5.0)}, capacity=2
    )
    sids = [raw.request(f"/{i}") for i in range(60)]
    await raw.flush()
    await raw.until(lambda events: len(raw.of(h2e.ResponseReceived)) >= 60 - 7)  # 2 served + 5 queued
    statuses = [dict(e.headers)[b":status"] for e in raw.of(h2e.ResponseReceived)]
    assert statuses.count(b"503") >= 60 - 7
    for _ in range(7):  # the admitted ones are still answered
        req = await w.request()
        w.respond(req.stream_id, 200, (), b"ok")
    await raw.until(lambda events: len(raw.of(h2e.StreamEnded)) == 60)
    assert len({e.stream_id for e in raw.of(h2e.StreamEnded)}) == len(sids)


def _flood(kind: str, raw: RawH2) -> bytes:
    from hpack import Encoder
    from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PriorityFrame, SettingsFrame

    block = Encoder().encode([(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/")])
    if kind == "settings":
        frames: list[Any] = [SettingsFrame(0, settings={4: 65535}) for _ in range(2000)]
    elif kind == "continuation":  # CVE-2024-27316: a header block that never ends
        frames = [HeadersFrame(1, block)] + [ContinuationFrame(1, b"") for _ in range(1000)]
    elif kind == "empty-data":  # CVE-2019-9518
        frames = [HeadersFrame(1, block, flags=["END_HEADERS"])] + [DataFrame(1, b"") for _ in range(1000)]
    elif kind == "priority":  # CVE-2019-9513 family
        frames = [PriorityFrame(1, depends_on=3, stream_weight=16) for _ in range(5000)]
    else:  # too many streams: past SETTINGS_MAX_CONCURRENT_STREAMS (100)
        frames = [HeadersFrame(2 * i + 1, block, flags=["END_HEADERS"]) for i in range(150)]
    return b"".join(f.serialize() for f in frames)


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("settings", ErrorCodes.ENHANCE_YOUR_CALM),
        ("continuation", ErrorCodes.PROTOCOL_ERROR),
        ("empty-data", ErrorCodes.ENHANCE_YOUR_CALM),
        ("priority", ErrorCodes.ENHANCE_YOUR_CALM),
        ("streams", ErrorCodes.PROTOCOL_ERROR),
    ],
)
async def test_floods_cut_that_connection_only(
    start_frontend: Any, worker_for: Any, kind: str, code: int
) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for, capacity=200)
    await raw.until(lambda events: raw.of(h2e.RemoteSettingsChanged))  # our SETTINGS first (and ACKed)
    raw.send_raw(_flood(kind, raw))
    await raw.until(lambda events: _goaway(raw) is not None)
    assert _goaway(raw) == code
    await _served(fe, w)


async def test_worker_lost_mid_stream_resets_that_stream_only(start_frontend: Any, worker_for: Any) -> None:
    fe, w1, raw = await h2_setup(start_frontend, worker_for, capacity=1)
    first = await raw.get("/first")
    req1 = await w1.request()
    w1.respond(req1.stream_id, 200, (), b"part", more_body=True)
    await raw.until(lambda events: raw.of(h2e.DataReceived, first))
    w2 = await worker_for(fe, capacity=1)
    second = await raw.get("/second")
    req2 = await w2.request()
    w1.close()  # the worker process died mid-response
    await raw.until(lambda events: raw.of(h2e.StreamReset, first))
    assert raw.of(h2e.StreamReset, first)[0].error_code == ErrorCodes.INTERNAL_ERROR
    w2.respond(req2.stream_id, 200, (), b"still here")
    await raw.until(lambda events: raw.of(h2e.StreamEnded, second))
    assert b"".join(e.data for e in raw.of(h2e.DataReceived, second)) == b"still here"


async def test_get_replayed_on_another_worker_when_its_worker_dies(
    start_frontend: Any, worker_for: Any
) -> None:
    fe, w1, raw = await h2_setup(start_frontend, worker_for, capacity=1)
    sid = await raw.get("/again")
    await w1.request()
    w2 = await worker_for(fe, capacity=1)
    w1.close()  # before any response: an idempotent request goes to another worker
    req = await w2.request()
    assert req.raw_path == b"/again"
    w2.respond(req.stream_id, 200, (), b"replayed")
    await raw.until(lambda events: raw.of(h2e.StreamEnded, sid))
    assert b"".join(e.data for e in raw.of(h2e.DataReceived, sid)) == b"replayed"


async def test_expect_100_continue_is_sent_when_the_app_reads(start_frontend: Any, worker_for: Any) -> None:
    fe, w, raw = await h2_setup(start_frontend, worker_for)
    sid = raw.conn.get_next_available_stream_id()
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/up"),
               ("expect", "100-continue")]  # fmt: skip
    raw.conn.send_headers(sid, headers)
    await raw.flush()
    req = await w.request()
    assert req.expect_continue and req.more_body and req.body == b""
    await asyncio.sleep(0.2)
    assert not raw.of(h2e.InformationalResponseReceived)  # not before the app reads
    w.send(ev.Credit(req.stream_id, 65536))  # the app reads: its first credit
    await raw.until(lambda events: raw.of(h2e.InformationalResponseReceived, sid))
    assert dict(raw.of(h2e.InformationalResponseReceived, sid)[0].headers)[b":status"] == b"100"
    raw.conn.send_data(sid, b"payload", end_stream=True)
    await raw.flush()
    body = await w.expect(ev.Body)
    assert (body.body, body.more_body) == (b"payload", False)
    w.respond(req.stream_id, 200, (), b"ok")
    await raw.until(lambda events: raw.of(h2e.StreamEnded, sid))
