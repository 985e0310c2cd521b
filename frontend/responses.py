"""Small HTTP response helpers shared by the HTTP and WebSocket bridges."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from wire import events as ev
from wire.events import ResetCode


def error_response(status: int, *, retry_after_s: float | None = None, close: bool = False) -> web.Response:
    resp = web.Response(status=status, text=f"{status} {HTTPStatus(status).phrase}\n")
    if retry_after_s is not None:
        resp.headers["Retry-After"] = str(max(1, round(retry_after_s)))
    if close:
        resp.force_close()
    return resp


def str_headers(headers: ev.Headers) -> CIMultiDict[str]:
    """Worker header bytes as aiohttp wants them; latin-1 keeps every byte as it was."""
    return CIMultiDict([(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers])


def describe_failure(item: Any) -> str:
    """One log-friendly phrase for why a stream failed (a RESET event or a local reason)."""
    if type(item) is ev.Reset:
        try:
            name = ResetCode(item.code).name
        except ValueError:
            name = str(item.code)
        return f"RESET {name} {item.reason}".strip()
    return getattr(item, "value", type(item).__name__)
