"""HTTP/1.x response bytes for the front end's own protocol: pure functions, no I/O.

The worker's header bytes go out as they came (validated, never decoded);
what the front end adds is what aiohttp's ``StreamResponse`` added before
(``X-Request-ID``, ``Content-Length`` or chunking, ``Date``, ``Server``, ``Connection``)
and the operator's ``--header`` fields, each only when the worker did not send that field
(``configure``, once at start-up). No ``Content-Type`` is made up: HTTP/1.1 framing does not
need one, and a response without one is the app's to send (as uvicorn).

* ``whole_head``: the hot path, a response whose body is all in hand. It
  declines (None) anything unusual; ``head`` then decides.
* ``head``: every response. Framing is ours: the worker's
  ``Transfer-Encoding`` and ``Connection`` are dropped (a ``Connection: close``
  from it closes the connection), an exact ``Content-Length`` of its is kept;
  otherwise a whole body gets one, a streamed one is chunked (HTTP/1.1) or
  ends at close (HTTP/1.0). HEAD keeps the worker's ``Content-Length`` and
  sends no body; 1xx/204/304 send neither. ``BadHead`` for a control
  character in a field or a bad ``Content-Length`` (the bridge answers 502).
(The front end's own short responses: parse_errors.error.)
"""

from __future__ import annotations

import re
from email.utils import formatdate
from http import HTTPStatus
from time import time
from typing import Any

from aiohttp.http import HttpVersion10, HttpVersion11

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # not allowed in a field (HTAB is fine)
# Other control characters than CR and LF; those two are counted (whole_head): one CRLF per line.
_CONTROL_NOT_CRLF = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# The fields we add when the worker did not: name -> its bit in a "seen" mask (configure adds
# the --header names, a bit each).
_ID, _DATE, _SERVER = 1, 4, 8
_DEFAULTED = {b"x-request-id": _ID, b"date": _DATE, b"server": _SERVER}
SERVER_NAME = "zasgi"  # no version: it tells a scanner nothing
_SERVER_LINE = b"Server: zasgi\r\n"  # b"": --no-server-header
_DATE_ON = True  # --no-date-header: False
_EXTRA: tuple[tuple[int, bytes], ...] = ()  # --header fields: (bit, line)
_STATUS_LINES: dict[tuple[Any, int], bytes] = {}
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


def date_line() -> bytes:
    """The Date line, formatted once a second (as uvicorn and aiohttp do)."""
    global _date_second, _date_line
    now = int(time())
    if now != _date_second:
        _date_second, _date_line = now, b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date_line


def configure(*, server: str | None, date: bool, extra: tuple[tuple[str, str], ...] = ()) -> None:
    """The fields every response gets unless the worker sent them: ``Server`` (None: none),
    ``Date`` (on or off), and extra ones; called once, before the first request."""
    global _SERVER_LINE, _DATE_ON, _EXTRA
    _SERVER_LINE = b"Server: %s\r\n" % server.encode("latin-1") if server else b""
    _DATE_ON = date
    for stale in [n for n in _DEFAULTED if n not in (b"x-request-id", b"date", b"server")]:
        del _DEFAULTED[stale]
    lines = []
    for i, (name, value) in enumerate(extra):
        bit = 16 << i
        _DEFAULTED[name.lower().encode("latin-1")] = bit
        lines.append((bit, b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))))
    _EXTRA = tuple(lines)
    _FIELDS_CACHE.clear()  # its seen-masks were computed with the old names


def add_defaults(out: list[bytes], seen: int) -> None:
    """Date, Server and the --header fields, unless the worker sent them."""
    if _DATE_ON and not seen & _DATE:
        out.append(date_line())
    if not seen & _SERVER:
        out.append(_SERVER_LINE)
    for bit, line in _EXTRA:
        if not seen & bit:
            out.append(line)


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
    version: Any, status: int, headers: Any, body: bytes | bytearray | memoryview, rid: str, keep_alive: bool
) -> bytes | None:
    """The head of a whole-body response; None when ``head`` must decide (framing headers from
    the worker other than an exact Content-Length, a control character in a field)."""
    key = (version, status, headers)
    known: tuple[bytes, int, bytes | None] | None
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
    add_defaults(out, seen)
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
    if not seen & _ID:
        lines.append(b"X-Request-ID: %s\r\n" % rid.encode())
    add_defaults(lines, seen)
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
