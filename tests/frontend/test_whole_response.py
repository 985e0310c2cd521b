"""Response heads at protocol level (frontend.http1): ``whole_head`` writes the head aiohttp's
StreamResponse would have written for the same worker response, byte for byte (Date aside), and
declines what the general path must decide (framing headers, CR/LF in a field); ``head``, the
general path, writes the same fields (its framing lines come after the worker's)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from aiohttp.test_utils import make_mocked_request

from frontend import http1, parse_errors
from frontend.responses import str_headers
from wire import events as ev

_DATE = re.compile(rb"\r\nDate: [^\r]*")


class _Capture:
    """Enough of aiohttp's StreamWriter for StreamResponse.prepare: keeps the serialized head."""

    length: int | None = None
    head = b""

    async def write_headers(self, status_line: str, headers: Any) -> None:
        self.head = _serialize_headers(status_line, headers)

    def send_headers(self) -> None:
        pass

    def enable_chunking(self) -> None:
        raise AssertionError("a whole body is never chunked")


async def _aiohttp_head(request: Any, start: ev.Response) -> bytes:
    """What _respond's general path writes (the code as it stood before the one-write path)."""
    resp = web.StreamResponse(status=start.status, headers=str_headers(start.headers))
    resp.headers.setdefault("X-Request-ID", RID)
    if resp.content_length is None:
        resp.content_length = len(start.body)
    await resp.prepare(request)
    head = request.writer.head
    # Where zasgi now differs from aiohttp (issue 21): no made-up Content-Type, no versions in Server.
    if not any(name.lower() == b"content-type" for name, _ in start.headers):
        head = head.replace(b"Content-Type: application/octet-stream\r\n", b"")
    return re.sub(rb"Server: Python/[^\r]*", b"Server: zasgi", head)


RID = "0123456789abcdef"


def _request(version: Any) -> Any:
    return make_mocked_request("GET", "/", version=version, writer=_Capture())


HELLO = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


@pytest.mark.parametrize("version", [HttpVersion11, HttpVersion10])
@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (200, HELLO, b"Hello, world!"),
        (200, [], b"Hello, world!"),
        (200, [], b""),
        (
            404,
            [(b"Content-Type", b"text/html"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
            b"<p>no</p>",
        ),
        (201, [(b"x-request-id", b"app-own-id"), (b"server", b"app"), (b"date", b"then")], b"x"),
        (599, [(b"x-tab", b"a\tb")], b"odd status"),
    ],
)
async def test_whole_head_is_aiohttp_s_head(version: Any, status: int, headers: Any, body: bytes) -> None:
    start = ev.Response(1, status, tuple(headers), body)
    request = _request(version)
    ours = http1.whole_head(version, status, headers, body, RID, request.keep_alive)
    theirs = await _aiohttp_head(_request(version), start)
    assert ours is not None
    assert _DATE.sub(b"", ours) == _DATE.sub(b"", theirs)
    general = http1.head(version, "GET", status, headers, RID, keep_alive=request.keep_alive,
                         whole_length=len(body), trailers=False)  # fmt: skip
    assert general.keep_alive == request.keep_alive and not general.chunked
    assert _fields(general.data) == _fields(theirs)


def _fields(head: bytes) -> tuple[bytes, list[bytes]]:
    status, *lines = _DATE.sub(b"", head).split(b"\r\n")
    return status, sorted(line.lower() for line in lines)  # the case of our framing names differs


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"12")],  # wrong length: aiohttp truncates or the client waits
        [(b"content-length", b"13"), (b"content-length", b"13")],
        [(b"transfer-encoding", b"chunked")],
        [(b"connection", b"close")],
        [(b"x-bad", b"a\r\nInjected: yes")],
        [(b"x-bad\n", b"v")],
        [(b"x-nul", b"a\x00b")],
        [(b"x-del", b"a\x7fb")],
    ],
)
def test_whole_head_declines_what_the_general_path_decides(headers: Any) -> None:
    assert http1.whole_head(HttpVersion11, 200, headers, b"Hello, world!", RID, True) is None


def test_whole_head_passes_header_bytes_through() -> None:
    """Unlike aiohttp's str headers (latin-1 in, UTF-8 out): the worker's bytes, as sent."""
    head = http1.whole_head(HttpVersion11, 200, [(b"x-raw", b"caf\xe9")], b"x", RID, True)
    assert head is not None and b"\r\nx-raw: caf\xe9\r\n" in head


@pytest.mark.parametrize(
    "headers", [[(b"x-bad", b"a\r\nInjected: yes")], [(b"x-nul", b"a\x00b")], [(b"content-length", b"1x")]]
)
def test_general_head_refuses_a_bad_field(headers: Any) -> None:
    with pytest.raises(http1.BadHead):
        http1.head(
            HttpVersion11, "GET", 200, headers, RID, keep_alive=True, whole_length=None, trailers=False
        )


def test_general_head_framing() -> None:
    def head(version: Any = HttpVersion11, method: str = "GET", status: int = 200, headers: Any = (),
             whole: int | None = None, trailers: bool = False) -> http1.Head:  # fmt: skip
        return http1.head(version, method, status, headers, RID, keep_alive=True, whole_length=whole,
                          trailers=trailers)  # fmt: skip

    streamed = head()
    assert streamed.chunked and b"Transfer-Encoding: chunked\r\n" in streamed.data and streamed.keep_alive
    old = head(HttpVersion10)  # HTTP/1.0: the body ends at close
    assert not old.chunked and not old.keep_alive and b"Transfer-Encoding" not in old.data
    fixed = head(headers=[(b"content-length", b"5"), (b"transfer-encoding", b"gzip")])
    assert not fixed.chunked and b"Content-Length: 5\r\n" in fixed.data and b"ransfer-" not in fixed.data
    assert head(headers=[(b"connection", b"close")]).keep_alive is False
    for status in (204, 304, 101):
        empty = head(status=status, headers=[(b"content-length", b"5")])
        assert empty.empty and b"Content-Length" not in empty.data and not empty.chunked
    on_head = head(method="HEAD", headers=[(b"content-length", b"5")])
    assert on_head.empty and b"Content-Length: 5\r\n" in on_head.data
    with_trailers = head(trailers=True)
    assert with_trailers.chunked and with_trailers.trailers
    assert not head(headers=[(b"content-length", b"5")], trailers=True).trailers
    assert http1.last_chunk([(b"x-sum", b"1"), (b"x-bad", b"a\nb")]) == b"0\r\nx-sum: 1\r\n\r\n"


# ---------------------------------------------------------------- what the front end adds (issue 21)


def test_no_content_type_is_made_up() -> None:
    """A response without Content-Type gets none (before: application/octet-stream)."""
    whole = http1.whole_head(HttpVersion11, 200, [], b"abc", RID, True)
    general = http1.head(
        HttpVersion11, "GET", 200, [], RID, keep_alive=True, whole_length=None, trailers=False
    )
    for data in (whole, general.data):
        assert data is not None and b"content-type" not in data.lower()
    assert b"\r\nServer: zasgi\r\n" in whole  # and no aiohttp/Python versions


@pytest.fixture
def configured() -> Any:
    yield http1.configure
    http1.configure(server=http1.SERVER_NAME, date=True)


def test_server_date_and_extra_fields_are_configurable(configured: Any) -> None:
    configured(server=None, date=False, extra=(("X-Frame-Options", "DENY"), ("X-Two", "2")))
    for headers in ([], [(b"x-two", b"app")]):
        whole = http1.whole_head(HttpVersion11, 200, headers, b"x", RID, True)
        general = http1.head(HttpVersion11, "GET", 200, headers, RID, keep_alive=True, whole_length=1,
                             trailers=False)  # fmt: skip
        for data in (whole, general.data, parse_errors.error(503)):
            assert data is not None
            lower = data.lower()
            assert b"\r\nserver:" not in lower and b"\r\ndate:" not in lower
            assert b"\r\nX-Frame-Options: DENY\r\n" in data
        assert whole is not None and whole.lower().count(b"x-two:") == 1  # the app's own wins
