"""``zasgi run --reload``: edit the app under load; new code answers, no request fails.

One server for the whole story (boot is the slow part): v1 serves, an edit
to v2 rolls the workers, a syntax error keeps v2 serving and the error (file
and line) is printed, the fix (v3) rolls again. Two client threads send
requests the whole time; every one must succeed.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .conftest import Server, start_run, stop

pytestmark = pytest.mark.integration

APP = """
VERSION = "{version}"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain")]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": VERSION.encode()}})
"""
BROKEN = 'VERSION = "v-broken"\n\n\ndef app(:\n    pass\n'
DEADLINE_S = 60.0


def write_atomically(path: Path, text: str) -> None:
    """As an editor saving; the temporary name is one --reload ignores (a dot file)."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Load:
    """Client threads sending GETs until stopped; every outcome is counted."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url = url
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.last = ""
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            end = time.monotonic() + 4 * DEADLINE_S  # bounded even if the test forgets to stop us
            while not self._stop.is_set() and time.monotonic() < end:
                try:
                    response = client.get(self.url)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text[:100]}")
                    else:
                        self.answers[response.text] += 1
                        self.last = response.text
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.005)

    def wait_for(self, version: str, server: Server, rolls: int) -> None:
        """Until the ``rolls``-th roll is complete and the answers are ``version``."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.answers[version] and self.last == version and count(server, "reload complete") >= rolls:
                seen = self.answers[version]
                time.sleep(0.3)
                if self.answers[version] > seen and self.last == version:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{version} never answered alone: {dict(self.answers)}\n{server.logs()}")


def full_log(server: Server) -> str:
    return server.procs[0].log()  # Server.logs() keeps only the tail


def count(server: Server, pattern: str) -> int:
    return len(re.findall(pattern, full_log(server)))


def test_reload_under_load_keeps_every_request(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "reloadable.py"
    module.write_text(APP.format(version="v1"))
    server = start_run(tmp_path, "--reload", "--app-dir", str(app_dir), app="reloadable:app", workers=2)
    try:
        banner = server.procs[0].log()
        assert f"reload   watching {app_dir.resolve()} (*.py)" in banner
        with Load(server.url) as load:
            deadline = time.monotonic() + DEADLINE_S
            while not load.answers["v1"] and time.monotonic() < deadline:
                time.sleep(0.05)
            (app_dir / "notes.txt").write_text("not a *.py file: no reload")
            write_atomically(module, APP.format(version="v2 (edited)"))
            load.wait_for("v2 (edited)", server, rolls=1)
            assert count(server, r"reload: 1 file\(s\) changed \(reloadable\.py\)") == 1

            write_atomically(module, BROKEN)
            deadline = time.monotonic() + DEADLINE_S
            while "reload failed" not in full_log(server) and time.monotonic() < deadline:
                time.sleep(0.05)
            logs = full_log(server)
            # The user sees which file and line are wrong, and that the old workers serve on.
            assert re.search(r"cannot load app: .*SyntaxError: .*\(reloadable\.py, line 4\)", logs), logs
            assert "keeping the 2 running workers" in logs
            served = load.answers["v2 (edited)"]
            time.sleep(0.5)
            assert load.answers["v2 (edited)"] > served and load.last == "v2 (edited)"

            write_atomically(module, APP.format(version="v3"))
            load.wait_for("v3", server, rolls=2)
        assert not load.failures, (load.failures[:5], server.logs())
        assert "v-broken" not in load.answers
        assert sum(load.answers.values()) > 50
    finally:
        stop(server)


def test_reload_options_need_reload(tmp_path: Path) -> None:
    from tests.helpers.processes import Proc, zasgi

    proc = Proc("run", zasgi("run", "tests.apps.probe:app", "--reload-dir", str(tmp_path)), tmp_path)
    try:
        assert proc.wait_exit(30) == 2
        assert "need --reload" in proc.log()
    finally:
        proc.kill_tree()
