"""frontend.upload: which body object a request gets, and NoBody keeping Upload's promises."""

from __future__ import annotations

import asyncio

from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from frontend.upload import NoBody, Upload, new_upload


class _Protocol:
    _reading_paused = False

    def pause_reading(self, *args: object, **kwargs: object) -> None: ...

    def resume_reading(self, *args: object, **kwargs: object) -> None: ...


async def test_a_request_without_a_body_gets_no_buffers() -> None:
    body = new_upload(EMPTY_PAYLOAD, expect_continue=False, max_body_bytes=None)
    assert type(body) is NoBody
    assert body.first(65536) == (b"", False)  # REQUEST carries it all
    assert not body.needs_pump and body.whole == b""
    assert body.replayable  # REFUSED before the worker showed anything: replay
    body.delivered()
    assert not body.replayable  # the app has it: never again, unless idempotent (whole is kept)


async def test_a_request_with_a_body_gets_an_upload() -> None:
    content = StreamReader(_Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    content.feed_data(b"hello")
    content.feed_eof()
    body = new_upload(content, expect_continue=False, max_body_bytes=None)
    assert type(body) is Upload
    assert body.first(65536) == (b"hello", False)
