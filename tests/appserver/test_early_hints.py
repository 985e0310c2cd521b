"""http.response.early_hint (feature "early-hints", PROTOCOL Rule 12a): the ASGI message becomes
EARLY_HINTS ahead of RESPONSE; bad input raises in the app's send, never reaches the wire."""

from __future__ import annotations

from typing import Any

import pytest

from wire import ResetCode
from wire import events as ev

from .helpers import CycleHarness

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
HEADERS = ((b"content-type", b"text/plain"),)
LINKS = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
HINT = {"type": "http.response.early_hint", "links": LINKS}


async def test_an_early_hint_becomes_early_hints_before_the_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["extensions"]["http.response.early_hint"] == {}
        await send(HINT)
        await send(START)
        await send({"type": "http.response.body", "body": b"hi"})

    emitted = await CycleHarness(early_hints=True).run(app)
    assert emitted == [ev.EarlyHints(1, tuple(LINKS)), ev.Response(1, 200, HEADERS, b"hi", False, False)]


async def test_without_the_feature_the_scope_does_not_offer_it_and_send_raises() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "http.response.early_hint" not in scope["extensions"]
        with pytest.raises(RuntimeError, match="not offered"):
            await send(HINT)
        await send(START)
        await send({"type": "http.response.body"})

    emitted = await CycleHarness(early_hints=False).run(app)
    assert [type(e) for e in emitted] == [ev.Response]


@pytest.mark.parametrize(
    "links, error",
    [
        ([b"</a>; rel=preload\r\nset-cookie: x=1"], ValueError),
        ([b"</a>\n"], ValueError),
        (["</a>; rel=preload"], TypeError),
        (b"</a>", TypeError),
        (None, TypeError),
    ],
)
async def test_bad_links_raise_in_the_apps_send(links: Any, error: type[Exception]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        with pytest.raises(error):
            await send({"type": "http.response.early_hint", "links": links})
        await send(START)
        await send({"type": "http.response.body"})

    emitted = await CycleHarness(early_hints=True).run(app)
    assert [type(e) for e in emitted] == [ev.Response]


async def test_a_hint_after_the_start_raises() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        with pytest.raises(RuntimeError, match="after http.response.start"):
            await send(HINT)
        await send({"type": "http.response.body"})

    emitted = await CycleHarness(early_hints=True).run(app)
    assert [type(e) for e in emitted] == [ev.Response]


async def test_an_app_that_lets_the_error_escape_is_logged_and_its_stream_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</a>\r\n"]})

    emitted = await CycleHarness(early_hints=True).run(app)
    assert emitted == [ev.Reset(1, ResetCode.APP_ERROR, "app raised ValueError")]  # the front end: 500
    assert any("CR, LF or NUL" in r.getMessage() or r.exc_info for r in caplog.records if r.levelno >= 40)
