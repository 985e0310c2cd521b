"""Early hints end to end through ``zasgi run`` with curl: the app's http.response.early_hint is a
103 on HTTP/2 (h2c prior knowledge) and, with --early-hints, on HTTP/1.1; never on HTTP/1.0; a bad
link is an error in the app's send, and the request is served all the same."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Server, start_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
LINK = b"link: </style.css>; rel=preload; as=style"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_run(tmp_path_factory.mktemp("hints"), "--early-hints", workers=1)
    try:
        yield server
    finally:
        for proc in server.procs:
            proc.kill_tree()


def curl_v(*args: str) -> tuple[bytes, bytes]:
    """(body, verbose trace) of one curl -v."""
    assert CURL is not None
    out = subprocess.run([CURL, "-sS", "-v", "--max-time", "30", *args], capture_output=True, timeout=40,
                         check=True)  # fmt: skip
    return out.stdout, out.stderr


def received(trace: bytes) -> list[bytes]:
    """The response header lines curl -v shows (``< ...``), lower-cased."""
    return [line[2:].strip().lower() for line in trace.splitlines() if line.startswith(b"< ")]


@needs_curl
@pytest.mark.parametrize(
    ("flag", "hint", "final"),
    [
        ("--http2-prior-knowledge", b"http/2 103", b"http/2 200"),  # always on HTTP/2
        ("--http1.1", b"http/1.1 103 early hints", b"http/1.1 200 ok"),  # with --early-hints
    ],
)
def test_curl_shows_the_103_before_the_final_response(
    server: Server, flag: str, hint: bytes, final: bytes
) -> None:
    body, trace = curl_v(flag, server.url + "/early-hints")
    lines = received(trace)
    assert hint in lines and LINK in lines, trace.decode()
    assert lines.index(hint) < lines.index(final)
    assert json.loads(body) == {"offered": True, "error": ""}


@needs_curl
def test_curl_http10_never_gets_a_103(server: Server) -> None:
    body, trace = curl_v("--http1.0", server.url + "/early-hints")
    lines = received(trace)
    assert not any(b" 103" in line for line in lines) and LINK not in lines, trace.decode()
    assert json.loads(body)["offered"] is True


async def test_a_bad_link_raises_in_the_app_and_the_request_is_served(server: Server) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
        resp = await client.get(server.url + "/early-hints?bad=1")
        assert resp.status_code == 200 and resp.json() == {"offered": True, "error": "ValueError"}
        assert "set-cookie" not in resp.headers
        again = await client.get(server.url + "/early-hints")
        assert again.status_code == 200 and again.json()["error"] == ""
