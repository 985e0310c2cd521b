"""Small helpers shared by the HTTP and WebSocket paths: worker headers for aiohttp, failure phrases."""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict

from wire import events as ev
from wire.events import ResetCode


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
