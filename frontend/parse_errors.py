"""The front end's own error responses, one builder for all of them; and which status a parse error gets.

``error`` is the one builder: 4xx/5xx the front end answers itself (parse
errors, 408, 413, 502, 503 + Retry-After...), as bytes for our connections
(response.py, connection.py, ws_bridge.py). A short text body that echoes
nothing of the request; ``connection: close`` unless asked to keep the
connection (said explicitly to HTTP/1.0 too: a smuggler must read it).

Parse errors (connection.py): ``414`` for a request line over
``--limit-max-line-size``, ``431`` for a header field over
``--limit-max-header-size`` or more than ``--limit-max-headers`` fields,
``400`` for the rest (smuggling attempts included).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from .http1 import add_defaults, status_line

_BODIES: dict[int, bytes] = {}


def _body(status: int) -> bytes:
    body = _BODIES.get(status)
    if body is None:
        body = _BODIES[status] = f"{status} {HTTPStatus(status).phrase}\n".encode()
    return body


def _retry_after(retry_after_s: float) -> int:
    return max(1, round(retry_after_s))


def error(
    status: int,
    version: Any = HttpVersion11,
    rid: str | None = None,
    *,
    keep_alive: bool = False,
    retry_after_s: float | None = None,
) -> bytes:
    """One of our own short text responses, whole, as bytes."""
    body = _body(status)
    if version != HttpVersion10 and version != HttpVersion11:
        version = HttpVersion11
    out = [
        status_line(version, status),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body),
    ]
    if retry_after_s is not None:
        out.append(b"Retry-After: %d\r\n" % _retry_after(retry_after_s))
    if rid is not None:
        out.append(b"X-Request-ID: %s\r\n" % rid.encode())
    add_defaults(out, 0)  # Date, Server, --header fields, as configured
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif version == HttpVersion10:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)


class ParseError:
    """A queued parse error: answered in its turn, after the requests before it."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


def status_of(exc: HttpProcessingError, line_len: int | None, max_line_bytes: int) -> int:
    """``line_len``: the length of the request line, when its end was seen."""
    if isinstance(exc, LineTooLong):
        return 414 if line_len is None or line_len > max_line_bytes else 431
    if isinstance(exc, BadHttpMessage) and "Too many headers" in (exc.message or ""):
        return 431
    return 400
