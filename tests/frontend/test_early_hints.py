"""EARLY_HINTS (feature "early-hints", PROTOCOL Rule 12a) -> a 103 to the client: always on HTTP/2,
on HTTP/1.1 only with --early-hints, never on HTTP/1.0; dropped once the response started."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from h2 import events as h2e

from frontend import config as cfg
from wire import codec
from wire import events as ev
from wire.events import ResetCode

from .cli_config import build, run_argv
from .rawh2 import h2_setup
from .rawhttp import RawConn
from .scripted_worker import ScriptedWorker

pytestmark = pytest.mark.timeout(30)

FEATURES = ("http", "trailers", "pathsend", "early-hints")
LINKS = (b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script")
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def _http1_request(
    start_frontend: Any,
    worker_for: Any,
    *,
    option: bool = True,
    request: bytes = GET,
    features: tuple[str, ...] = FEATURES,
) -> tuple[ScriptedWorker, RawConn, ev.Request]:
    """A front end (``option``: --early-hints), a worker, one HTTP/1 ``request`` sent and received."""
    fe = await start_frontend(http=replace(cfg.HttpLimits(), early_hints=option))
    w = await worker_for(fe, features=features)
    conn = await RawConn.open(fe.port)
    await conn.send(request)
    return w, conn, await w.request()


async def test_h2_client_gets_a_103_with_the_links_before_the_response(
    start_frontend: Any, worker_for: Any
) -> None:
    # --early-hints is off: HTTP/2 gets them all the same
    _, w, raw = await h2_setup(start_frontend, worker_for, features=FEATURES)
    sid = await raw.get("/")
    req = await w.request()
    w.send(ev.EarlyHints(req.stream_id, LINKS))
    await raw.until(lambda events: raw.of(h2e.InformationalResponseReceived, sid))
    w.respond(req.stream_id, 200, (), b"page")
    w.send(ev.EarlyHints(req.stream_id, (b"</late.css>; rel=preload",)))  # after the response: dropped
    await raw.until(lambda events: raw.of(h2e.StreamEnded, sid))
    [info] = raw.of(h2e.InformationalResponseReceived, sid)
    assert info.headers == [(b":status", b"103"), (b"link", LINKS[0]), (b"link", LINKS[1])]
    [response] = raw.of(h2e.ResponseReceived, sid)
    assert dict(response.headers)[b":status"] == b"200"
    assert b"".join(e.data for e in raw.of(h2e.DataReceived, sid)) == b"page"
    assert not raw.of(h2e.StreamReset)


async def test_http11_with_the_option_gets_a_103_then_the_response(
    start_frontend: Any, worker_for: Any
) -> None:
    w, conn, req = await _http1_request(start_frontend, worker_for)
    w.send(ev.EarlyHints(req.stream_id, LINKS))
    assert await conn.read_head() == (
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n"
        b"link: </app.js>; rel=preload; as=script\r\n\r\n"
    )
    w.respond(req.stream_id, 200, ((b"content-length", b"2"),), b"ok")
    head = await conn.read_head()
    assert head.startswith(b"HTTP/1.1 200 ") and await conn.read_exactly(2) == b"ok"
    # The connection goes on: the next request is served as usual.
    await conn.send(GET)
    req = await w.request()
    w.respond(req.stream_id, 200, ((b"content-length", b"1"),), b"2")
    assert (await conn.read_head()).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("option, request_line", [(False, GET), (True, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")])
async def test_no_103_on_http11_without_the_option_nor_ever_on_http10(
    start_frontend: Any, worker_for: Any, option: bool, request_line: bytes
) -> None:
    w, conn, req = await _http1_request(start_frontend, worker_for, option=option, request=request_line)
    w.send(ev.EarlyHints(req.stream_id, LINKS))
    await asyncio.sleep(0.1)
    w.respond(req.stream_id, 200, ((b"content-length", b"2"),), b"ok")
    head = await conn.read_head()
    assert head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")), head
    assert b"103" not in head and await conn.read_exactly(2) == b"ok"


async def test_the_feature_is_agreed_at_welcome(start_frontend: Any, worker_for: Any) -> None:
    fe = await start_frontend()
    w = await worker_for(fe, features=FEATURES)
    assert "early-hints" in w.welcome.features


async def test_a_bad_link_from_a_worker_resets_that_stream_never_reaches_the_client(
    start_frontend: Any, worker_for: Any
) -> None:
    w, conn, req = await _http1_request(start_frontend, worker_for)
    # A raw event the codec refuses (a CR/LF link would split the 103): RESET(PROTOCOL_ERROR).
    w.send_raw([codec.pack_value([[int(ev.Kind.EARLY_HINTS), req.stream_id, [b"</a>\r\nset-cookie: x=1"]]])])
    reset = await w.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (req.stream_id, ResetCode.PROTOCOL_ERROR)
    head = await conn.read_head()
    assert head.startswith(b"HTTP/1.1 502 ") and b"set-cookie" not in head


async def test_hints_from_a_worker_without_the_feature_are_a_protocol_error(
    start_frontend: Any, worker_for: Any
) -> None:
    no_hints = FEATURES[:-1]  # no "early-hints" in its HELLO
    w, conn, req = await _http1_request(start_frontend, worker_for, features=no_hints)
    w.send(ev.EarlyHints(req.stream_id, LINKS))
    reset = await w.expect(ev.Reset)
    assert (reset.stream_id, reset.code) == (req.stream_id, ResetCode.PROTOCOL_ERROR)
    assert (await conn.read_head()).startswith(b"HTTP/1.1 502 ")


def test_the_option_is_off_by_default_and_set_by_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cfg.FrontendConfig().http.early_hints is False and build([]).http.early_hints is False
    assert build(["--early-hints"]).http.early_hints is True
    monkeypatch.setenv("ZASGI_EARLY_HINTS", "true")
    assert build([]).http.early_hints is True
    assert build(["--no-early-hints"]).http.early_hints is False


def test_zasgi_run_passes_it_on_from_a_config_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--early-hints" in run_argv(tmp_path, monkeypatch, "early-hints = true\n")
