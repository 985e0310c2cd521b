"""The REQUEST head, pure (frontend/request_head.py): targets, versions, proxy headers; no aiohttp."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from multidict import CIMultiDict

from frontend import config as cfg
from frontend.request_head import RequestHeads, address, split_target

CLIENT, SERVER = ("127.0.0.1", 5000), ("127.0.0.1", 8000)


def _heads(tmp_path: Path, **overrides: object) -> RequestHeads:
    config = replace(
        cfg.FrontendConfig(port=0, backend=cfg.Backend(endpoint=f"ipc://{tmp_path}/x")), **overrides
    )
    return RequestHeads(config, None)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/a%20b?x=1&y=2", b"/a%20b", b"x=1&y=2"),
        (b"/", b"/", b""),
        (b"http://example.com/p/q?z", b"/p/q", b"z"),  # absolute-form: the path only
        (b"https://example.com", b"/", b""),
        (b"*", b"*", b""),  # OPTIONS *
    ],
)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    assert split_target(target) == (path, query)


def test_head_fields_in_wire_order(tmp_path: Path) -> None:
    heads = _heads(tmp_path, root_path="/mnt")
    raw = ((b"Host", b"x"), (b"X-Foo", b"Bar"))
    head, proxied = heads.build("GET", "/caf\udcc3\udca9?q", (1, 0), CIMultiDict(), raw, CLIENT, SERVER)
    assert head == ("GET", "http", "1.0", "/caf\u00e9".encode(), b"q", "/mnt", raw, CLIENT, SERVER)
    assert proxied is None
    assert heads.build("GET", "/", (2, 0), CIMultiDict(), (), None, None)[0][2] == "2"  # ASGI: HTTP/2 is "2"


def test_trusted_proxy_headers_name_the_client_and_scheme(tmp_path: Path) -> None:
    heads = _heads(tmp_path)  # defaults: proxy headers on, 127.0.0.1 trusted
    headers = CIMultiDict({"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"})
    head, proxied = heads.build("GET", "/", (1, 1), headers, (), CLIENT, SERVER)
    assert head[1] == "https" and head[7] == ("198.51.100.7", 0) and proxied == (("198.51.100.7", 0),)
    untrusted = heads.build("GET", "/", (1, 1), headers, (), ("203.0.113.1", 1), SERVER)
    assert untrusted[0][1] == "http" and untrusted[0][7] == ("203.0.113.1", 1) and untrusted[1] is None


def test_address() -> None:
    assert address(("::1", 80, 0, 0)) == ("::1", 80)
    assert address("/run/x.sock") is None and address(None) is None


def test_no_aiohttp() -> None:
    code = "import sys, frontend.request_head; sys.exit('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
