"""The access log: request ids, both formats with their fields, one line per request in process."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from time import perf_counter
from types import SimpleNamespace
from typing import Any
from unittest import mock

import httpx
import pytest
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict

from frontend import access_log as al
from frontend.pool import WorkerRecord

pytestmark = pytest.mark.timeout(30)

Q = r'"((?:[^"\\]|\\.)*)"'  # a quoted field, escapes allowed
COMBINED = re.compile(
    rf"^(?P<client>\S+) - - \[(?P<time>[^\]]+)\] {Q} (?P<status>\d{{3}}) (?P<bytes>\d+) {Q} {Q} "
    r"rid=(?P<rid>\S+) worker=(?P<worker>\S+) dur=(?P<dur>[\d.]+)$"
)


class _Metrics:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def request_ended(self, *args: Any) -> None:
        self.calls.append(("http", *args))

    def websocket_ended(self) -> None:
        self.calls.append(("ws",))


def _Worker() -> WorkerRecord:  # noqa: N802 (a real one: the compiled log checks the type)
    return WorkerRecord(peer=b"w", worker_id="host-42-abc", pid=1, capacity=1, window_bytes=1, now=0.0)


PEER = ("192.0.2.1", 40000)


def _message(headers: dict[str, str] | None, path: str) -> Any:
    """What aiohttp's parser gives the request path (RawRequestMessage): the fields the log reads."""
    return SimpleNamespace(method="GET", path=path, version=HttpVersion11, headers=CIMultiDict(headers or {}))


def _writer(
    headers: dict[str, str] | None = None, path: str = "/a?b=1", status: int = 200, bytes_out: int = 123
) -> Any:
    """A request answered on one of our connections (response.ResponseWriter), as the log sees it."""
    return SimpleNamespace(
        started=perf_counter() - 0.01, payload=SimpleNamespace(total_bytes=5), status=status,
        bytes_out=bytes_out, message=_message(headers, path), client_set=False, client=None,
        conn=SimpleNamespace(addresses=(PEER, ("127.0.0.1", 8000))), worker=_Worker(), rid="rid-1",
    )  # fmt: skip


def _upgrade(headers: dict[str, str] | None = None, path: str = "/ws") -> Any:
    """A WebSocket upgrade request (ws_connection.WsConnection), as the log sees it."""
    return SimpleNamespace(
        started=perf_counter() - 0.01, message=_message(headers, path), client_set=False, client=None,
        peer=PEER, worker=_Worker(), rid="rid-2",
    )  # fmt: skip


@pytest.fixture
def access_logger() -> Any:
    logger = logging.getLogger(al.ACCESS_LOGGER)
    with (
        mock.patch.object(logger, "isEnabledFor", return_value=True),
        mock.patch.object(logger, "info") as info,
    ):
        yield info


def test_request_id_kept_when_well_formed_else_made() -> None:
    for given in ("abc", "0f" * 16, "4bf92f3577b34da6a3ce929d0e0e4736", "Root=1-5759e988", "a.b:c/d+e=@f"):
        assert al.request_id(CIMultiDict({"X-Request-ID": given})) == given
    for bad in ("", "has space", "semi;colon", "x" * 129, 'quote"', "new\\nline", "é"):
        made = al.request_id(CIMultiDict({"X-Request-ID": bad}))
        assert made != bad and re.fullmatch(r"[0-9a-f]{16}", made)
    plain = CIMultiDict[str]()
    assert len({al.request_id(plain) for _ in range(1000)}) == 1000


def test_combined_line_has_the_fields(access_logger: Any) -> None:
    metrics = _Metrics()
    log = al.AccessLog(metrics, log_format="text")
    log.request_ended(_writer({"User-Agent": 'curl "8"', "Referer": "http://r/"}, status=201, bytes_out=77))
    (line,), _ = access_logger.call_args
    m = COMBINED.match(line)
    assert m, line
    assert m[3] == "GET /a?b=1 HTTP/1.1" and (m["status"], m["bytes"]) == ("201", "77")
    assert m[6] == "http://r/" and m[7] == 'curl \\"8\\"'  # quotes escaped, not closing the field
    assert (m["rid"], m["worker"]) == ("rid-1", "host-42-abc")
    assert float(m["dur"]) >= 0.01 and m["client"] == PEER[0]
    assert metrics.calls == [("http", 201, pytest.approx(float(m["dur"]), abs=1e-5), 5, 77)]


def test_control_characters_in_the_path_are_escaped(access_logger: Any) -> None:
    log = al.AccessLog(_Metrics(), log_format="text")
    log.request_ended(_writer(path='/x"\x1b[31m'))
    (line,), _ = access_logger.call_args
    assert "\x1b" not in line and '\\"' in line and COMBINED.match(line)


def test_json_line_has_the_fields(access_logger: Any) -> None:
    log = al.AccessLog(_Metrics(), log_format="json")
    log.request_ended(_writer({"User-Agent": "ua"}, status=404, bytes_out=9))
    (line,), _ = access_logger.call_args
    entry = json.loads(line)
    assert entry["method"] == "GET" and entry["path"] == "/a?b=1" and entry["http_version"] == "1.1"
    assert (entry["status"], entry["bytes_out"], entry["bytes_in"]) == (404, 9, 5)
    assert (entry["request_id"], entry["worker"], entry["user_agent"]) == ("rid-1", "host-42-abc", "ua")
    assert entry["duration_s"] > 0 and entry["time"] > 0 and entry["referer"] is None


def test_disabled_log_writes_nothing_but_metrics_still_count(access_logger: Any) -> None:
    metrics = _Metrics()
    log = al.AccessLog(metrics, enabled=False)
    log.request_ended(_writer())
    log.upgrade_ended(_upgrade(), 101, 0)
    access_logger.assert_not_called()
    assert [call[0] for call in metrics.calls] == ["http", "ws"]


def test_log_level_above_info_disables_it() -> None:
    logger = logging.getLogger(al.ACCESS_LOGGER)
    with mock.patch.object(logger, "isEnabledFor", return_value=False):
        assert not al.AccessLog(_Metrics()).enabled


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_upgrade_answered_without_a_session_is_a_request(access_logger: Any, log_format: str) -> None:
    """A refused upgrade (here 403) counts and logs as an HTTP request; a session (101) as a WebSocket."""
    metrics = _Metrics()
    log = al.AccessLog(metrics, log_format=log_format)
    log.upgrade_ended(_upgrade({"User-Agent": "ua"}), 403, 12)
    log.upgrade_ended(_upgrade(), 101, 0)
    assert metrics.calls == [("http", 403, pytest.approx(0.01, abs=5), 0, 12), ("ws",)]
    first, second = (call.args[0] for call in access_logger.call_args_list)
    if log_format == "json":
        entry = json.loads(first)
        assert (entry["status"], entry["bytes_out"], entry["path"]) == (403, 12, "/ws")
        assert entry["client"] == PEER[0] and entry["duration_s"] >= 0.01
        assert (entry["request_id"], entry["worker"], entry["user_agent"]) == ("rid-2", "host-42-abc", "ua")
        assert json.loads(second)["status"] == 101
    else:
        m = COMBINED.match(first)
        assert m and m[3] == "GET /ws HTTP/1.1"
        assert (m["status"], m["bytes"], m["rid"]) == ("403", "12", "rid-2")
        assert m["client"] == PEER[0] and float(m["dur"]) >= 0.01
        m = COMBINED.match(second)
        assert m and m["status"] == "101"


def test_json_formatter_for_other_records() -> None:
    record = logging.LogRecord("frontend.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    entry = json.loads(al.JsonFormatter().format(record))
    assert (
        entry["message"] == "hello world" and entry["level"] == "warning" and entry["logger"] == "frontend.x"
    )


async def test_one_line_per_request_in_process(
    start_frontend: Any, worker_for: Any, access_logger: Any
) -> None:
    fe = await start_frontend()
    w = await worker_for(fe)
    async with httpx.AsyncClient() as http:
        pending = asyncio.ensure_future(
            http.post(fe.url + "/up", content=b"abc", headers={"X-Request-ID": "r-7"})
        )
        req = await w.request()
        w.respond(req.stream_id, 202, (), b"done")
        assert (await pending).status_code == 202
    (call,) = access_logger.call_args_list
    m = COMBINED.match(call.args[0])
    assert m, call
    assert m[3] == "POST /up HTTP/1.1" and m["status"] == "202" and m["rid"] == "r-7"
    assert m["worker"] == w.worker_id


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_client_is_the_one_proxy_headers_named(access_logger: Any, log_format: str) -> None:
    log = al.AccessLog(_Metrics(), log_format=log_format)
    ex, conn = _writer(), _upgrade()
    log.request_ended(ex)  # no proxy headers: the TCP peer
    log.upgrade_ended(conn, 101, 0)
    for client in (("203.0.113.9", 0), None):  # None: for=unknown
        ex.client_set = conn.client_set = True
        ex.client = conn.client = client
        log.request_ended(ex)
        log.upgrade_ended(conn, 101, 0)
    lines = [call.args[0] for call in access_logger.call_args_list]
    if log_format == "json":
        clients = [json.loads(line)["client"] for line in lines]
    else:
        clients = [m["client"] if (m := COMBINED.match(line)) else "unmatched" for line in lines]
        clients = [None if c == "-" else c for c in clients]
    assert clients == [PEER[0]] * 2 + ["203.0.113.9"] * 2 + [None] * 2


async def test_trusted_proxy_headers_reach_the_line(
    start_frontend: Any, worker_for: Any, access_logger: Any
) -> None:
    fe = await start_frontend()  # defaults: proxy headers on, 127.0.0.1 (the test client) trusted
    w = await worker_for(fe)
    async with httpx.AsyncClient() as http:
        for headers in ({"X-Forwarded-For": "198.51.100.7, 127.0.0.1"}, {}):
            pending = asyncio.ensure_future(http.get(fe.url + "/", headers=headers))
            req = await w.request()
            w.respond(req.stream_id, 204)
            assert (await pending).status_code == 204
    clients = [COMBINED.match(call.args[0])["client"] for call in access_logger.call_args_list]  # type: ignore[index]
    assert clients == ["198.51.100.7", "127.0.0.1"]


async def test_answers_no_worker_sees_are_logged_too(start_frontend: Any, access_logger: Any) -> None:
    """A request the parser refused: one line with its status (the request shown as '-')."""
    fe = await start_frontend()
    reader, writer = await asyncio.open_connection("127.0.0.1", fe.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400 ")
    writer.close()
    (call,) = access_logger.call_args_list
    m = COMBINED.match(call.args[0])
    assert m and m["status"] == "400" and m[3] == "- - HTTP/1.1" and m["client"] == "127.0.0.1"


@pytest.mark.parametrize("closer", ["client", "worker"])
async def test_a_websocket_session_is_logged_once_whoever_closes_it(
    start_frontend: Any, worker_for: Any, access_logger: Any, closer: str
) -> None:
    """Issue 21: a session the client closed (the usual case) had no line and was not counted."""
    import aiohttp

    from wire import events as ev

    from .ws_helpers import connect, receive, ws_setup

    fe, w = await ws_setup(start_frontend, worker_for)
    async with aiohttp.ClientSession() as session:
        ws, conn = await connect(session, fe, w)
        if closer == "client":
            await ws.close(code=1000)
            await w.expect(ev.WsClose)
        else:
            w.send(ev.WsClose(conn.stream_id, 1000, ""))
            assert (await receive(ws)).type == aiohttp.WSMsgType.CLOSE
            await ws.close()
    for _ in range(100):  # the line is written as the server side of the session ends
        if access_logger.call_args_list:
            break
        await asyncio.sleep(0.05)
    (call,) = access_logger.call_args_list
    m = COMBINED.match(call.args[0])
    assert m and m["status"] == "101" and m[3] == "GET /ws HTTP/1.1" and m["worker"] == w.worker_id


# ---------------------------------------------------------------- LineSink: zasgi's own output


class _Stream:
    """A text stream that records each write, and can fail like a closed pipe."""

    def __init__(self, broken: bool = False) -> None:
        self.writes: list[str] = []
        self.flushes = 0
        self.broken = broken

    def write(self, text: str) -> int:
        if self.broken:
            raise BrokenPipeError(32, "Broken pipe")
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


async def test_sink_writes_one_iterations_lines_in_one_write_after_it() -> None:
    stream = _Stream()
    sink = al.LineSink(stream)  # type: ignore[arg-type]
    for i in range(3):
        sink.write(f"line {i}")
    assert stream.writes == []  # not before the iteration ends
    await asyncio.sleep(0)
    assert stream.writes == ["line 0\nline 1\nline 2\n"] and stream.flushes == 1
    sink.write("next")
    await asyncio.sleep(0)
    assert stream.writes[1:] == ["next\n"]


def test_sink_without_a_loop_writes_at_once() -> None:
    stream = _Stream()
    sink = al.LineSink(stream)  # type: ignore[arg-type]
    sink.write("a")
    sink.write("b")
    assert stream.writes == ["a\n", "b\n"]


async def test_sink_bounds_what_one_iteration_holds() -> None:
    stream = _Stream()
    sink = al.LineSink(stream)  # type: ignore[arg-type]
    for i in range(al.SINK_MAX_LINES + 1):
        sink.write(str(i))
    assert len(stream.writes) == 1 and stream.writes[0].count("\n") == al.SINK_MAX_LINES
    await asyncio.sleep(0)
    assert stream.writes[1:] == [f"{al.SINK_MAX_LINES}\n"]


def test_sink_on_a_broken_stream_warns_once_and_drops(caplog: pytest.LogCaptureFixture) -> None:
    sink = al.LineSink(_Stream(broken=True))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            sink.write("x")  # no exception reaches the request path
    warnings = [r for r in caplog.records if "access log: cannot write" in r.getMessage()]
    assert len(warnings) == 1


def test_access_lines_go_to_the_sink_when_zasgi_owns_the_output(
    monkeypatch: pytest.MonkeyPatch, access_logger: Any
) -> None:
    stream = _Stream()
    monkeypatch.setattr(al, "_sink", al.LineSink(stream))  # type: ignore[arg-type]
    log = al.AccessLog(_Metrics(), log_format="text")
    assert log.enabled
    log.request_ended(_writer({"User-Agent": "ua"}, status=204, bytes_out=0))
    (text,) = stream.writes
    m = COMBINED.match(text.rstrip("\n"))
    assert m and m["status"] == "204" and m[7] == "ua"
    assert access_logger.call_count == 0  # not through logging
