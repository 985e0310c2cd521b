"""Golden bytes: the exact frame 0 of a few events. A failure here is a wire
format change: bump the protocol (PROTOCOL.md §12) or undo it."""

from __future__ import annotations

import pytest

from wire import codec
from wire import events as ev

GOLDEN = {
    "request_get_with_duplicate_headers": (
        ev.Request(1, "GET", "http", "1.1", b"/a%20b", b"x=1", "",
                   ((b"Host", b"h"), (b"X-A", b"1"), (b"X-A", b"2")), ("127.0.0.1", 5000), ("127.0.0.1", 8000)),
        "919f1001a3474554a468747470a3312e31c4062f6125323062c403783d31a09392c404486f7374c4016892c403582d41c40131"
        "92c403582d41c4013292a93132372e302e302e31cd138892a93132372e302e302e31cd1f40c400c2c280",
    ),
    "response_coalesced_with_body": (
        ev.Response(1, 200, ((b"content-type", b"text/plain"),), b"Hello", False, False),
        "91971401ccc89192c40c636f6e74656e742d74797065c40a746578742f706c61696ec40548656c6c6fc2c2",
    ),
    "hello_handshake": (
        ev.Hello(0, 1, "w-1", 7, 256, 10000, 262144, ("http",), {}),
        "919a010001a3772d3107cd0100cd2710ce0004000091a46874747080",
    ),
    "credit": (ev.Credit(3, 65536), "91931303ce00010000"),
    "early_hints": (ev.EarlyHints(3, (b"</a.css>; rel=preload",)),
                    "9193180391c4153c2f612e6373733e3b2072656c3d7072656c6f6164"),
}  # fmt: skip


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_bytes(name: str) -> None:
    event, hex_bytes = GOLDEN[name]
    assert codec.encode([event])[0].hex() == hex_bytes
    assert codec.decode([bytes.fromhex(hex_bytes)]) == [event]
