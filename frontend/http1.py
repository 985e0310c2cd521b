"""HTTP/1.x response bytes for the front end's own protocol: pure functions, no I/O.

The worker's header bytes go out as they came (validated, never decoded);
what the front end adds is what aiohttp's ``StreamResponse`` added before
(``X-Request-ID``, ``Content-Length`` or chunking, a default ``Content-Type``,
``Date``, ``Server``, ``Connection``), so clients see the same heads.

* ``whole_head``: the hot path, a response whose body is all in hand. It
  declines (None) anything unusual; ``head`` then decides.
* ``head``: every response. Framing is ours: the worker's
  ``Transfer-Encoding`` and ``Connection`` are dropped (a ``Connection: close``
  from it closes the connection), an exact ``Content-Length`` of its is kept;
  otherwise a whole body gets one, a streamed one is chunked (HTTP/1.1) or
  ends at close (HTTP/1.0). HEAD keeps the worker's ``Content-Length`` and
  sends no body; 1xx/204/304 send neither. ``BadHead`` for a control
  character in a field or a bad ``Content-Length`` (the bridge answers 502).
* ``error``: the front end's own short responses (400, 408, 413, 502...).
"""

from __future__ import annotations

import re
from email.utils import formatdate
from http import HTTPStatus
from time import time
from typing import Any

from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # not allowed in a field (HTAB is fine)
# Other control characters than CR and LF; those two are counted (whole_head): one CRLF per line.
_CONTROL_NOT_CRLF = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# The fields we add when the worker did not: name -> its bit in a "seen" mask.
_ID, _TYPE, _DATE, _SERVER = 1, 2, 4, 8
_DEFAULTED = {b"x-request-id": _ID, b"content-type": _TYPE, b"date": _DATE, b"server": _SERVER}
_SERVER_LINE = b"Server: %s\r\n" % SERVER_SOFTWARE.encode()
_STATUS_LINES: dict[tuple[Any, int], bytes] = {}
_ERROR_BODIES: dict[int, bytes] = {}
LAST_CHUNK = b"0\r\n\r\n"


class BadHead(ValueError):
    """The worker's response head cannot be sent (the client gets 502)."""


def status_line(version: Any, status: int) -> bytes:
    key = (version, status)
    line = _STATUS_LINES.get(key)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = f"HTTP/{version[0]}.{version[1]} {status} {reason}\r\n".encode()
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[key] = line
    return line


_date_second = -1
_date_line = b""


def _date() -> bytes:
    """The Date line, formatted once a second (as uvicorn and aiohttp do)."""
    global _date_second, _date_line
    now = int(time())
    if now != _date_second:
        _date_second, _date_line = now, b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date_line


def _add_date_server(out: list[bytes], seen: int) -> None:
    """Date and Server, unless the worker sent them."""
    if not seen & _DATE:
        out.append(_date())
    if not seen & _SERVER:
        out.append(_SERVER_LINE)


def _connection_line(version: Any, keep_alive: bool) -> bytes:
    if keep_alive:
        return b"Connection: keep-alive\r\n" if version == HttpVersion10 else b""
    return b"Connection: close\r\n" if version == HttpVersion11 else b""


# What whole_head learnt from a worker's (status, headers): an app answers with a handful of
# distinct heads, so the field checks and the copy of the fields run once per distinct head.
_FIELDS_CACHE: dict[tuple[Any, int, Any], tuple[bytes, int, bytes | None]] = {}
_FIELDS_CACHE_MAX = 512
_FIELDS_CACHED_MAX_BYTES = 1024


def _fields(version: Any, status: int, headers: Any) -> tuple[bytes, int, bytes | None] | None:
    """(status line + the worker's field lines, the seen-mask, its Content-Length value or None);
    None when ``head`` must decide."""
    out = [status_line(version, status)]
    seen = 0
    length = None
    for pair in headers:
        name = pair[0].lower()
        if name in _FRAMING:
            if name != b"content-length" or length is not None:
                return None
            length = pair[1]
        else:
            seen |= _DEFAULTED.get(name, 0)
        out.append(b"%s: %s\r\n" % pair)
    block = b"".join(out)
    fields = len(out) - 1
    if fields:  # "name: value\r\n" lines: a CR or LF elsewhere would split or smuggle a field
        start = len(out[0])
        if (
            block.count(b"\n", start) != fields
            or block.count(b"\r", start) != fields
            or _CONTROL_NOT_CRLF.search(block, start) is not None
        ):
            return None
    return block, seen, length


def whole_head(
    version: Any, status: int, headers: Any, body: bytes, rid: str, keep_alive: bool
) -> bytes | None:
    """The head of a whole-body response; None when ``head`` must decide (framing headers from
    the worker other than an exact Content-Length, a control character in a field)."""
    key = (version, status, headers)
    try:
        known = _FIELDS_CACHE[key]
    except KeyError:
        known = _fields(version, status, headers)
        if known is not None and len(known[0]) <= _FIELDS_CACHED_MAX_BYTES:  # (bounded memory)
            if len(_FIELDS_CACHE) >= _FIELDS_CACHE_MAX:
                _FIELDS_CACHE.clear()
            _FIELDS_CACHE[key] = known
    except TypeError:  # (not hashable: not from the codec, whose headers are tuples)
        known = _fields(version, status, headers)
    if known is None:
        return None
    block, seen, length = known
    out = [block]
    if not seen & _ID:
        out.append(b"X-Request-ID: %s\r\n" % rid.encode())  # the app's own id wins
    if length is None:
        out.append(b"Content-Length: %d\r\n" % len(body))
    elif length != b"%d" % len(body):
        return None
    if not seen & _TYPE and body:
        out.append(b"Content-Type: application/octet-stream\r\n")
    _add_date_server(out, seen)
    out.append(_connection_line(version, keep_alive) + b"\r\n")
    return b"".join(out)


class Head:
    """What ``head`` decided: the bytes, and how the body is framed."""

    __slots__ = ("data", "chunked", "empty", "keep_alive", "trailers", "length")

    def __init__(
        self, data: bytes, chunked: bool, empty: bool, keep_alive: bool, trailers: bool, length: int | None
    ) -> None:
        self.data = data
        self.chunked = chunked  # body chunks framed, a last chunk ends it
        self.empty = empty  # no body bytes may follow (HEAD, 1xx, 204, 304)
        self.keep_alive = keep_alive
        self.trailers = trailers  # the last chunk carries the worker's trailers
        self.length = length  # the body's length the head declares (None: chunked or until close)


def head(
    version: Any,
    method: str,
    status: int,
    headers: Any,
    rid: str,
    *,
    keep_alive: bool,
    whole_length: int | None,  # the body's length when it is all in hand (no trailers)
    trailers: bool,  # the worker will send trailers and the client accepts them
) -> Head:
    """Any response's head (see the module docstring). Raises ``BadHead``."""
    empty = method == "HEAD" or status in (204, 304) or status < 200
    no_length = status in (204, 304) or status < 200
    lines = []
    length: int | None = None
    seen = 0
    for pair in headers:
        name, value = pair[0], pair[1]
        if _CONTROL.search(name) is not None or _CONTROL.search(value) is not None or not name:
            raise BadHead(f"control character in header {name[:40]!r}")
        lower = name.lower()
        if lower in _FRAMING:
            if lower == b"content-length":
                if not value.strip().isdigit() or (length is not None and length != int(value)):
                    raise BadHead(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif lower == b"connection" and b"close" in value.lower():
                keep_alive = False
            continue
        seen |= _DEFAULTED.get(lower, 0)
        lines.append(b"%s: %s\r\n" % (name, value))
    chunked = False
    if length is not None and trailers:
        trailers = False  # a fixed length leaves no room for a trailer section
    if empty:
        trailers = False
        if length is not None and not no_length:
            lines.append(b"Content-Length: %d\r\n" % length)  # HEAD: what GET would say
    else:
        if length is None and not trailers:
            length = whole_length
        if length is not None:
            lines.append(b"Content-Length: %d\r\n" % length)
        elif version == HttpVersion11:
            chunked = True
            lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            keep_alive = False  # HTTP/1.0: the body ends when the connection does
        if not seen & _TYPE and length != 0:
            lines.append(b"Content-Type: application/octet-stream\r\n")
    if not seen & _ID:
        lines.append(b"X-Request-ID: %s\r\n" % rid.encode())
    _add_date_server(lines, seen)
    lines.append(_connection_line(version, keep_alive))
    data = status_line(version, status) + b"".join(lines) + b"\r\n"
    return Head(data, chunked, empty, keep_alive, trailers and chunked, None if empty else length)


def last_chunk(trailer_fields: list[tuple[bytes, bytes]]) -> bytes:
    """The end of a chunked body, with the trailer fields that are safe to send."""
    if not trailer_fields:
        return LAST_CHUNK
    block = b"".join(
        b"%s: %s\r\n" % (n, v) for n, v in trailer_fields if n and _CONTROL.search(n + v) is None
    )
    return b"0\r\n" + block + b"\r\n"


def error(
    status: int,
    version: Any = HttpVersion11,
    rid: str | None = None,
    *,
    keep_alive: bool = False,
    retry_after_s: float | None = None,
) -> bytes:
    """One of our own short text responses: ``connection: close`` unless ``keep_alive``
    (said explicitly to HTTP/1.0 too: a smuggler must read it), a body that echoes nothing."""
    body = _ERROR_BODIES.get(status)
    if body is None:
        body = _ERROR_BODIES[status] = f"{status} {HTTPStatus(status).phrase}\n".encode()
    if version != HttpVersion10 and version != HttpVersion11:
        version = HttpVersion11
    out = [
        status_line(version, status),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body),
    ]
    if retry_after_s is not None:
        out.append(b"Retry-After: %d\r\n" % max(1, round(retry_after_s)))
    if rid is not None:
        out.append(b"X-Request-ID: %s\r\n" % rid.encode())
    out.append(_date() + _SERVER_LINE)
    if keep_alive:
        out.append(_connection_line(version, True))
    else:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)
