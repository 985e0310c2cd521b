"""The one-write response path (http_bridge._whole_head) writes the head aiohttp's StreamResponse
would have written for the same worker response, byte for byte (Date aside), and declines what
the general path must decide (framing headers, CR/LF in a field)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from aiohttp.test_utils import make_mocked_request

from frontend.access_log import REQUEST_ID
from frontend.http_bridge import _whole_head, _WorkerResponse
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
    resp = _WorkerResponse(status=start.status, headers=str_headers(start.headers))
    resp.headers.setdefault("X-Request-ID", request[REQUEST_ID])
    if resp.content_length is None:
        resp.content_length = len(start.body)
    await resp.prepare(request)
    return request.writer.head


def _request(version: Any) -> Any:
    request = make_mocked_request("GET", "/", version=version, writer=_Capture())
    request[REQUEST_ID] = "0123456789abcdef"
    return request


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
    start = ev.Response(1, status, headers, body)
    request = _request(version)
    ours = _whole_head(request, start, request.keep_alive)
    theirs = await _aiohttp_head(_request(version), start)
    assert ours is not None
    assert _DATE.sub(b"", ours) == _DATE.sub(b"", theirs)


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
    assert _whole_head(_request(HttpVersion11), ev.Response(1, 200, headers, b"Hello, world!"), True) is None


def test_whole_head_passes_header_bytes_through() -> None:
    """Unlike aiohttp's str headers (latin-1 in, UTF-8 out): the worker's bytes, as sent."""
    head = _whole_head(_request(HttpVersion11), ev.Response(1, 200, [(b"x-raw", b"caf\xe9")], b"x"), True)
    assert head is not None and b"\r\nx-raw: caf\xe9\r\n" in head
