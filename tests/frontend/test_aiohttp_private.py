"""aiohttp's private and internal names the front end builds on are still there, and still behave.

pyproject.toml pins aiohttp below the next minor release after the newest one
tested (``aiohttp>=3.11,<3.15``): these names are not aiohttp's public API, so
a new release may move or change any of them. When one does, this test fails
first, naming the symbol and the front-end module that needs it -- not every
fresh install with a cryptic error at the first request. Moving the pin up:
install the new aiohttp, run this file and the frontend tests, raise the bound.

If a front-end change adds or drops a use of aiohttp's internals, change the
table here with it. (The WebSocket path uses only aiohttp's unmasking XOR since
ws_connection.py/ws_frames.py: aiohttp's WebSocket reader is welded to its Cython queue class; see
ws_frames.py.)
"""

from __future__ import annotations

import asyncio
import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]

# (module, attribute path, who needs it and how)
PRIVATE_NAMES = [
    ("aiohttp._http_parser", "HttpRequestParser", "frontend/connection.py: the C (llhttp) request parser"),
    ("aiohttp.helpers", "DEFAULT_CHUNK_SIZE", "frontend/connection.py: the parser's chunk size"),
    ("aiohttp.http", "RawRequestMessage", "frontend/connection.py, response.py: the parsed request head"),
    ("aiohttp.http", "HttpVersion10", "frontend/http1.py, http_requests.py, parse_errors.py"),
    (
        "aiohttp.http",
        "HttpVersion11",
        "frontend/http1.py, http_requests.py, response.py, parse_errors.py",
    ),
    (
        "aiohttp.web_response",
        "SERVER_SOFTWARE",
        "frontend/admin.py: the Server field of aiohttp's own answers (parse errors)",
    ),
    ("aiohttp.http_exceptions", "BadHttpMessage", "frontend/parse_errors.py: 400s"),
    ("aiohttp.http_exceptions", "HttpProcessingError", "frontend/connection.py: 4xx from the parser"),
    ("aiohttp.http_exceptions", "LineTooLong", "frontend/parse_errors.py: 414/431"),
    (
        "aiohttp.streams",
        "EMPTY_PAYLOAD",
        "frontend/connection.py, http_requests.py, upload.py: body-less requests",
    ),
    ("aiohttp.tcp_helpers", "tcp_keepalive", "frontend/connection.py: SO_KEEPALIVE on accepted sockets"),
    ("aiohttp.tcp_helpers", "tcp_nodelay", "frontend/connection.py: TCP_NODELAY on accepted sockets"),
    ("aiohttp.web_protocol", "RequestPayloadError", "frontend/connection.py: the parser's payload exception"),
    ("aiohttp._websocket.helpers", "websocket_mask", "frontend/ws_frames.py: unmasking client frames (C)"),
]


@pytest.mark.parametrize(
    ("module", "name", "why"), PRIVATE_NAMES, ids=[f"{m}.{n}" for m, n, _ in PRIVATE_NAMES]
)
def test_the_names_exist(module: str, name: str, why: str) -> None:
    try:
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"aiohttp {aiohttp.__version__} has no {module}.{name} ({exc}); needed by {why}")


class _FlowProtocol:
    """What connection.Connection offers the parser's body readers (its flow control, as aiohttp's
    BaseProtocol's), recording the calls; any other attribute a reader asks for fails the test."""

    __slots__ = ("transport", "_reading_paused", "calls")

    def __init__(self) -> None:
        self.transport: Any = object()
        self._reading_paused = False
        self.calls: list[str] = []

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def pause_reading(self) -> None:
        self._reading_paused = True
        self.calls.append("pause")

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        self.calls.append("resume")


async def test_the_parser_is_built_and_fed_as_connection_py_does() -> None:
    from aiohttp._http_parser import HttpRequestParser
    from aiohttp.web_protocol import RequestPayloadError

    loop = asyncio.get_running_loop()
    protocol = _FlowProtocol()
    limit = 2**10  # (the connection's: DEFAULT_CHUNK_SIZE; small here, so the body pauses reading)
    try:
        parser = HttpRequestParser(
            protocol, loop, limit, max_line_size=8190, max_field_size=8190, max_headers=32,
            payload_exception=RequestPayloadError, auto_decompress=False, max_msg_queue_size=32,
        )  # fmt: skip
    except TypeError as exc:
        pytest.fail(f"aiohttp {aiohttp.__version__}: HttpRequestParser's arguments changed ({exc}); "
                    "frontend/connection.py builds it")  # fmt: skip
    body = b"x" * (4 * limit)
    head = b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    try:
        result = parser.feed_data(head + body)
        assert isinstance(result, tuple) and len(result) == 3, (
            f"aiohttp {aiohttp.__version__}: HttpRequestParser.feed_data returns {result!r}, "
            "frontend/connection.py unpacks (messages, upgraded, tail)"
        )
        messages, upgraded, tail = result
        (message, payload), *_ = messages
        assert (message.method, message.path, message.raw_headers[0]) == ("GET", "/x?y=1", (b"Host", b"h"))
        assert not upgraded and payload is not None
        assert await payload.read() == body
    except AttributeError as exc:
        pytest.fail(f"aiohttp {aiohttp.__version__}: its body reader needs more of the protocol than "
                    f"frontend/connection.py's flow control offers: {exc}")  # fmt: skip
    # A body over the reader's limit paused reading, and reading it resumed it (the flow control
    # connection.py writes itself now that it has no aiohttp base).
    assert protocol.calls[:1] == ["pause"] and protocol.calls[-1] == "resume", protocol.calls


def test_the_installed_aiohttp_is_within_the_pin() -> None:
    """The range in pyproject.toml is the one tested: a newer minor needs this file run first."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    spec = next(d for d in project["dependencies"] if d.startswith("aiohttp"))
    upper = re.search(r"<\s*(\d+)\.(\d+)", spec)
    assert upper, f"aiohttp has no upper bound in pyproject.toml ({spec!r}): pin below the next minor"
    installed = tuple(int(n) for n in aiohttp.__version__.split(".")[:2])
    assert installed < (int(upper.group(1)), int(upper.group(2))), (aiohttp.__version__, spec)
